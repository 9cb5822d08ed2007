#!/usr/bin/env python3
"""Compare MAFT+'s Content-Dependent Transfer and semantic inference with the reference
(jiaosiyu1999/MAFT-Plus), on the four comparison photos.

What it does, per photo (scikit-image's coffee, astronaut, chelsea and a 512x256 portrait
crop of astronaut; each starts as the uint8 photo and goes through the engine's resize
and the reference's normalisation, which is bit-exact with it, see models/normalise.py):

1. runs OUR image graph (fp32, CPU) with the calibrated parity weights of
   ``ovseg_ros.testing.fcclip_parity`` (tiny ConvNeXt CLIP, released key layout, written to
   files and loaded strictly; their labels vary over each photo and panoptic queries are
   kept, where plain random weights label a photo with one class and keep no segment) at
   480 / 640 (``--short-side`` / ``--max-size``), and keeps the stride-32 CLIP map it
   builds (``norm_pre`` output, the reference's ``clip_vis_dense``);
2. feeds that map to the REFERENCE's ``MAFT_Plus.visual_prediction_forward_convnext``
   (its source, taken from ``maft/maft_plus.py`` at run time and run as written) and to
   the reference's ``ContentDependentTransfer`` module (``strict=True`` load of OUR
   ``cdt`` weights: the names are the checkpoint's); compares the image features and the
   transferred classifier with ours, in the default form (``maftplus.cdt_per_pixel:
   false``) and in the per-pixel form (the size of the difference that option makes);
3. runs the reference's ``MAFT_Plus.semantic_inference`` (source, as written) in its
   eval config's order (semantic variant: at the padded size, then detectron2's
   ``sem_seg_postprocess`` on the scores; panoptic variant: on the mask logits already
   post-processed to the photo; ``sem_seg_postprocess``: crop, bilinear resize, a
   stand-in, below) on our class logits and mask logits, and compares the labels with
   the engine's ``predict``: raw agreement, margin-aware agreement (a differing pixel
   counts when the reference's normalised scores of the two labels are closer than the
   reference's own 1-thread vs 2-thread score noise) and that noise floor itself.

4. runs the reference's ``MAFT_Plus.panoptic_inference`` (source, as written; thing
   classes, object-mask and overlap thresholds as the engine's) on the mask logits
   upsampled to the padded input and post-processed to the photo, and matches each of
   its segments with the engine's segment that overlaps it most: the smallest IoU, the
   classes, the segment counts (target: IoU >= 0.99, same classes and counts).

The class logits (cosines, void) come from our engine in both columns: they are checked
against the reference formula by test/engines/test_maftplus.py. Exit status 0 when the
CDT features match to 1e-4 (relative) and every photo's labels agree at least as well
as the reference agrees with itself across thread counts, 100 % margin-aware.

The reference is imported at run time from a checkout (a directory holding ``maft/``)::

    git -C <mirror of jiaosiyu1999/MAFT-Plus> archive HEAD maft | tar -x -C /tmp/maft_ref
    python scripts/compare_maftplus_reference.py --reference-dir /tmp/maft_ref

STAND-IN NOTICE. detectron2 is not installable here; ``maft/maft_plus.py`` is not
imported (its imports need detectron2): the two methods are read from its source with
``ast`` and executed with ``torch`` and ``F`` in scope. ``sem_seg_postprocess`` is
``ovseg_ros.testing.comparison.sem_seg_postprocess`` (crop the padding, bilinear
resize, as detectron2). The package
``__init__`` files of ``maft`` are not executed (bare packages).
"""
from __future__ import annotations

import argparse
import ast
import importlib
import os
import sys
import tempfile
import types
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import ovseg_ros.testing.tiny_models  # noqa: E402,F401  (registers ovseg-tiny-ConvNeXt)
from ovseg_ros import load_segmenter  # noqa: E402
from ovseg_ros.models.fcclip_head import clip_head  # noqa: E402
from ovseg_ros.testing.comparison import (CLASSES, agreement, failures,  # noqa: E402
                                          photos, segment_failures, segment_match,
                                          report_verdict, sem_seg_postprocess, with_threads)
from ovseg_ros.testing.fcclip_parity import write_parity_weights  # noqa: E402
from ovseg_ros.testing.maftplus import dense_map_and_outputs  # noqa: E402
from ovseg_ros.tools.bench import cpu_machine_line  # noqa: E402

