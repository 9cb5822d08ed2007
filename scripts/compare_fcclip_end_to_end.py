#!/usr/bin/env python3
"""Compare ovseg_ros's FC-CLIP engine with the reference (bytedance/fc-clip) end to end, on
the four comparison photos, with the calibrated parity weights.

``scripts/compare_fcclip_reference.py`` compares the pixel decoder and the transformer
decoder module by module on random inputs; this script runs the whole inference of one
photo on both sides:

* OURS: ``load_segmenter`` with the parity weights of ``ovseg_ros.testing.fcclip_parity``
  (tiny ConvNeXt CLIP, released key layout, written to files and loaded strictly; their
  labels vary over each photo and panoptic queries are kept), ``predict(rgb)`` on the
  uint8 photo, fp32, CPU, ``--threads`` torch threads.
* THE REFERENCE: its ``FCCLIP.forward`` (``fcclip/fcclip.py``, read from its source with
  ``ast`` and executed as written, together with ``semantic_inference``,
  ``panoptic_inference`` and ``prepare_class_names_from_metadata``), on the photo resized
  as detectron2's ``ResizeShortestEdge`` does (PIL bilinear on the uint8 image) and
  normalised by that forward on 0..255; its backbone is the reference's ``CLIP`` methods
  (``fcclip/modeling/backbone/clip.py``: ``forward``, ``extract_features`` and
  ``visual_prediction_forward`` with their ConvNeXt and ResNet variants (the dispatch
  builds both), read the same way) over an open_clip model
  loaded from the same CLIP file; its ``sem_seg_head`` is the reference's ``FCCLIPHead``
  with its ``MSDeformAttnPixelDecoder`` and ``MultiScaleMaskedTransformerDecoder``,
  imported as modules and loaded ``strict=True`` with our head's state dict; the void
  embedding is ours (``void_embedding.weight``). The forward runs the geometric ensemble
  of in- and out-of-vocabulary scores, the void filtering, the upsampling and the
  eval config's post-processing (ADE20K eval config: semantic and panoptic inference on,
  so ``sem_seg_postprocess_before_inference``; object-mask threshold 0.0, overlap 0.8,
  alpha 0.4, beta 0.8, ``ENSEMBLE_ON_VALID_MASK`` False). The seen classes come from the
  reference's own training names (``fcclip/data/datasets/coco_panoptic_with_prompt_eng.txt``
  through its ``prepare_class_names_from_metadata``).

Per photo it reports, through ``ovseg_ros.testing.comparison``: raw agreement of the
semantic labels with the reference (1 thread), margin-aware agreement (a differing pixel
counts when the reference's normalised scores of the two labels are closer than its own
1- vs 2-thread score noise), the reference's own 1- vs 2-thread label agreement (the
floor), and for the panoptic output every reference segment matched with ours: smallest
IoU, classes, counts. Beside the thread floor it reports the reference's sensitivity to
rounding: its labels and normalised scores when its input normalisation moves by one ulp
(pixel std nudged up by one ulp), and our margin-aware agreement with that score change
as the margin (``margin ulp``): the official code itself does not decide pixels within
that margin reproducibly across fp32 implementations. Exit status 0 when raw agreement
reaches 99.9 % or the floor, margin-aware agreement is 100 % and every segment matches
with IoU >= 0.99 and the same class and count; 1 otherwise.

    git -C <mirror of bytedance/fc-clip> archive HEAD fcclip | tar -x -C /tmp/fcclip_ref
    python scripts/compare_fcclip_end_to_end.py --reference-dir /tmp/fcclip_ref

STAND-INS (detectron2, fvcore and the compiled deformable attention are not installable
here; nothing of the reference is part of this repository):

* the detectron2 / fvcore symbols the imported reference modules need, as
  ``compare_fcclip_reference.py`` writes them (its docstring lists them);
* for ``FCCLIP.forward``: ``ImageList.from_tensors`` (zero padding bottom/right to the
  size divisibility 32, the image sizes kept), ``sem_seg_postprocess``
  (``ovseg_ros.testing.comparison``: crop, bilinear resize), ``retry_if_cuda_oom``
  (calls the function), and ``get_text_classifier``, which returns OUR text classifier
  (one row per synonym: the 14 ViLD templates' embeddings averaged and normalised, as the
  reference's) with the reference's ``num_templates``: the reference's ``encode_text``
  feeds a sequence-first tensor to open_clip's text transformer, which is batch-first in
  the installed open_clip (3.x), so it cannot run here as written;
* the resize: detectron2's ``ResizeShortestEdge`` output size and PIL bilinear, written
  out in ``reference_resize``.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import os
import sys
import tempfile
import types
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "scripts"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from compare_fcclip_reference import import_reference, install_standins  # noqa: E402
from ovseg_ros import load_segmenter  # noqa: E402
from ovseg_ros.testing.comparison import (CLASSES, HEADER, agreement, failures,  # noqa: E402
                                          photos, row_text, segment_failures, segment_match,
                                          report_verdict, sem_seg_postprocess, with_threads)
from ovseg_ros.testing.fcclip_parity import TINY_CLIP, write_parity_weights  # noqa: E402
from ovseg_ros.tools.bench import cpu_machine_line  # noqa: E402

#: FC-CLIP's eval config (fcclip_convnext_large_eval_ade20k.yaml and its base)
EVAL = {"object_mask_threshold": 0.0, "overlap_threshold": 0.8, "alpha": 0.4, "beta": 0.8,
        "pixel_mean": (122.7709383, 116.7460125, 104.09373615),
        "pixel_std": (68.5005327, 66.6321579, 70.32316305), "size_divisibility": 32}


def read_methods(src: Path, cls: str, names: set, scope: dict) -> dict:
    """Methods ``names`` of class ``cls`` in ``src``, compiled from the reference's source
    as written, with ``scope`` as their globals; module-level assignments (VILD_PROMPT)
    are executed into ``scope`` too."""
    tree = ast.parse(src.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign):
            exec(compile(ast.Module([node], []), str(src), "exec"), scope)
    found = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name in names:
                    item.decorator_list = []
                    exec(compile(ast.Module([item], []), str(src), "exec"), scope)
                    found[item.name] = scope[item.name]
    missing = names - set(found)
    if missing:
        raise SystemExit(f"{src}: class {cls} has no {sorted(missing)}")
    return found


class ImageList:
    """STAND-IN for detectron2's ImageList: zero padding to the size divisibility."""

    def __init__(self, tensor, image_sizes):
        self.tensor, self.image_sizes = tensor, image_sizes

    @staticmethod
    def from_tensors(tensors, size_divisibility=0):
        sizes = [tuple(t.shape[-2:]) for t in tensors]
        h, w = (max(s[i] for s in sizes) for i in (0, 1))
        if size_divisibility > 1:
            h, w = (-(-v // size_divisibility) * size_divisibility for v in (h, w))
        out = tensors[0].new_zeros((len(tensors), tensors[0].shape[0], h, w))
        for i, t in enumerate(tensors):
            out[i, :, : t.shape[-2], : t.shape[-1]] = t
        return ImageList(out, sizes)


def reference_resize(rgb: np.ndarray, short: int, max_size: int) -> np.ndarray:
    """detectron2's ResizeShortestEdge(short, max_size) on a uint8 image (PIL bilinear)."""
    from PIL import Image

    h, w = rgb.shape[:2]
    scale = short / min(h, w)
    newh, neww = (short, scale * w) if h < w else (scale * h, short)
    if max(newh, neww) > max_size:
        scale = max_size / max(newh, neww)
        newh, neww = newh * scale, neww * scale
    newh, neww = int(newh + 0.5), int(neww + 0.5)
    if (newh, neww) == (h, w):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((neww, newh), Image.BILINEAR))


def build_reference(ref_dir: Path, eng, clip_file: str, vocab):
    """The reference FCCLIP (a module holding the reference's methods) for ``eng``'s head."""
    import open_clip

    pix_mod, dec_mod, _ = import_reference(ref_dir)
    meta = sys.modules.get("fcclip.modeling.meta_arch")
    if meta is None:
        meta = types.ModuleType("fcclip.modeling.meta_arch")
        meta.__path__ = [str(ref_dir / "fcclip/modeling/meta_arch")]
        sys.modules["fcclip.modeling.meta_arch"] = meta
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        head_mod = importlib.import_module("fcclip.modeling.meta_arch.fcclip_head")
    spec = eng.spec
    shape = sys.modules["detectron2.layers"].ShapeSpec
    shapes = {f"res{i + 2}": shape(channels=c, stride=s)
              for i, (c, s) in enumerate(zip(spec.in_channels, (4, 8, 16, 32)))}
    pixel_decoder = pix_mod.MSDeformAttnPixelDecoder(
        shapes, transformer_dropout=0.0, transformer_nheads=spec.nheads,
        transformer_dim_feedforward=spec.enc_ffn, transformer_enc_layers=spec.enc_layers,
        conv_dim=spec.conv_dim, mask_dim=spec.mask_dim, norm="GN",
        transformer_in_features=["res3", "res4", "res5"], common_stride=4)
    predictor = dec_mod.MultiScaleMaskedTransformerDecoder(
        spec.conv_dim, True, num_classes=vocab.num_classes, hidden_dim=spec.hidden_dim,
        num_queries=spec.num_queries, nheads=spec.nheads, dim_feedforward=spec.dec_ffn,
        dec_layers=spec.dec_layers, pre_norm=False, mask_dim=spec.mask_dim,
        enforce_input_project=False, clip_embedding_dim=spec.clip_embedding_dim)
    head = head_mod.FCCLIPHead(shapes, num_classes=vocab.num_classes,
                               pixel_decoder=pixel_decoder, transformer_predictor=predictor,
                               transformer_in_feature="multi_scale_pixel_decoder")
    head.load_state_dict(eng.head.sem_seg_head.state_dict(), strict=True)

    clip_model = open_clip.create_model(TINY_CLIP, pretrained=None)
    open_clip.load_checkpoint(clip_model, clip_file, strict=True, weights_only=True)
    backbone_src = ref_dir / "fcclip/modeling/backbone/clip.py"
    backbone_methods = read_methods(
        backbone_src, "CLIP", {"forward", "extract_features", "extract_features_convnext",
                               "extract_features_resnet", "visual_prediction_forward",
                               "visual_prediction_forward_convnext",
                               "visual_prediction_forward_resnet"},
        {"torch": torch, "F": F, "math": __import__("math")})
    backbone = type("ReferenceCLIP", (nn.Module,), backbone_methods)()
    backbone.clip_model = clip_model
    backbone.model_name, backbone.model_type = TINY_CLIP, "convnext"

    scope = {"torch": torch, "F": F, "nn": nn, "ImageList": ImageList,
             "sem_seg_postprocess": sem_seg_postprocess,
             "retry_if_cuda_oom": lambda fn: fn,
             "get_classification_logits": dec_mod.get_classification_logits}
    methods = read_methods(ref_dir / "fcclip/fcclip.py", "FCCLIP",
                           {"forward", "semantic_inference", "panoptic_inference",
                            "prepare_class_names_from_metadata", "device"}, scope)
    methods["device"] = property(methods["device"])
    ref = type("ReferenceFCCLIP", (nn.Module,), methods)()
    ref.backbone, ref.sem_seg_head = backbone, head
    ref.mask_pooling = dec_mod.MaskPooling()
    ref.void_embedding = nn.Embedding(1, spec.clip_embedding_dim)
    ref.void_embedding.load_state_dict({"weight": eng.head.void_embedding.weight.detach()})
    ref.register_buffer("pixel_mean", torch.tensor(EVAL["pixel_mean"]).view(-1, 1, 1), False)
    ref.register_buffer("pixel_std", torch.tensor(EVAL["pixel_std"]).view(-1, 1, 1), False)
    ref.size_divisibility = EVAL["size_divisibility"]
    ref.sem_seg_postprocess_before_inference = True
    ref.semantic_on, ref.panoptic_on, ref.instance_on = True, True, False
    ref.object_mask_threshold = EVAL["object_mask_threshold"]
    ref.overlap_threshold = EVAL["overlap_threshold"]
    ref.geometric_ensemble_alpha, ref.geometric_ensemble_beta = EVAL["alpha"], EVAL["beta"]
    ref.ensemble_on_valid_mask = False
    # the reference's training names (its COCO panoptic list) decide seen / unseen
    lines = (ref_dir / "fcclip/data/datasets/coco_panoptic_with_prompt_eng.txt").read_text()
    train_names = [n for i, n in (ln.split(":", 1) for ln in lines.splitlines() if ln)
                   if int(i) != 0 and n != "invalid_class_id"]
    things = {i: i for i, t in enumerate(vocab.is_thing) if t}
    ref.test_metadata = types.SimpleNamespace(
        stuff_classes=[",".join(s) for s in vocab.synonyms],
        thing_dataset_id_to_contiguous_id=things)
    train = types.SimpleNamespace(stuff_classes=train_names)
    ref.category_overlapping_mask, num_templates, _ = ref.prepare_class_names_from_metadata(
        ref.test_metadata, train)
    text = vocab.embeddings.float()          # ours: S x D, one normalised row per synonym
    if sum(num_templates) != text.shape[0]:
        raise SystemExit(f"the reference counts {sum(num_templates)} synonyms, the engine "
                         f"{text.shape[0]}")
    ref.get_text_classifier = lambda: (text, num_templates)
    return ref.eval()


def reference_forward(ref, image: torch.Tensor, original) -> dict:
    """The reference's forward on one uint8 CHW image (call under ``with_threads``)."""
    return ref([{"image": image, "height": original[0], "width": original[1]}])[0]


def reference_one_ulp(ref, image: torch.Tensor, original) -> dict:
    """The reference's forward with its pixel std moved up by one ulp: every normalised
    input value moves by at most about one ulp (its sensitivity to rounding)."""
    std = ref.pixel_std
    ref.pixel_std = torch.nextafter(std, torch.full_like(std, float("inf")))
    try:
        return reference_forward(ref, image, original)
    finally:
        ref.pixel_std = std


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    print(cpu_machine_line(args.threads, "fp32; ours --threads, the reference 1 and 2 "
                                         "threads")[0], flush=True)
    sizes = {"fcclip.short_side": args.short_side, "fcclip.max_size": args.max_size}
    with tempfile.TemporaryDirectory(prefix="fcclip_parity_") as tmp, \
            tempfile.TemporaryDirectory(prefix="fcclip_standins_") as stand:
        cfg = write_parity_weights("fcclip", tmp, seed=args.seed, **sizes)
        seg = load_segmenter(cfg)
        install_standins(Path(stand))
        ref = build_reference(args.reference_dir.resolve(), seg.engine,
                              cfg["fcclip.clip_checkpoint"], seg.vocabulary)
    print(f"reference: {args.reference_dir} (stand-ins: see the docstring); {len(CLASSES)} "
          f"classes, short side {args.short_side}, max size {args.max_size}")
    print(HEADER + f" {'segments':>9} {'seg IoU':>7} {'classes eq':>10} {'ref NaN':>7} "
          f"{'ulp floor':>9} {'ulp noise':>9} {'margin ulp':>10}")
    results = {"photos": {}, "settings": {k: str(v) for k, v in vars(args).items()}}
    every = photos()
    chosen = ({k: every[k] for p in args.photos for k in every if k.startswith(p)}
              if args.photos else every)
    for name, rgb in chosen.items():
        small = reference_resize(rgb, args.short_side, args.max_size)
        image = torch.as_tensor(np.ascontiguousarray(small.transpose(2, 0, 1)))
        r1 = with_threads(1, reference_forward, ref, image, rgb.shape[:2])
        r2 = with_threads(2, reference_forward, ref, image, rgb.shape[:2])
        r_ulp = with_threads(1, reference_one_ulp, ref, image, rgb.shape[:2])
        pred = seg.predict(rgb)
        sem1, sem2 = r1["sem_seg"], r2["sem_seg"]
        ulp = agreement(pred.semantic, torch.nan_to_num(sem1), torch.nan_to_num(r_ulp["sem_seg"]))
        nan = int(torch.isnan(sem1).any(0).sum())
        ref_pan, ref_info = r1["panoptic_seg"]
        row = {**agreement(pred.semantic, torch.nan_to_num(sem1), torch.nan_to_num(sem2)),
               **segment_match(pred.panoptic, pred.segments, ref_pan.numpy(), ref_info),
               "reference_nan_pixels": nan, "ulp_floor": ulp["floor"],
               "ulp_noise": ulp["reference_score_noise"], "margin_ulp": ulp["margin"],
               "ours_classes": int(len(np.unique(pred.semantic)))}
        results["photos"][name] = row
        print(row_text(name, row) + f" {row['segments_ours']:>4}/{row['segments_ref']:<4} "
              f"{row['segment_iou_min']:>7.4f} {str(row['segment_classes_equal']):>10} "
              f"{nan:>7} {ulp['floor']:>9.4%} {ulp['reference_score_noise']:>9.2e} "
              f"{ulp['margin']:>10.4%}", flush=True)
    results["load_average_end"] = os.getloadavg()
    print("end: " + cpu_machine_line(args.threads)[0], flush=True)
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference-dir", required=True, type=Path,
                    help="directory holding the reference's fcclip/ package")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="seed of the parity weights")
    ap.add_argument("--short-side", type=int, default=480,
                    help="fcclip.short_side and the reference's resize (480 with --max-size "
                         "640: the parity weights' calibration size, a VGA frame)")
    ap.add_argument("--max-size", type=int, default=640)
    ap.add_argument("--photos", nargs="*", default=None,
                    help="names (prefixes) of the comparison photos (default: all)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    res = run(args)
    bad = failures(res["photos"]) + segment_failures(res["photos"])
    bad += [f"{n}: the reference's scores are NaN at {r['reference_nan_pixels']} pixels"
            for n, r in res["photos"].items() if r["reference_nan_pixels"]]
    return report_verdict(bad, res, args.json)


if __name__ == "__main__":
    sys.exit(main())
