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
that margin reproducibly across fp32 implementations.

ORDER FLOOR. Beside those, the reference is run with its deformable-attention sums in
two other exact orders (its ``ms_deform_attn_core_pytorch`` swapped for
``ms_deform_attn_gather``, our default, and for the level-by-level ``grid_sample`` form):
the same formula, only the fp32 rounding of one sum changes. ``order floor`` is the
lower of its label agreements with itself, ``order noise`` the largest change of its
normalised scores, ``margin order`` our agreement with that as the margin and ``order
IoU`` the smallest IoU of its own panoptic segments between the orders. With the
calibrated parity weights the decoder has decision cliffs: a few-ppm change of the pixel
decoder's output moves whole queries' masks through the transformer decoder's
thresholded attention masks, so the official code itself, summed in another exact order,
keeps only 98.2 % of coffee's labels (seed 0). ``--deformable-sampling reference_order``
runs ours with the reference's own summation order (``*.deformable_sampling``): what is
left then is the transformer decoder's rounding.

OUR OWN FLOOR. Ours is also run at the other of 1 / 2 threads: ``ours floor`` is the
agreement of our two label images, ``ours noise`` the largest change of our normalised
scores, ``margin ours`` our agreement with the reference with that as the margin, ``ours
IoU`` the smallest IoU between our two panoptic outputs (seed 0, coffee: 99.02 %, our
deformable gather and decoder attention sum in a thread-dependent order).

FLOAT64. ``f64 raw`` is the agreement with the reference's fp32 labels of ours with the
image path (trunk, pixel decoder, transformer decoder, mask pooling) in float64 and the
vocabulary path and post-processing in fp32: the exact network's side of a cliff. (The
reference's own post-processing is not run in float64: its semantic sum there moves a
quarter of the labels of these weights, whose mask logits reach a few hundred.)