BARE = ("maft", "maft.modeling", "maft.modeling.maft", "maft.modeling.transformer_decoder")


def import_reference(ref_dir: Path):
    src = ref_dir / "maft" / "maft_plus.py"
    if not src.is_file():
        raise SystemExit(f"--reference-dir {ref_dir} holds no maft/maft_plus.py; extract one "
                         "with `git -C <mirror> archive HEAD maft | tar -x -C <dir>`")
    for name in BARE:
        mod = types.ModuleType(name)
        mod.__path__ = [str(ref_dir / name.replace(".", "/"))]
        sys.modules[name] = mod
    sys.path.insert(0, str(ref_dir))
    cdt = importlib.import_module("maft.modeling.maft.content_dependent_transfer")
    tree = ast.parse(src.read_text())
    wanted = {"visual_prediction_forward_convnext", "semantic_inference", "panoptic_inference"}
    funcs = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name in wanted and node.name not in funcs:
            ns = {"torch": torch, "F": F}
            exec(compile(ast.Module([node], []), str(src), "exec"), ns)  # the reference's code
            funcs[node.name] = ns[node.name]
    missing = wanted - set(funcs)
    if missing:
        raise SystemExit(f"{src} has no {sorted(missing)}")
    return cdt.ContentDependentTransfer, funcs


def reference_semantic(funcs, mask_cls, mask_logits, resized, original, before: bool):
    """The reference's semantic scores (call under ``with_threads``), in its forward's order:
    ``before`` (the panoptic eval config, ``sem_seg_postprocess_before_inference``): mask
    logits cropped and resized to the photo, then ``semantic_inference``; otherwise (the
    semantic config) ``semantic_inference`` at the padded size, then the scores resized."""
    up = F.interpolate(mask_logits[None], scale_factor=4, mode="bilinear",
                       align_corners=False)[0]
    if before:
        return funcs["semantic_inference"](None, mask_cls, sem_seg_postprocess(
            up, resized, *original))
    r = funcs["semantic_inference"](None, mask_cls, up)
    return sem_seg_postprocess(r, resized, *original)


