#!/usr/bin/env python3
"""Compare ovseg_ros's ProxyCLIP engine with the reference implementation (mc-lan/ProxyCLIP).

Fidelity: identical weights in both (random, seeded, unless checkpoints are given), fp32 on
the CPU, the four comparison photos (``ovseg_ros.testing.comparison``: scikit-image's
coffee, astronaut, chelsea and a 512x256 portrait crop), the comparison vocabulary. Both
start from the uint8 photo. The reference gets the official test pipeline: mmseg's
``Resize(scale=(2048, 336), keep_ratio=True)`` (mmcv's rescale, OpenCV bilinear on uint8;
a stand-in, below), its own ``SegDataPreProcessor`` arguments (``(k - 122.771) / 68.501
...`` on the 0..255 values, RGB) and ``ProxyCLIPSegmentation.predict`` with the photo's
size as ``ori_shape`` (sliding windows, bilinear upsampling to the photo, softmax of 40 x
cosine, max over synonyms); the engine gets the photo. Per photo it reports raw
agreement, margin-aware agreement and the reference's own 1- vs 2-thread floor
(``ovseg_ros.testing.comparison``), for the engine's default
``proxyclip.normalisation: official`` and for ``exact`` (OpenAI's unrounded mean/std: the
label effect of the official code's rounding), plus the largest difference of the class
scores and of the text embeddings.

Exit status 0 when every photo's raw agreement (``official``) reaches ``--min-agreement``
(default 0.999) or the reference's floor, whichever is lower, margin-aware 100 %.

Speed (--speed): a 640x480 frame, short side 336, crop 336, stride 112, the
reference and this engine (fp32, and each of --speed-precisions: bf16 autocast, int8
dynamic linears) run interleaved frame by frame on the same machine; reports seconds
per frame and each precision's label agreement with our fp32.

Nothing of the reference is part of this repository. It is imported at run
time from its own checkout::

    python scripts/compare_reference.py --reference-dir /tmp/ref --dino-dir /tmp/ref_dino

--reference-dir is a checkout of github.com/mc-lan/ProxyCLIP; --dino-dir one of
github.com/facebookresearch/dino (the reference gets its DINO model from there
through torch.hub; here the same code is imported from the checkout instead,
since nothing can be downloaded). STAND-INS: the reference imports mmseg/mmengine (its
base class, registry, data preprocessor and result container), openpyxl and einops
(unused on this path); where they are not installed the script gives it minimal
stand-ins for exactly those names (the data preprocessor: BGR -> RGB, float,
``(x - mean) / std`` with the arguments the reference passes). The reference hard-codes
fp16 (``.half()``) for CUDA; for an fp32 CPU comparison ``Tensor.half`` is made the
identity while the reference runs, and its models are kept in fp32.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ovseg_ros.testing.comparison import (CLASSES, HEADER, agreement, failures,  # noqa: E402
                                          photos, row_text, with_threads)



# --- importing the reference ---------------------------------------------------------------------
def machine_line(threads: int) -> str:
    """The CPU, threads, load average and the fp32/bf16/int8 matmul ceilings, measured now."""
    from ovseg_ros.tools.bench import cpu_machine_line

    return cpu_machine_line(threads, int8=True)[0]


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
            self.data_preprocessor = data_preprocessor

    def seg_data_preprocessor(mean, std, bgr_to_rgb=False, **kw):
        """mmseg's SegDataPreProcessor at test time: (optionally BGR -> RGB), float,
        (x - mean) / std with mean/std as C x 1 x 1 tensors; no padding (no size set)."""
        m = torch.tensor(mean).view(-1, 1, 1)
        s = torch.tensor(std).view(-1, 1, 1)

        def run(img_chw_uint8):
            x = img_chw_uint8[[2, 1, 0]] if bgr_to_rgb else img_chw_uint8
            return (x.float() - m) / s
        return run

    class _Registry:
        def register_module(self, *a, **k):
            return lambda cls: cls

    class PixelData:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    module("mmseg")
    module("mmseg.models")
    module("mmseg.models.segmentors", BaseSegmentor=BaseSegmentor)
    module("mmseg.models.data_preprocessor", SegDataPreProcessor=seg_data_preprocessor)
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


def official_resize(bgr: np.ndarray, short: int, long: int = 2048) -> np.ndarray:
    """STAND-IN for mmseg's ``Resize(scale=(long, short), keep_ratio=True)``: mmcv's
    rescale (scale factor min(long / long side, short / short side), sizes int(x * s + 0.5))
    and ``imresize`` (OpenCV bilinear on the uint8 image)."""
    import cv2

    h, w = bgr.shape[:2]
    scale = min(long / max(h, w), short / min(h, w))
    size = (int(w * scale + 0.5), int(h * scale + 0.5))
    return cv2.resize(bgr, size, interpolation=cv2.INTER_LINEAR)


class _DataSample:
    """STAND-IN for mmseg's SegDataSample: ``metainfo`` and ``set_data``."""

    def __init__(self, ori_shape):
        self.metainfo = {"ori_shape": tuple(ori_shape)}

    def set_data(self, data):
        self.__dict__.update(data)


