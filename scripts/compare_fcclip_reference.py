#!/usr/bin/env python3
"""Compare ovseg_ros's FC-CLIP pixel decoder and transformer decoder with the reference
(bytedance/fc-clip, built on Mask2Former / detectron2), numerically, module by module.

(The whole inference, photo to labels and segments, against the reference's own forward:
``scripts/compare_fcclip_end_to_end.py``, which reuses this script's stand-ins.)

What it does:

1. builds OUR ``MSDeformAttnPixelDecoder`` and ``MultiScaleMaskedTransformerDecoder`` with
   small dimensions, randomises every parameter (seeded; the default init zeroes the
   deformable-attention weights, which would hide query-dependent sampling);
2. builds the reference's ``MSDeformAttnPixelDecoder`` (fcclip/modeling/pixel_decoder/
   msdeformattn.py, deformable attention through its pure-PyTorch
   ``ms_deform_attn_core_pytorch``, no compiled op) and FC-CLIP's
   ``MultiScaleMaskedTransformerDecoder`` (fcclip/modeling/transformer_decoder/
   fcclip_transformer_decoder.py) with the same dimensions;
3. loads OUR ``state_dict()`` into the reference modules by identical key names with
   ``strict=True`` (missing / unexpected keys and shape mismatches are reported first:
   this is the proof that released checkpoints load into our modules unchanged);
4. feeds identical random inputs (fp32 or, with ``--float64``, float64; CPU, eval mode)
   and reports the largest absolute difference (and that divided by the largest
   reference value) of: mask features, each multi-scale feature; and for every decoder
   prediction (learned queries + each layer): mask embeddings (``mask_embed`` output),
   class embeddings (``class_embed`` output), pred_logits (cosine with a text
   classifier, max over synonyms, void last) and pred_masks. The class head pools over
   ``mask logit > 0``; where a logit within rounding of 0 lands on the other side in
   one implementation, the class figures are also taken with our head pooled over the
   reference's masks, and the flipped logit must be below the masks' rounding.

Exit status 0 when the keys match and every relative difference is below ``--tol``,
1 otherwise.

Nothing of the reference is part of this repository; it is imported at run time from a
checkout (any directory holding its ``fcclip/`` package), e.g.::

    git -C <mirror of bytedance/fc-clip> archive HEAD fcclip | tar -x -C /tmp/fcclip_ref
    .venv/bin/python scripts/compare_fcclip_reference.py --reference-dir /tmp/fcclip_ref

STAND-IN NOTICE. detectron2, fvcore and the compiled ``MultiScaleDeformableAttention``
extension are not installable here. The reference modules import only a few symbols from
them, so this script writes, at run time into a temporary directory put first on
``sys.path``, minimal STAND-INS of exactly those symbols -- they are not detectron2:

* ``detectron2.config.configurable``: returns the function unchanged (we always pass
  explicit arguments, never a cfg);
* ``detectron2.layers``: ``ShapeSpec`` (channels, stride), ``Conv2d`` (nn.Conv2d with
  optional ``norm`` and ``activation``, applied in that order), ``get_norm`` ("GN" ->
  GroupNorm(32), "" -> None);
* ``detectron2.modeling.SEM_SEG_HEADS_REGISTRY`` and ``detectron2.utils.registry.Registry``:
  a dict with ``register()`` / ``get()``;
* ``fvcore.nn.weight_init.c2_xavier_fill``: kaiming_uniform(a=1) + zero bias (only the
  initial values, which are overwritten by our weights anyway);
* ``MultiScaleDeformableAttention``: a module whose forward raises, so the reference's
  own ``try/except`` takes ``ms_deform_attn_core_pytorch``; the script counts those
  calls and fails if the fallback was not used.

The reference's package ``__init__`` files (which import datasets, the CLIP backbone
and detectron2's data machinery) are not executed: ``fcclip`` and ``fcclip.modeling``
are registered as bare packages pointing at the checkout's directories.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
import tempfile
import textwrap
import types
import warnings
from pathlib import Path
from typing import Dict, List

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ovseg_ros.engines.fcclip import class_max  # noqa: E402
from ovseg_ros.models.pixel_decoder import MSDeformAttnPixelDecoder  # noqa: E402
from ovseg_ros.models.transformer_decoder import (MultiScaleMaskedTransformerDecoder,  # noqa: E402
                                                  cosine_logits)

# --- stand-ins (written at run time; see the module docstring) -----------------------------
_STANDINS = {
    "detectron2/__init__.py": '"""STAND-IN for detectron2 (compare_fcclip_reference.py)."""\n',
    "detectron2/config.py": '''
        """STAND-IN: configurable returns the function unchanged (explicit args only)."""
        def configurable(fn=None, **_):
            return fn if fn is not None else (lambda f: f)
        ''',
    "detectron2/layers.py": '''
        """STAND-IN for the three detectron2.layers symbols the reference imports."""
        from dataclasses import dataclass
        from typing import Optional
        from torch import nn

        @dataclass
        class ShapeSpec:
            channels: Optional[int] = None
            height: Optional[int] = None
            width: Optional[int] = None
            stride: Optional[int] = None

        # detectron2's Conv2d(norm=, activation=) has the same interface as ours
        from ovseg_ros.models.pixel_decoder import ConvNorm as Conv2d  # noqa: F401

        def get_norm(norm, out_channels):
            if norm in (None, ""):
                return None
            if norm == "GN":
                return nn.GroupNorm(32, out_channels)
            raise ValueError(f"stand-in get_norm knows only 'GN' and '', not {norm!r}")
        ''',
    "detectron2/utils/__init__.py": "",
    "detectron2/utils/registry.py": '''
        """STAND-IN registry: name -> object."""
        class Registry(dict):
            def __init__(self, name):
                super().__init__()
                self.name = name

            def register(self, obj=None):
                def add(o):
                    self[o.__name__] = o
                    return o
                return add if obj is None else add(obj)
        ''',
    "detectron2/modeling.py": '''
        """STAND-IN: only the registry the pixel decoder registers itself in."""
        from detectron2.utils.registry import Registry
        SEM_SEG_HEADS_REGISTRY = Registry("SEM_SEG_HEADS")
        ''',
    "fvcore/__init__.py": "",
    "fvcore/nn/__init__.py": "",
    "fvcore/nn/weight_init.py": '''
        """STAND-IN for fvcore's c2_xavier_fill (initial values only)."""
        from torch import nn

        def c2_xavier_fill(module):
            nn.init.kaiming_uniform_(module.weight, a=1)
            if module.bias is not None:
                nn.init.constant_(module.bias, 0)
        ''',
    "MultiScaleDeformableAttention.py": '''
        """STAND-IN: no compiled op; raising here makes the reference fall back to
        ms_deform_attn_core_pytorch (its own try/except)."""
        def ms_deform_attn_forward(*args, **kwargs):
            raise RuntimeError("stand-in: compiled deformable attention is not available")
        ''',
}


def install_standins(tmp: Path) -> None:
    for rel, text in _STANDINS.items():
        path = tmp / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    sys.path.insert(0, str(tmp))


def import_reference(ref_dir: Path):
    """The reference's pixel-decoder and transformer-decoder modules, imported without
    running fcclip/__init__.py and fcclip/modeling/__init__.py."""
    pkg_dir = ref_dir / "fcclip"
    needed = [pkg_dir / "modeling/pixel_decoder/msdeformattn.py",
              pkg_dir / "modeling/transformer_decoder/fcclip_transformer_decoder.py",
              pkg_dir / "modeling/pixel_decoder/ops/functions/ms_deform_attn_func.py"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise SystemExit(f"--reference-dir {ref_dir} is not a bytedance/fc-clip checkout "
                         f"(missing {missing}); extract one with "
                         "`git -C <mirror> archive HEAD fcclip | tar -x -C <dir>`")
    for name, path in (("fcclip", pkg_dir), ("fcclip.modeling", pkg_dir / "modeling")):
        mod = types.ModuleType(name)
        mod.__path__ = [str(path)]
        sys.modules[name] = mod
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # torch.cuda.amp.autocast deprecation
        pix = importlib.import_module("fcclip.modeling.pixel_decoder.msdeformattn")
        dec = importlib.import_module(
            "fcclip.modeling.transformer_decoder.fcclip_transformer_decoder")
        attn = importlib.import_module("fcclip.modeling.pixel_decoder.ops.modules.ms_deform_attn")
    return pix, dec, attn


# --- helpers -------------------------------------------------------------------------------
def randomise(module: torch.nn.Module, gen: torch.Generator, scale: float = 0.5) -> None:
    """Add seeded noise to every parameter: std ``scale / sqrt(fan_in)`` for weight
    matrices / kernels (so a layer's gain stays O(1), as in a trained network, and
    rounding differences are not amplified layer after layer), ``scale / 4`` for vectors
    (biases, norm scales, embeddings)."""
    with torch.no_grad():
        for p in module.parameters():
            std = scale / p[0].numel() ** 0.5 if p.dim() > 1 else scale / 4
            p.add_(torch.randn(p.shape, generator=gen) * std)


def copy_ours_into_reference(ours: torch.nn.Module, ref: torch.nn.Module, label: str
                             ) -> Dict[str, List[str]]:
    ours_sd, ref_sd = ours.state_dict(), ref.state_dict()
    report = {
        "missing_in_ours": sorted(set(ref_sd) - set(ours_sd)),
        "unexpected_in_ours": sorted(set(ours_sd) - set(ref_sd)),
        "shape_mismatch": sorted(f"{k}: ours {tuple(ours_sd[k].shape)} ref {tuple(ref_sd[k].shape)}"
                                 for k in set(ours_sd) & set(ref_sd)
                                 if ours_sd[k].shape != ref_sd[k].shape),
    }
    ok = not any(report.values())
    print(f"[{label}] state_dict keys: ours {len(ours_sd)}, reference {len(ref_sd)} -> "
          f"{'identical names and shapes' if ok else 'MISMATCH'}")
    for kind, keys in report.items():
        for k in keys:
            print(f"    {kind}: {k}")
    if ok:
        ref.load_state_dict(ours_sd, strict=True)
    return report


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        raise SystemExit(f"shape differs: ours {tuple(a.shape)} vs reference {tuple(b.shape)}")
    return float((a.double() - b.double()).abs().max())


@contextlib.contextmanager
def keep_dtype(dtype: torch.dtype):
    """For the float64 run only: both pixel decoders call ``.float()`` on their inputs
    (deformable attention runs in fp32 by design); make it keep float64 meanwhile, so
    that rounding is ~1e-16 and any remaining difference is a difference of formula."""
    if dtype != torch.float64:
        yield
        return
    original = torch.Tensor.float
    torch.Tensor.float = lambda self, *a, **k: self if self.dtype == torch.float64 \
        else original(self, *a, **k)
    try:
        yield
    finally:
        torch.Tensor.float = original


def record_outputs(module: torch.nn.Module, store: list):
    return module.register_forward_hook(lambda m, i, o: store.append(o.detach().clone()))


def record_inputs(module: torch.nn.Module, store: list):
    return module.register_forward_hook(lambda m, i, o: store.append(i[0].detach().clone()))


# --- comparisons -----------------------------------------------------------------------------
def compare_pixel_decoder(pix_mod, attn_mod, args, gen) -> dict:
    chans = dict(zip(("res2", "res3", "res4", "res5"), args.in_channels))
    ours = MSDeformAttnPixelDecoder(chans, conv_dim=args.conv_dim, mask_dim=args.mask_dim,
                                    nheads=args.nheads, dim_feedforward=args.enc_ffn,
                                    enc_layers=args.enc_layers, n_points=4)
    randomise(ours, gen)
    shape_spec = sys.modules["detectron2.layers"].ShapeSpec
    ref = pix_mod.MSDeformAttnPixelDecoder(
        {k: shape_spec(channels=c, stride=s) for (k, c), s in zip(chans.items(), (4, 8, 16, 32))},
        transformer_dropout=0.0, transformer_nheads=args.nheads,
        transformer_dim_feedforward=args.enc_ffn, transformer_enc_layers=args.enc_layers,
        conv_dim=args.conv_dim, mask_dim=args.mask_dim, norm="GN",
        transformer_in_features=["res3", "res4", "res5"], common_stride=4)
    keys = copy_ours_into_reference(ours, ref, "pixel decoder")
    if any(keys.values()):
        return {"keys": keys}
    ours.eval().to(args.dtype), ref.eval().to(args.dtype)
    h, w = args.image_size
    feats = {f"res{i + 2}": torch.randn(args.batch, c, h // s, w // s, generator=gen,
                                        dtype=args.dtype)
             for i, (c, s) in enumerate(zip(args.in_channels, (4, 8, 16, 32)))}
    # count the reference's pure-PyTorch deformable attention calls
    calls = []
    core = attn_mod.ms_deform_attn_core_pytorch
    attn_mod.ms_deform_attn_core_pytorch = lambda *a: (calls.append(1), core(*a))[1]
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with keep_dtype(args.dtype):
                r_mask, _, r_ms = ref.forward_features(feats)
                o_mask, o_ms = ours(feats)
    finally:
        attn_mod.ms_deform_attn_core_pytorch = core
    if len(calls) != args.enc_layers:
        raise SystemExit(f"the reference ran ms_deform_attn_core_pytorch {len(calls)} times, "
                         f"expected {args.enc_layers} (one per encoder layer)")
    res = {"keys": keys, "core_pytorch_calls": len(calls),
           "mask_features": rel(o_mask, r_mask),
           "multi_scale": [rel(o, r) for o, r in zip(o_ms, r_ms)],
           "multi_scale_shapes": [list(r.shape) for r in r_ms],
           "num_multi_scale": [len(o_ms), len(r_ms)]}
    print("  max |diff| / relative to max |reference|:")
    print(f"  mask features {list(r_mask.shape)}: {_fmt(res['mask_features'])}")
    for i, (d, s) in enumerate(zip(res["multi_scale"], res["multi_scale_shapes"])):
        print(f"  multi-scale[{i}] {s}: {_fmt(d)}")
    return res


def compare_decoder(dec_mod, args, gen, hidden_dim: int) -> dict:
    # FC-CLIP's class head layer-norms mask-pooled mask features at hidden_dim, so the
    # architecture (ours and the reference's) needs mask_dim == hidden_dim
    mask_dim = hidden_dim
    label = f"transformer decoder (in {args.conv_dim}, hidden = mask dim {hidden_dim})"
    ours = MultiScaleMaskedTransformerDecoder(
        in_channels=args.conv_dim, hidden_dim=hidden_dim, num_queries=args.queries,
        nheads=args.nheads, dim_feedforward=args.dec_ffn, dec_layers=args.dec_layers,
        mask_dim=mask_dim, clip_embedding_dim=args.clip_dim)
    randomise(ours, gen)
    ref = dec_mod.MultiScaleMaskedTransformerDecoder(
        args.conv_dim, True, num_classes=args.classes, hidden_dim=hidden_dim,
        num_queries=args.queries, nheads=args.nheads, dim_feedforward=args.dec_ffn,
        dec_layers=args.dec_layers, pre_norm=False, mask_dim=mask_dim,
        enforce_input_project=False, clip_embedding_dim=args.clip_dim)
    keys = copy_ours_into_reference(ours, ref, label)
    if any(keys.values()):
        return {"keys": keys}
    ours.eval().to(args.dtype), ref.eval().to(args.dtype)
    h, w = args.image_size
    x = [torch.randn(args.batch, args.conv_dim, h // s, w // s, generator=gen, dtype=args.dtype)
         for s in (32, 16, 8)]
    mask_features = torch.randn(args.batch, mask_dim, h // 4, w // 4, generator=gen,
                                dtype=args.dtype)
    # text classifier: synonyms of consecutive classes (1..3 each), void row last
    num_syn = [1 + i % 3 for i in range(args.classes)]
    classifier = F.normalize(torch.randn(sum(num_syn) + 1, args.clip_dim, generator=gen,
                                         dtype=args.dtype), dim=-1)
    synonym_class = torch.repeat_interleave(torch.arange(args.classes), torch.tensor(num_syn))

    stores = {"ours_mask_embed": [], "ref_mask_embed": [], "ref_class_embed": []}
    ours_queries: list = []       # the query states our decoder_norm sees, per prediction
    hooks = [record_inputs(ours.decoder_norm, ours_queries),
             record_outputs(ours.mask_embed, stores["ours_mask_embed"]),
             record_outputs(ref.mask_embed, stores["ref_mask_embed"]),
             record_outputs(ref.class_embed, stores["ref_class_embed"])]
    try:
        with torch.no_grad():
            ref_out = ref(x, mask_features, text_classifier=classifier, num_templates=num_syn)
            o_masks, o_embeds = ours(x, mask_features, intermediate=True)
            o_final_masks, o_final_embed = ours(x, mask_features)
    finally:
        for hk in hooks:
            hk.remove()
    ref_preds = ref_out["aux_outputs"] + [{"pred_logits": ref_out["pred_logits"],
                                           "pred_masks": ref_out["pred_masks"]}]
    n = args.dec_layers + 1
    if not (len(ref_preds) == len(o_masks) == len(stores["ref_class_embed"]) == n):
        raise SystemExit(f"prediction counts differ: reference {len(ref_preds)}, ours "
                         f"{len(o_masks)}, expected {n}")
    rows = []
    for i in range(n):
        r_masks = ref_preds[i]["pred_masks"]
        with torch.no_grad():
            o_logits = _class_logits(ours, o_embeds[i], classifier, synonym_class, args.classes)
            # The class head pools over mask logit > 0: a logit within rounding of 0 may
            # fall on the other side in one implementation. Pooling OUR features with the
            # REFERENCE's masks separates such a flip from a real difference.
            dec_out = ours.decoder_norm(ours_queries[i]).transpose(0, 1)
            e_ref_masks = ours._class_embed(mask_features, r_masks, dec_out)
            l_ref_masks = _class_logits(ours, e_ref_masks, classifier, synonym_class,
                                        args.classes)
        flipped = (o_masks[i] > 0) != (r_masks > 0)
        r_embed, r_logits = stores["ref_class_embed"][i], ref_preds[i]["pred_logits"]
        rows.append({
            "prediction": "queries" if i == 0 else f"layer {i}",
            "mask_embed": rel(stores["ours_mask_embed"][i], stores["ref_mask_embed"][i]),
            "class_embed": rel(o_embeds[i], r_embed),
            "pred_logits": rel(o_logits, r_logits),
            "pred_masks": rel(o_masks[i], r_masks),
            "mask_sign_flips": int(flipped.sum()),
            # |reference logit| at flipped pixels: must be below the masks' rounding error
            "flip_max_abs_logit": float(r_masks[flipped].abs().max()) if flipped.any() else 0.0,
            "class_embed_given_ref_masks": rel(e_ref_masks, r_embed),
            "pred_logits_given_ref_masks": rel(l_ref_masks, r_logits),
        })
    with torch.no_grad():
        final_embed = ours._class_embed(mask_features, ref_out["pred_masks"],
                                        ours.decoder_norm(ours_queries[-1]).transpose(0, 1))
    final = {"pred_masks": rel(o_final_masks, ref_out["pred_masks"]),
             "class_embed_given_ref_masks": rel(final_embed, stores["ref_class_embed"][-1])}
    hdr = ("prediction", "mask_embed", "class_embed", "pred_logits", "pred_masks", "flips",
           "class|ref m", "logits|ref m")
    print("  max |diff| / relative to max |reference| (class|ref m, logits|ref m: our class "
          "head pooled with the reference's masks)")
    print("  " + " ".join(f"{h:>14}" for h in hdr))
    for r in rows:
        cells = [r["prediction"]] + [_fmt(r[k]) for k in ("mask_embed", "class_embed",
                                                          "pred_logits", "pred_masks")]
        cells += [str(r["mask_sign_flips"]), _fmt(r["class_embed_given_ref_masks"]),
                  _fmt(r["pred_logits_given_ref_masks"])]
        print("  " + " ".join(f"{c:>14}" for c in cells))
        if r["mask_sign_flips"]:
            print(f"  {'':>14} {r['mask_sign_flips']} mask pixel(s) on the other side of 0 "
                  f"(|reference logit| <= {r['flip_max_abs_logit']:.2g}, below the masks' "
                  f"rounding {r['pred_masks']['abs']:.2g}): binarised mask pooling differs there")
    print(f"  inference path (intermediate=False): pred_masks {_fmt(final['pred_masks'])}, "
          f"class_embed with the reference's masks {_fmt(final['class_embed_given_ref_masks'])}")
    return {"keys": keys, "layers": rows, "final": final}


def _class_logits(ours, embed, classifier, synonym_class, num_classes):
    """Our vocabulary path: cosine, max over synonyms, void last (the engine's order)."""
    logits = cosine_logits(embed, classifier, ours.logit_scale)
    return torch.cat([class_max(logits[..., :-1], synonym_class, num_classes),
                      logits[..., -1:]], -1)


def rel(ours: torch.Tensor, ref: torch.Tensor) -> dict:
    scale = float(ref.detach().abs().max())
    d = maxdiff(ours.detach(), ref.detach())
    return {"abs": d, "rel": d / scale if scale > 0 else d}


def _fmt(d: dict) -> str:
    return f"{d['abs']:.1e}/{d['rel']:.0e}"


def failures(results: dict, tol: float) -> List[str]:
    """Every failed check. Where a mask pixel flipped sign, the class head is judged with
    the reference's masks, and the flip itself only passes when the flipped logit is
    smaller than the masks' rounding error."""
    bad = []
    for name, res in results.items():
        if any(res["keys"].values()):
            bad.append(f"{name}: state_dict keys differ")
            continue
        if name == "pixel_decoder":
            pairs = [("mask_features", res["mask_features"])]
            pairs += [(f"multi_scale[{i}]", d) for i, d in enumerate(res["multi_scale"])]
            bad += [f"{name} {k}: relative diff {d['rel']:.2g}" for k, d in pairs
                    if d["rel"] > tol]
            continue
        for r in res["layers"]:
            checks = ["mask_embed", "pred_masks"]
            if r["mask_sign_flips"]:
                checks += ["class_embed_given_ref_masks", "pred_logits_given_ref_masks"]
                if r["flip_max_abs_logit"] > r["pred_masks"]["abs"]:
                    bad.append(f"{name} {r['prediction']}: mask sign flip at |logit| "
                               f"{r['flip_max_abs_logit']:.2g}")
            else:
                checks += ["class_embed", "pred_logits"]
            bad += [f"{name} {r['prediction']} {k}: relative diff {r[k]['rel']:.2g}"
                    for k in checks if r[k]["rel"] > tol]
        bad += [f"{name} inference path {k}: relative diff {d['rel']:.2g}"
                for k, d in res["final"].items() if d["rel"] > tol]
    return bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reference-dir", required=True, type=Path,
                    help="directory holding the reference's fcclip/ package")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--float64", action="store_true",
                    help="run both sides in float64 (rounding out of the way: a remaining "
                         "difference is a difference of formula); default fp32")
    ap.add_argument("--tol", type=float, default=1e-4,
                    help="largest accepted max |diff| / max |reference value|")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--image-size", type=int, nargs=2, default=(96, 128), metavar=("H", "W"),
                    help="padded input size (multiple of 32); features are H/4..H/32")
    ap.add_argument("--in-channels", type=int, nargs=4, default=(16, 24, 32, 48))
    ap.add_argument("--conv-dim", type=int, default=64, help="multiple of 32 (GroupNorm(32))")
    ap.add_argument("--mask-dim", type=int, default=64)
    ap.add_argument("--nheads", type=int, default=4)
    ap.add_argument("--enc-layers", type=int, default=6)
    ap.add_argument("--enc-ffn", type=int, default=128)
    ap.add_argument("--dec-layers", type=int, default=9)
    ap.add_argument("--dec-ffn", type=int, default=128)
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("--classes", type=int, default=6)
    ap.add_argument("--clip-dim", type=int, default=32)
    args = ap.parse_args(argv)
    if args.image_size[0] % 32 or args.image_size[1] % 32:
        ap.error("--image-size must be a multiple of 32 in both dimensions")
    if args.conv_dim % 32:
        ap.error("--conv-dim must be a multiple of 32 (the reference hard-codes GroupNorm(32))")

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)          # module initialisation
    args.dtype = torch.float64 if args.float64 else torch.float32
    gen = torch.Generator().manual_seed(args.seed)
    with tempfile.TemporaryDirectory(prefix="fcclip_standins_") as tmp:
        install_standins(Path(tmp))
        pix_mod, dec_mod, attn_mod = import_reference(args.reference_dir.resolve())
        print(f"reference: {args.reference_dir} (detectron2/fvcore/CUDA-op STAND-INS, "
              f"see the docstring); {str(args.dtype)[6:]}, CPU, eval mode, seed {args.seed}")
        results = {"pixel_decoder": compare_pixel_decoder(pix_mod, attn_mod, args, gen),
                   "decoder": compare_decoder(dec_mod, args, gen, hidden_dim=args.conv_dim),
                   "decoder_input_proj": compare_decoder(dec_mod, args, gen,
                                                         hidden_dim=args.conv_dim // 2)}
    bad = failures(results, args.tol)
    results["failures"] = bad
    results["settings"] = {k: (v if isinstance(v, (int, float, list, tuple)) else str(v))
                           for k, v in vars(args).items()}
    for b in bad:
        print("FAIL:", b)
    print(f"PASS: state_dict keys identical, every relative difference <= {args.tol:g}"
          if not bad else f"FAIL: {len(bad)} check(s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