Exit status 0 when, on every photo, raw agreement reaches 99.9 % or the lowest floor of
two exact fp32 evaluations of the network (the reference at 1 / 2 threads, the reference
in other summation orders, ours at 1 / 2 threads), margin-aware agreement is 100 % with
the widest of the measured score noises (the reference's threads, one ulp and orders,
our threads) as the margin, and every reference segment matches with the same class and
count and an IoU of at least 0.99 or the lowest IoU between those evaluations; 1
otherwise. On a photo without a cliff every floor is above 99.9 % and a difference of
formula (such as MAFT+'s CDT, 2-4 % of the labels) still fails the check.

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
import copy
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

from compare_fcclip_reference import import_reference, install_standins, keep_dtype  # noqa: E402
from ovseg_ros import load_segmenter  # noqa: E402
from ovseg_ros.models.deformable_attention import (ms_deform_attn_gather,  # noqa: E402
                                                   ms_deform_attn_sample)
from ovseg_ros.testing.comparison import (CLASSES, HEADER, agreement,  # noqa: E402
                                          margin_agreement, normalised, photos, row_text,
                                          segment_match, report_verdict, sem_seg_postprocess,
                                          with_threads)
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


#: the other exact orders of the reference's deformable-attention sums (ORDER FLOOR)
OTHER_ORDERS = {"gather": ms_deform_attn_gather, "level by level": ms_deform_attn_sample}


def reference_in_order(ref, image: torch.Tensor, original, sampling) -> dict:
    """The reference's forward with its ``ms_deform_attn_core_pytorch`` replaced by
    ``sampling`` (same formula, other summation order), 1 thread."""
    attn_mod = sys.modules["fcclip.modeling.pixel_decoder.ops.modules.ms_deform_attn"]
    core = attn_mod.ms_deform_attn_core_pytorch
    attn_mod.ms_deform_attn_core_pytorch = sampling
    try:
        return with_threads(1, reference_forward, ref, image, original)
    finally:
        attn_mod.ms_deform_attn_core_pytorch = core


def order_floor(ours: np.ndarray, ref_1: dict, others: list) -> dict:
    """The reference against itself summed in other exact orders (``others``: its results):
    lowest label agreement, largest normalised score change, our margin-aware agreement
    with that change as the margin, and the smallest IoU of its own segments."""
    sem = torch.nan_to_num(ref_1["sem_seg"])
    labels, n1 = sem.argmax(0).numpy(), normalised(sem.float())
    floor, noise, iou = 1.0, 0.0, 1.0
    ref_pan, ref_info = ref_1["panoptic_seg"]
    for other in others:
        sem_o = torch.nan_to_num(other["sem_seg"])
        floor = min(floor, float((sem_o.argmax(0).numpy() == labels).mean()))
        noise = max(noise, float((normalised(sem_o.float()) - n1).abs().max()))
        pan_o, info_o = other["panoptic_seg"]
        segs = [types.SimpleNamespace(id=i["id"], class_id=i["category_id"]) for i in info_o]
        iou = min(iou, segment_match(pan_o.numpy(), segs, ref_pan.numpy(),
                                     ref_info)["segment_iou_min"])
    return {"order_floor": floor, "order_noise": noise, "order_iou": iou,
            "margin_order": margin_agreement(ours, n1, noise)}


def ours_floor(main, alt, ref_1: dict) -> dict:
    """Our prediction ``main`` against ``alt`` (ours at the other thread count): our own
    floor, noise, margin (against ``ref_1``) and IoU."""
    n_main, n_alt = (normalised(torch.as_tensor(p.scores).float()) for p in (main, alt))
    noise = float((n_main - n_alt).abs().max())
    sem = torch.nan_to_num(ref_1["sem_seg"])
    iou = segment_match(alt.panoptic, alt.segments, main.panoptic,
                        [{"id": sg.id, "category_id": sg.class_id} for sg in main.segments])
    return {"ours_floor": float((main.semantic == alt.semantic).mean()),
            "ours_noise": noise, "ours_iou": iou["segment_iou_min"],
            "margin_ours": margin_agreement(main.semantic, normalised(sem.float()), noise)}


def ours_float64(seg, model64, rgb: np.ndarray) -> np.ndarray:
    """Our labels with the image path (``model64``: trunk, pixel decoder, transformer
    decoder, mask pooling, in float64) computed to ~1e-16, the vocabulary path and the
    post-processing in fp32 as always: which side of a rounding cliff the exact network
    is on."""
    eng = seg.engine
    x, resized = eng.preprocess(rgb)
    with torch.no_grad():
        with keep_dtype(torch.float64):
            outs = tuple(o.double() for o in model64(x.double()))
        mask_cls = eng.classify(tuple(o.float() for o in outs), seg.vocabulary)[0]
        return eng._postprocess(mask_cls, outs[0][0].float(), seg.vocabulary, resized,
                                rgb.shape[:2])[0]


def verdict_failures(rows: dict) -> list:
    """The checks of the docstring's last paragraph, per photo."""
    bad = []
    for name, r in rows.items():
        need = min(0.999, r["floor"], r["order_floor"], r["ours_floor"])
        if r["raw"] < need:
            bad.append(f"{name}: raw agreement {r['raw']:.6f} < {need:.6f}")
        widest = max(r["margin"], r["margin_ulp"], r["margin_order"], r["margin_ours"])
        if widest < 1.0:
            bad.append(f"{name}: margin-aware agreement {widest:.6f} < 1 with the widest of "
                       f"the measured score noises")
        min_iou = min(0.99, r["order_iou"], r["ours_iou"])
        if (r["segment_iou_min"] < min_iou or not r["segment_classes_equal"]
                or r["segments_ours"] != r["segments_ref"]):
            bad.append(f"{name}: panoptic segment IoU {r['segment_iou_min']:.4f} < "
                       f"{min_iou:.4f} or classes differ ({r['segments_ours']} vs "
                       f"{r['segments_ref']} segments)")
        if r["reference_nan_pixels"]:
            bad.append(f"{name}: the reference's scores are NaN at "
                       f"{r['reference_nan_pixels']} pixels")
    return bad


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    print(cpu_machine_line(args.threads, "fp32; ours --threads and the other of 1 / 2, "
                                         "the reference 1 and 2 threads")[0], flush=True)
    sizes = {"fcclip.short_side": args.short_side, "fcclip.max_size": args.max_size}
    ours_settings = {"fcclip.deformable_sampling": args.deformable_sampling}
    with tempfile.TemporaryDirectory(prefix="fcclip_parity_") as tmp, \
            tempfile.TemporaryDirectory(prefix="fcclip_standins_") as stand:
        cfg = write_parity_weights("fcclip", tmp, seed=args.seed, **sizes)
        seg = load_segmenter({**cfg, **ours_settings})
        install_standins(Path(stand))
        ref = build_reference(args.reference_dir.resolve(), seg.engine,
                              cfg["fcclip.clip_checkpoint"], seg.vocabulary)
    every = photos()
    chosen = ({k: every[k] for p in args.photos for k in every if k.startswith(p)}
              if args.photos else every)
    return compare(args, seg, ref, chosen)


def compare(args, seg, ref, chosen: dict) -> dict:
    """Every photo's row (the module docstring's columns and checks)."""
    print(f"reference: {args.reference_dir} (stand-ins: see the docstring); {len(CLASSES)} "
          f"classes, short side {args.short_side}, max size {args.max_size}; ours with "
          f"deformable_sampling {args.deformable_sampling}")
    print(HEADER + f" {'segments':>9} {'seg IoU':>7} {'classes eq':>10} {'ref NaN':>7} "
          f"{'ulp floor':>9} {'ulp noise':>9} {'margin ulp':>10} {'order floor':>11} "
          f"{'order noise':>11} {'margin order':>12} {'order IoU':>9} {'ours floor':>10} "
          f"{'ours noise':>10} {'margin ours':>11} {'ours IoU':>8} {'f64 raw':>9}")
    results = {"photos": {}, "settings": {k: str(v) for k, v in vars(args).items()}}
    model64 = copy.deepcopy(seg.engine.image_model).double()
    for name, rgb in chosen.items():
        small = reference_resize(rgb, args.short_side, args.max_size)
        image = torch.as_tensor(np.ascontiguousarray(small.transpose(2, 0, 1)))
        r1 = with_threads(1, reference_forward, ref, image, rgb.shape[:2])
        r2 = with_threads(2, reference_forward, ref, image, rgb.shape[:2])
        r_ulp = with_threads(1, reference_one_ulp, ref, image, rgb.shape[:2])
        others = [reference_in_order(ref, image, rgb.shape[:2], form)
                  for form in OTHER_ORDERS.values()]
        pred = with_threads(args.threads, seg.predict, rgb, scores=True)
        alt = with_threads(2 if args.threads == 1 else 1, seg.predict, rgb, scores=True)
        sem1, sem2 = r1["sem_seg"], r2["sem_seg"]
        ulp = agreement(pred.semantic, torch.nan_to_num(sem1), torch.nan_to_num(r_ulp["sem_seg"]))
        nan = int(torch.isnan(sem1).any(0).sum())
        ref_pan, ref_info = r1["panoptic_seg"]
        row = {**agreement(pred.semantic, torch.nan_to_num(sem1), torch.nan_to_num(sem2)),
               **segment_match(pred.panoptic, pred.segments, ref_pan.numpy(), ref_info),
               "reference_nan_pixels": nan, "ulp_floor": ulp["floor"],
               "ulp_noise": ulp["reference_score_noise"], "margin_ulp": ulp["margin"],
               "ours_classes": int(len(np.unique(pred.semantic))),
               **order_floor(pred.semantic, r1, others), **ours_floor(pred, alt, r1),
               "ours_float64_raw": float((ours_float64(seg, model64, rgb)
                                          == torch.nan_to_num(sem1).argmax(0).numpy()).mean())}
        results["photos"][name] = row
        print(row_text(name, row) + f" {row['segments_ours']:>4}/{row['segments_ref']:<4} "
              f"{row['segment_iou_min']:>7.4f} {str(row['segment_classes_equal']):>10} "
              f"{nan:>7} {ulp['floor']:>9.4%} {ulp['reference_score_noise']:>9.2e} "
              f"{ulp['margin']:>10.4%} {row['order_floor']:>11.4%} "
              f"{row['order_noise']:>11.2e} {row['margin_order']:>12.4%} "
              f"{row['order_iou']:>9.4f} {row['ours_floor']:>10.4%} {row['ours_noise']:>10.2e} "
              f"{row['margin_ours']:>11.4%} {row['ours_iou']:>8.4f} "
              f"{row['ours_float64_raw']:>9.4%}", flush=True)
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
    ap.add_argument("--deformable-sampling", default="gather",
                    choices=("gather", "reference_order"),
                    help="ours: fcclip.deformable_sampling (the default 'gather', or the "
                         "reference's own summation order)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    res = run(args)
    return report_verdict(verdict_failures(res["photos"]), res, args.json)


if __name__ == "__main__":
    sys.exit(main())