def reference_scores(ref, rgb: np.ndarray, short: int):
    """The reference's C x H x W class scores for a uint8 RGB photo, through its official
    test path: the BGR image (LoadImageFromFile) resized by its pipeline, normalised by its
    own data preprocessor, ``predict`` with the photo's size as ``ori_shape``."""
    import torch

    bgr = np.ascontiguousarray(rgb[..., ::-1])
    resized = official_resize(bgr, short)
    x = ref.data_preprocessor(torch.from_numpy(resized).permute(2, 0, 1))[None]
    sample = _DataSample(rgb.shape[:2])
    with torch.no_grad(), half_is_identity():
        ref.predict(x, [sample])
    return sample.seg_logits.data.float()


def reference_speed_labels(ref, resized_rgb: np.ndarray):
    """Labels of an already-resized RGB frame (the --speed loop)."""
    import torch

    x = ref.data_preprocessor(torch.from_numpy(np.ascontiguousarray(
        resized_rgb[..., ::-1])).permute(2, 0, 1))[None]
    with torch.no_grad(), half_is_identity():
        return ref.predict(x, None)[0].numpy()


# --- this engine ---------------------------------------------------------------------------------
def build_ours(args, precision: str, cache_dir: str, classes, normalisation="official"):
    from ovseg_ros import load_segmenter

    cfg = {"engine": "proxyclip", "random_init": not (args.clip_checkpoint and args.vfm_checkpoint),
           "proxyclip.clip_model": args.clip_model, "proxyclip.vfm_model": args.vfm_model,
           "proxyclip.clip_checkpoint": args.clip_checkpoint,
           "proxyclip.vfm_checkpoint": args.vfm_checkpoint,
           "proxyclip.short_side": args.crop, "proxyclip.crop_size": args.crop,
           "proxyclip.stride": args.stride, "proxyclip.window_batch_size": args.window_batch,
           # the reference slides over the whole resized frame: no window cap here
           "proxyclip.max_windows": 4096,
           "proxyclip.normalisation": normalisation,
           "precision": precision, "text_cache_dir": cache_dir, "vocabulary": classes,
           "num_threads": args.threads}
    return load_segmenter(cfg)


def speed_frame(ref_dir: Path):
    """The reference's sample photo at 640x480 (the --speed frame)."""
    import cv2

    path = ref_dir / "images" / "horses.jpg"
    bgr = cv2.imread(str(path))
    if bgr is None:
        raise SystemExit(f"cannot read {path}")
    return cv2.resize(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (640, 480),
                      interpolation=cv2.INTER_LINEAR)