def reference_panoptic(funcs, owner, mask_cls, mask_logits, resized, original):
    """The reference's panoptic ids (H x W) and segments: its ``panoptic_inference`` on the
    mask logits upsampled to the padded input and post-processed to the photo, as its
    forward does with panoptic inference on."""
    up = F.interpolate(mask_logits[None], scale_factor=4, mode="bilinear",
                       align_corners=False)[0]
    pan, info = funcs["panoptic_inference"](owner, mask_cls, sem_seg_postprocess(
        up, resized, *original), "cmp")
    return pan.numpy(), info


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    print(cpu_machine_line(args.threads, "fp32; ours --threads, the reference 1 and 2 "
                                         "threads")[0], flush=True)
    ref_cdt_cls, funcs = import_reference(args.reference_dir.resolve())
    sizes = {"maftplus.short_side": args.short_side, "maftplus.max_size": args.max_size,
             "maftplus.object_mask_threshold": args.object_mask_threshold}
    with tempfile.TemporaryDirectory(prefix="maftplus_parity_") as tmp:
        # calibrated parity weights (testing/fcclip_parity.py), loaded from their files
        base = write_parity_weights("maftplus", tmp, seed=args.seed,
                                    modules={"maftplus.cdt_variant": args.variant}, **sizes)
        seg = load_segmenter(base)
        per_pixel = load_segmenter(dict(base, **{"maftplus.cdt_per_pixel": True}))
    eng = seg.engine
    ref_cdt = ref_cdt_cls(d_model=eng.spec.clip_embedding_dim, nhead=8,
                          panoptic_on=args.variant == "panoptic").eval()
    ref_cdt.load_state_dict(eng.head.cdt.state_dict(), strict=True)
    fake = types.SimpleNamespace(backbone=types.SimpleNamespace(
        clip_model=types.SimpleNamespace(visual=eng.image_model.visual)))
    classifier = eng._classifier(seg.vocabulary)
    # what the reference's panoptic_inference reads from ``self``
    things = {i: i for i, t in enumerate(seg.vocabulary.is_thing) if t}
    owner = types.SimpleNamespace(
        object_mask_threshold=eng.cfg["maftplus.object_mask_threshold"],
        overlap_threshold=eng.cfg["maftplus.overlap_threshold"],
        test_metadata={"cmp": types.SimpleNamespace(
            stuff_classes=list(CLASSES), thing_dataset_id_to_contiguous_id=things)})
    results = {"variant": args.variant, "photos": {}}
    print(f"{'photo':>18} {'feat diff':>9} {'cdt diff':>9} {'per-pixel Δ':>11} {'raw':>9} "
          f"{'margin':>9} {'floor':>9} {'noise':>8} {'per-pixel labels':>16} {'segments':>9} "
          f"{'seg IoU':>7}")
    every = photos()
    chosen = ({k: every[k] for p in args.photos for k in every if k.startswith(p)}
              if args.photos else every)
    for name, rgb in chosen.items():
        x, resized = eng.preprocess(rgb)
        dense, outs = dense_map_and_outputs(eng, x)
        with torch.no_grad():
            img_feat = funcs["visual_prediction_forward_convnext"](fake, dense)
            ours_pix = clip_head(eng.image_model.visual, dense.permute(0, 2, 3, 1))
            ours_pix = ours_pix.permute(0, 3, 1, 2)
            t_ref = ref_cdt(img_feat, classifier)
            t_ours = eng.head.cdt(outs[3], classifier)
            feat = float((outs[3] - img_feat).abs().max() / img_feat.abs().max())
            cdt = float((t_ours - t_ref).abs().max() / t_ref.abs().max())
            pix = float((ours_pix - img_feat).abs().max())
            mask_cls = eng.classify(outs, seg.vocabulary)[0]
            args_ = (funcs, mask_cls, outs[0][0], resized, rgb.shape[:2],
                     args.variant == "panoptic")
            r1 = with_threads(1, reference_semantic, *args_)
            r2 = with_threads(2, reference_semantic, *args_)
            ref_pan, ref_info = reference_panoptic(funcs, owner, mask_cls, outs[0][0], resized,
                                                   rgb.shape[:2])
        other = per_pixel.predict(rgb).semantic
        pred = seg.predict(rgb)
        row = {"feature_rel_diff": feat, "cdt_rel_diff": cdt, "per_pixel_feature_abs_diff": pix,
               **agreement(pred.semantic, r1, r2),
               **segment_match(pred.panoptic, pred.segments, ref_pan, ref_info),
               "per_pixel_labels_equal": float((other == r1.argmax(0).numpy()).mean())}
        results["photos"][name] = row
        print(f"{name:>18} {feat:>9.1e} {cdt:>9.1e} {pix:>11.3f} {row['raw']:>9.4%} "
              f"{row['margin']:>9.4%} {row['floor']:>9.4%} {row['reference_score_noise']:>8.1e} "
              f"{row['per_pixel_labels_equal']:>16.4%} "
              f"{row['segments_ours']:>4}/{row['segments_ref']:<4} {row['segment_iou_min']:>7.4f}",
              flush=True)
    results["load_average_end"] = os.getloadavg()
    print("end: " + cpu_machine_line(args.threads)[0], flush=True)
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference-dir", required=True, type=Path)
    ap.add_argument("--variant", choices=("semantic", "panoptic"), default="semantic")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="seed of the parity weights")
    ap.add_argument("--short-side", type=int, default=480,
                    help="maftplus.short_side (480 with --max-size 640: the parity weights' "
                         "calibration size, a VGA frame)")
    ap.add_argument("--max-size", type=int, default=640)
    ap.add_argument("--object-mask-threshold", type=float, default=0.2,
                    help="maftplus.object_mask_threshold on both sides (0.2 as released)")
    ap.add_argument("--photos", nargs="*", default=None,
                    help="names (prefixes) of the comparison photos, in this order (default: all)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    res = run(args)
    bad = [f"{n}: {k} {r[k]:.3e}" for n, r in res["photos"].items()
           for k in ("feature_rel_diff", "cdt_rel_diff") if r[k] > 1e-4]
    bad += failures(res["photos"])
    bad += segment_failures(res["photos"])
    return report_verdict(bad, res, args.json)


if __name__ == "__main__":
    sys.exit(main())
