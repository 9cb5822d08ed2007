#!/usr/bin/env python3
"""Compare ovseg_ros's ProxyCLIP engine with the reference implementation (mc-lan/ProxyCLIP).

Fidelity: identical weights in both (random, seeded, unless checkpoints are given),
fp32 on the CPU, same images, same vocabulary and settings; reports the share of
pixels with the same argmax label, the largest logit difference, and the
difference of the text embeddings.

Speed (--speed): a 640x480 frame, short side 336, crop 336, stride 112, the
reference and this engine (fp32 and bf16 autocast) run interleaved frame by
frame on the same machine; reports seconds per frame and bf16-vs-fp32 agreement.

Nothing of the reference is part of this repository. It is imported at run
time from its own checkout::

    python scripts/compare_reference.py --reference-dir /tmp/ref --dino-dir /tmp/ref_dino

--reference-dir is a checkout of github.com/mc-lan/ProxyCLIP; --dino-dir one of
github.com/facebookresearch/dino (the reference gets its DINO model from there
through torch.hub; here the same code is imported from the checkout instead,
since nothing can be downloaded). The reference imports mmseg/mmengine (only
for its base class, registry and result container), openpyxl and einops (unused
on this path); where they are not installed the script gives it minimal
stand-ins for exactly those names. The reference hard-codes fp16 (``.half()``)
for CUDA; for an fp32 CPU comparison ``Tensor.half`` is made the identity while
the reference runs, and its models are kept in fp32.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DEFAULT_CLASSES = ["sky; grass; tree", "horse", "person", "fence", "road", "dog"]
CLIP_MEAN_255 = (122.771, 116.746, 104.094)
CLIP_STD_255 = (68.501, 66.632, 70.323)


# --- importing the reference ---------------------------------------------------------------------
def _stand_ins() -> dict:
    """Minimal modules for the names the reference imports but this comparison never uses
    (or only uses as a plain nn.Module base / registry decorator / result holder)."""
    import torch

    mods = {}

    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        mods[name] = m
        return m

    class BaseSegmentor(torch.nn.Module):
        def __init__(self, data_preprocessor=None, init_cfg=None):
            super().__init__()

    class _Registry:
        def register_module(self, *a, **k):
            return lambda cls: cls

    class PixelData:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    module("mmseg")
    module("mmseg.models")
    module("mmseg.models.segmentors", BaseSegmentor=BaseSegmentor)
    module("mmseg.models.data_preprocessor", SegDataPreProcessor=lambda **kw: None)
    module("mmseg.registry", MODELS=_Registry())
    module("mmengine")
    module("mmengine.structures", PixelData=PixelData)
    module("openpyxl")

    def _unused(*a, **k):
        raise RuntimeError("einops stand-in: this reference path is not compared")
    module("einops", rearrange=_unused)
    return mods


def import_reference(ref_dir: Path, dino_dir: Path):
    """(reference segmentor module, reference open_clip, DINO vision_transformer module).

    The reference ships a modified open_clip under the same package name as the
    installed one: it is imported with the reference directory first on sys.path,
    then the installed open_clip is put back, so both live side by side."""
    saved = {k: v for k, v in sys.modules.items() if k == "open_clip" or k.startswith("open_clip.")}
    for k in saved:
        del sys.modules[k]
    added = []
    for name, mod in _stand_ins().items():
        try:
            importlib.import_module(name)
        except ImportError:
            sys.modules[name] = mod
            added.append(name)
    sys.path.insert(0, str(ref_dir))
    sys.path.insert(1, str(dino_dir))
    try:
        seg_mod = importlib.import_module("proxyclip_segmentor")
        ref_open_clip = sys.modules["open_clip"]
        dino_vit = importlib.import_module("vision_transformer")
    finally:
        sys.path.remove(str(ref_dir))
        sys.path.remove(str(dino_dir))
        for k in [k for k in sys.modules if k == "open_clip" or k.startswith("open_clip.")]:
            sys.modules["_ref_" + k] = sys.modules.pop(k)
        sys.modules.update(saved)
    return seg_mod, ref_open_clip, dino_vit


@contextlib.contextmanager
def half_is_identity():
    """The reference calls .half() on inputs; keep fp32 for an fp32 comparison."""
    import torch

    orig = torch.Tensor.half
    torch.Tensor.half = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.Tensor.half = orig


def build_reference(seg_mod, ref_open_clip, dino_vit, clip_model: str, clip_sd: dict,
                    vfm_sd: dict, vfm_patch: int, names_file: Path, crop: int, stride: int):
    """The reference ProxyCLIPSegmentation with our weights, built by its own __init__."""
    import torch

    def create_model(name, pretrained=None, precision="fp32", **kw):
        model = ref_open_clip.create_model(name, pretrained=None, precision="fp32")
        missing, unexpected = model.load_state_dict(clip_sd, strict=False)
        if missing or unexpected:
            raise RuntimeError(f"reference CLIP keys differ: missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}")
        return model

    def hub_load(repo, name, *a, **k):
        vit = dino_vit.vit_base(patch_size=vfm_patch, num_classes=0)
        missing, unexpected = vit.load_state_dict(vfm_sd, strict=False)
        if missing or unexpected:
            raise RuntimeError(f"DINO keys differ: missing {missing[:5]}, "
                               f"unexpected {unexpected[:5]}")
        return vit

    seg_mod.create_model = create_model
    orig_hub = torch.hub.load
    torch.hub.load = hub_load
    try:
        with half_is_identity():
            ref = seg_mod.ProxyCLIPSegmentation(
                clip_type=None, model_type=clip_model, vfm_model="dino", name_path=str(names_file),
                device=torch.device("cpu"), slide_stride=stride, slide_crop=crop)
    finally:
        torch.hub.load = orig_hub
    ref.vfm = ref.vfm.float().eval()
    ref.clip = ref.clip.float().eval()
    return ref


def reference_logits(ref, rgb: np.ndarray, crop: int, stride: int):
    """(logits S x H x W, labels H x W) from the reference for an already-resized frame."""
    import torch

    x = torch.from_numpy(rgb).permute(2, 0, 1).float()[None]
    x = (x - torch.tensor(CLIP_MEAN_255).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD_255).view(
        1, 3, 1, 1)
    metas = [dict(ori_shape=rgb.shape[:2])]
    with torch.no_grad(), half_is_identity():
        logits = ref.forward_slide(x, metas, stride, crop)
        labels = ref.postprocess_result(logits.clone(), None)
    return logits[0].float(), labels[0].numpy()


# --- this engine ---------------------------------------------------------------------------------
def build_ours(args, precision: str, cache_dir: str, classes):
    from ovseg_ros import load_segmenter

    cfg = {"engine": "proxyclip", "random_init": not (args.clip_checkpoint and args.vfm_checkpoint),
           "proxyclip.clip_model": args.clip_model, "proxyclip.vfm_model": args.vfm_model,
           "proxyclip.clip_checkpoint": args.clip_checkpoint,
           "proxyclip.vfm_checkpoint": args.vfm_checkpoint,
           "proxyclip.short_side": args.crop, "proxyclip.crop_size": args.crop,
           "proxyclip.stride": args.stride, "proxyclip.window_batch_size": args.window_batch,
           # the reference slides over the whole resized frame: no window cap here
           "proxyclip.max_windows": 4096,
           "precision": precision, "text_cache_dir": cache_dir, "vocabulary": classes,
           "num_threads": args.threads}
    return load_segmenter(cfg)


def test_images(ref_dir: Path, crop: int):
    """Square and non-square crops of the reference's sample photo, short side = crop."""
    import cv2

    path = ref_dir / "images" / "horses.jpg"
    bgr = cv2.imread(str(path))
    if bgr is None:
        raise SystemExit(f"cannot read {path}")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    s = crop / min(h, w)
    rgb = cv2.resize(rgb, (int(w * s + 0.5), int(h * s + 0.5)), interpolation=cv2.INTER_LINEAR)
    wide = rgb[:crop, : int(crop * 4 / 3)]
    square = rgb[:crop, :crop]
    frame640 = cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (640, 480),
                          interpolation=cv2.INTER_LINEAR)
    return {"square": np.ascontiguousarray(square), "wide": np.ascontiguousarray(wide),
            "frame640x480": frame640}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference-dir", type=Path, required=True)
    ap.add_argument("--dino-dir", type=Path, required=True)
    ap.add_argument("--clip-model", default="ViT-B-16")
    ap.add_argument("--vfm-model", default="vit_base_patch8_224.dino")
    ap.add_argument("--clip-checkpoint", default="", help="real CLIP weights (optional)")
    ap.add_argument("--vfm-checkpoint", default="", help="real DINO weights (optional)")
    ap.add_argument("--classes", nargs="*", default=DEFAULT_CLASSES,
                    help="classes; '; ' separates synonyms as in the reference's files")
    ap.add_argument("--crop", type=int, default=336)
    ap.add_argument("--stride", type=int, default=112)
    ap.add_argument("--window-batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--speed", action="store_true", help="also time a 640x480 frame")
    ap.add_argument("--frames", type=int, default=2, help="timed frames per method")
    ap.add_argument("--skip-fidelity", action="store_true")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--text-cache-dir", default="",
                    help="text-embedding cache of this engine (default: a fresh temporary one)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    seg_mod, ref_open_clip, dino_vit = import_reference(args.reference_dir.resolve(),
                                                        args.dino_dir.resolve())
    ours_classes = [",".join(s.strip() for s in c.split(";")) for c in args.classes]
    tmp = Path(tempfile.mkdtemp(prefix="ovseg_compare_"))
    names_file = tmp / "names.txt"
    names_file.write_text("\n".join(args.classes) + "\n")

    t0 = time.perf_counter()
    text_cache = args.text_cache_dir or str(tmp / "text")
    ours = build_ours(args, "fp32", text_cache, ours_classes)
    print(f"ours built in {time.perf_counter() - t0:.1f}s (random weights: {ours.random_weights})")
    engine = ours.engine
    clip_sd = engine.clip_model.state_dict()
    vfm_sd = engine.image_model.vfm.vit.state_dict()
    t0 = time.perf_counter()
    ref = build_reference(seg_mod, ref_open_clip, dino_vit, args.clip_model, clip_sd, vfm_sd,
                          engine.image_model.vfm.patch[0], names_file, args.crop, args.stride)
    print(f"reference built in {time.perf_counter() - t0:.1f}s")

    results = {"settings": {"clip_model": args.clip_model, "vfm_model": args.vfm_model,
                            "random_weights": ours.random_weights, "crop": args.crop,
                            "stride": args.stride, "threads": args.threads,
                            "torch": torch.__version__, "classes": args.classes}}
    vocab = ours.vocabulary
    text_diff = (vocab.embeddings.cpu() - ref.query_features.float().cpu()).abs().max().item()
    results["text_embedding_max_abs_diff"] = text_diff
    print(f"text embeddings: max |ours - reference| = {text_diff:.2e}")

    images = test_images(args.reference_dir, args.crop)
    if not args.skip_fidelity:
        fid = {}
        for name in ("square", "wide"):
            rgb = images[name]
            r_logits, r_labels = reference_logits(ref, rgb, args.crop, args.stride)
            o_logits = engine.dense_logits(rgb, vocab.embeddings)
            pred = ours.predict(rgb)
            agree = float((pred.semantic == r_labels).mean())
            diff = float((o_logits - r_logits).abs().max())
            # argmax over synonyms too: more distinct labels than classes, a stricter check
            o_syn, r_syn = o_logits.argmax(0).numpy(), r_logits.argmax(0).numpy()
            fid[name] = {"shape": list(rgb.shape[:2]), "label_agreement": agree,
                         "synonym_label_agreement": float((o_syn == r_syn).mean()),
                         "logit_max_abs_diff": diff,
                         "logit_abs_max": float(r_logits.abs().max()),
                         "classes_present_ref": int(len(np.unique(r_labels))),
                         "synonyms_present_ref": int(len(np.unique(r_syn)))}
            print(f"{name} {rgb.shape[1]}x{rgb.shape[0]}: label agreement {agree * 100:.3f}% "
                  f"({fid[name]['classes_present_ref']} classes present), synonym-argmax "
                  f"agreement {fid[name]['synonym_label_agreement'] * 100:.3f}% "
                  f"({fid[name]['synonyms_present_ref']} present), logit max abs diff "
                  f"{diff:.2e} (|logit| <= {fid[name]['logit_abs_max']:.3f})")
        results["fidelity"] = fid

    if args.speed:
        frame = images["frame640x480"]
        ours_bf16 = build_ours(args, "bf16", text_cache, ours_classes)
        h, w = frame.shape[:2]
        from ovseg_ros.core.preprocess import resize_rgb, short_side_size

        times = {"reference_fp32": [], "ours_fp32": [], "ours_bf16": []}
        agreement = []
        for i in range(args.frames):
            t0 = time.perf_counter()
            # the reference gets the frame resized by the same code (its mmseg pipeline's job)
            resized = resize_rgb(frame, short_side_size(h, w, args.crop))
            _, r_lab = reference_logits(ref, resized, args.crop, args.stride)
            times["reference_fp32"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            p32 = ours.predict(frame)
            times["ours_fp32"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            p16 = ours_bf16.predict(frame)
            times["ours_bf16"].append(time.perf_counter() - t0)
            agreement.append(float((p16.semantic == p32.semantic).mean()))
            print(f"frame {i}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items())
                  + f"; bf16 vs fp32 labels {agreement[-1] * 100:.2f}%")
            print("  ours fp32 stages: " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                      p32.timings.items()))
            print("  ours bf16 stages: " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                      p16.timings.items()))
        med = {k: float(np.median(v)) for k, v in times.items()}
        results["speed"] = {"frame": [w, h], "windows": len(engine.window_layout(h, w)[1]),
                            "seconds_per_frame_median": med, "all": times,
                            "speedup_fp32": med["reference_fp32"] / med["ours_fp32"],
                            "speedup_bf16": med["reference_fp32"] / med["ours_bf16"],
                            "bf16_vs_fp32_label_agreement": agreement}
        print(json.dumps(results["speed"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