def fidelity(args, ref, ours: dict, photos: dict) -> dict:
    """Per photo: the reference with 1 and 2 threads against each of ``ours``
    (normalisation -> Segmenter)."""
    import torch

    rows = {}
    print(f"{'normalisation':>13} {HEADER} {'score diff':>10}")
    for name, rgb in photos.items():
        r1 = with_threads(1, reference_scores, ref, rgb, args.crop)
        r2 = with_threads(2, reference_scores, ref, rgb, args.crop)
        rows[name] = {}
        for norm, seg in ours.items():
            pred = seg.predict(rgb, scores=True)
            row = agreement(pred.semantic, r1, r2)
            row["score_max_abs_diff"] = float((torch.from_numpy(pred.scores) - r1).abs().max())
            rows[name][norm] = row
            print(f"{norm:>13} {row_text(name, row)} {row['score_max_abs_diff']:>10.2e}",
                  flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference-dir", type=Path, required=True)
    ap.add_argument("--dino-dir", type=Path, required=True)
    ap.add_argument("--clip-model", default="ViT-B-16")
    ap.add_argument("--vfm-model", default="vit_base_patch8_224.dino")
    ap.add_argument("--clip-checkpoint", default="", help="real CLIP weights (optional)")
    ap.add_argument("--vfm-checkpoint", default="", help="real DINO weights (optional)")
    ap.add_argument("--classes", nargs="*", default=CLASSES,
                    help="classes; '; ' separates synonyms as in the reference's files")
    ap.add_argument("--crop", type=int, default=336)
    ap.add_argument("--stride", type=int, default=112)
    ap.add_argument("--window-batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch threads of this engine")
    ap.add_argument("--photos", nargs="*", default=None,
                    help="names (prefixes) of the comparison photos to run, in this order "
                         "(default: all four)")
    ap.add_argument("--min-agreement", type=float, default=0.999)
    ap.add_argument("--speed", action="store_true", help="also time a 640x480 frame")
    ap.add_argument("--frames", type=int, default=2, help="timed frames per method")
    ap.add_argument("--speed-precisions", default="bf16,int8",
                    help="our precisions timed besides fp32 (comma list: bf16, int8)")
    ap.add_argument("--skip-fidelity", action="store_true")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--text-cache-dir", default="",
                    help="text-embedding cache of this engine (default: a fresh temporary one)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    print(f"ours {args.threads} thread(s), reference 1 and 2 threads; "
          f"{machine_line(args.threads)}", flush=True)
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
    # the reference encodes its 80 x C prompts at full context length: 2 threads for that
    ref = with_threads(2, build_reference, seg_mod, ref_open_clip, dino_vit, args.clip_model,
                       clip_sd, vfm_sd, engine.image_model.vfm.patch[0], names_file, args.crop,
                       args.stride)
    print(f"reference built in {time.perf_counter() - t0:.1f}s")

    results = {"settings": {"clip_model": args.clip_model, "vfm_model": args.vfm_model,
                            "random_weights": ours.random_weights, "crop": args.crop,
                            "stride": args.stride, "threads": args.threads,
                            "torch": torch.__version__, "classes": args.classes}}
    vocab = ours.vocabulary
    text_diff = (vocab.embeddings.cpu() - ref.query_features.float().cpu()).abs().max().item()
    results["text_embedding_max_abs_diff"] = text_diff
    print(f"text embeddings: max |ours - reference| = {text_diff:.2e}")

    bad = []
    if not args.skip_fidelity:
        every = photos()
        chosen = ({k: every[k] for p in args.photos for k in every if k.startswith(p)}
                  if args.photos else every)
        exact = build_ours(args, "fp32", text_cache, ours_classes, normalisation="exact")
        results["fidelity"] = fidelity(args, ref, {"official": ours, "exact": exact}, chosen)
        bad = failures({k: v["official"] for k, v in results["fidelity"].items()},
                       args.min_agreement)
        for b in bad:
            print("FAIL:", b)
        print("PASS: every photo at >= min(--min-agreement, floor) raw and 100 % margin-aware "
              "(normalisation: official)" if not bad else f"FAIL: {len(bad)} check(s)")
        results["failures"] = bad
        results["load_average_end"] = os.getloadavg()

    if args.speed:
        from ovseg_ros.tools.bench import cpu_machine_line

        # the ceilings the speed figures are read against, measured in this run
        print("speed, start: " + cpu_machine_line(args.threads)[0], flush=True)
        frame = speed_frame(args.reference_dir)
        low = [p for p in args.speed_precisions.split(",") if p]
        ours_low = {p: build_ours(args, p, text_cache, ours_classes) for p in low}
        h, w = frame.shape[:2]
        from ovseg_ros.core.preprocess import resize_rgb, short_side_size

        times = {"reference_fp32": [], "ours_fp32": [], **{f"ours_{p}": [] for p in low}}
        agreement = {p: [] for p in low}
        for i in range(args.frames):
            t0 = time.perf_counter()
            # the reference gets the frame resized by the same code (its mmseg pipeline's job)
            resized = resize_rgb(frame, short_side_size(h, w, args.crop))
            reference_speed_labels(ref, resized)
            times["reference_fp32"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            p32 = ours.predict(frame)
            times["ours_fp32"].append(time.perf_counter() - t0)
            preds = {"fp32": p32}
            for prec, seg in ours_low.items():
                t0 = time.perf_counter()
                preds[prec] = seg.predict(frame)
                times[f"ours_{prec}"].append(time.perf_counter() - t0)
                agreement[prec].append(float((preds[prec].semantic == p32.semantic).mean()))
            print(f"frame {i}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items())
                  + "".join(f"; {p} vs fp32 labels {a[-1] * 100:.2f}%"
                            for p, a in agreement.items()))
            for prec, pred in preds.items():
                print(f"  ours {prec} stages: " + ", ".join(f"{k} {v:.2f}" for k, v in
                                                            pred.timings.items()))
        med = {k: float(np.median(v)) for k, v in times.items()}
        results["speed"] = {"frame": [w, h], "windows": len(engine.window_layout(h, w)[1]),
                            "seconds_per_frame_median": med, "all": times,
                            "speedup_fp32": med["reference_fp32"] / med["ours_fp32"],
                            **{f"speedup_{p}": med["reference_fp32"] / med[f"ours_{p}"]
                               for p in low},
                            **{f"{p}_vs_fp32_label_agreement": a for p, a in agreement.items()},
                            "machine_end": machine_line(args.threads)}
        print(json.dumps(results["speed"], indent=1))
        print("speed, end: " + cpu_machine_line(args.threads)[0], flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
