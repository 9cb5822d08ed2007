#!/usr/bin/env python3
"""bf16 and int8 against fp32, per engine, on the comparison photos: the evidence
``precision: auto`` is decided on (``ovseg_ros.config.AUTO_LOW_PRECISION`` and the engines'
``AUTO_CPU_PRECISION``).

For each engine the same weights are loaded once per precision (``fp32``, ``bf16`` and,
where the engine has it, ``int8``; torch backend, CPU), one model at a time, and every
photo runs through each: the share of pixels whose label agrees with fp32 (raw, no
margin), the seconds per frame of each, and which precision each stage ran in
(``Segmenter.describe()['stage_precision']``). ``int8-clip-mlp`` is int8 with CLIP's
attention projections left fp32 (only its MLPs and the VFM quantised), a way compared,
not a setting. The machine line names the CPU, the threads, the load average and the
fp32/bf16 (and int8) matmul ceilings measured in the same run, at the start and the end.

``--shape default`` is the published ProxyCLIP preset (CLIP B/16 + DINO B/8, sliding 336
windows); ``--shape cpu_realtime`` takes the ``proxyclip.*`` geometry and models of
config/cpu_realtime.yaml (B/16 + DINO S/16, one 224 window).

Weights: the calibrated parity weights of the comparison scripts, so the labels vary
over each photo (random weights give one class everywhere, which agrees 100 % in any
arithmetic):

* ovseg: ``scripts/compare_ovseg_reference.py``'s (released layout, small Swin / head /
  mask-adapted ViT, seeded noise 2.0, mask-embedding gain 30);
* proxyclip: the published architecture (CLIP B/16 + DINO B/8, sliding 336 windows),
  seeded random weights, as ``scripts/compare_reference.py`` compares them.

* fcclip, maftplus: ``ovseg_ros.testing.fcclip_parity`` (tiny ConvNeXt CLIP, released
  layout, seeded noise with the gains its docstring explains), the weights
  ``scripts/compare_fcclip_end_to_end.py`` and ``compare_maftplus_reference.py`` compare,
  at 480 / 640 (short side / long-side cap: a VGA frame; the calibration size). For these
  two the panoptic output is compared too: each fp32 segment against the bf16 segment
  overlapping it most (smallest IoU, classes, counts; ``testing.comparison.segment_match``).

    python scripts/measure_auto_precision.py --threads 2 --json /tmp/auto_precision.json
    python scripts/measure_auto_precision.py --engine proxyclip --shape cpu_realtime \
        --precisions fp32,bf16,int8,int8-clip-mlp
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import ovseg_ros.testing.tiny_models  # noqa: E402,F401  (registers the tiny open_clip configs)
from ovseg_ros import load_segmenter  # noqa: E402
from ovseg_ros.config import ENGINE_PRECISIONS  # noqa: E402
from ovseg_ros.presets import preset_group  # noqa: E402
from ovseg_ros.testing.comparison import CLASSES, photos, segment_match  # noqa: E402
from ovseg_ros.testing.fcclip_parity import write_parity_weights  # noqa: E402
from ovseg_ros.testing.ovseg_checkpoint import released_state_dict  # noqa: E402
from ovseg_ros.tools.bench import cpu_machine_line  # noqa: E402

#: ways measured besides the settings: (the setting it loads as, what it changes then)
WAYS = {"int8-clip-mlp": "fp32"}

OVSEG_TINY = {"ovseg.swin_model": "ovseg_tiny_swin", "ovseg.head_size": "tiny",
              "ovseg.clip_model": "ovseg-tiny-ViT-14", "ovseg.num_queries": 20}


def ovseg_config(tmp: Path, seed: int = 0, noise: float = 2.0, gain: float = 30.0) -> dict:
    base = {"engine": "ovseg", "backend": "torch", "text_cache_dir": "", **OVSEG_TINY}
    state = released_state_dict(dict(base, random_init=True), seed=seed, scale=noise)
    for k in ("weight", "bias"):
        state[f"sem_seg_head.predictor.mask_embed.layers.2.{k}"] *= gain
    path = tmp / "ovseg_parity.pth"
    torch.save({"model": state}, str(path))
    return dict(base, **{"ovseg.checkpoint": str(path)})


def proxyclip_shape(shape: str) -> dict:
    """The ProxyCLIP models and geometry of a shape: the published preset (the engine's
    defaults) or config/cpu_realtime.yaml's ``proxyclip.*`` keys (the weights here are
    seeded random whatever its tags say)."""
    return {} if shape == "default" else preset_group(shape, "proxyclip")


#: FC-CLIP / MAFT+ input size: a VGA frame (short side 480, long side at most 640)
VGA = {"short_side": 480, "max_size": 640}


def engine_configs(tmp: Path, shape: str, wanted) -> dict:
    """Config per engine (only those in ``wanted``, all when empty): parity weights are
    written only for the engines measured."""
    makers = {
        "ovseg": lambda: ovseg_config(tmp),
        "proxyclip": lambda: {"engine": "proxyclip", "random_init": True, "text_cache_dir": "",
                              **proxyclip_shape(shape)},
        **{e: (lambda e=e: write_parity_weights(e, tmp, **{f"{e}.{k}": v
                                                           for k, v in VGA.items()}))
           for e in ("fcclip", "maftplus")}}
    return {name: make() for name, make in makers.items() if not wanted or name in wanted}


def fp32_segments(pred) -> list:
    """fp32 segments in the form ``segment_match`` takes as its reference."""
    return [{"id": s.id, "category_id": s.class_id} for s in pred.segments]


def load_way(cfg: dict, way: str, threads: int):
    """The segmenter of a precision setting, or of a way (``WAYS``) built on one."""
    seg = load_segmenter(dict(cfg, precision=WAYS.get(way, way), vocabulary=CLASSES,
                              num_threads=threads))
    if way == "int8-clip-mlp":
        seg.engine.image_model.quantize_int8(clip_attention=False)
    return seg


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    line, ceil = cpu_machine_line(args.threads, int8=True)
    print(f"{line}; shape {args.shape}", flush=True)
    out = {"machine": {"line": line, "threads": args.threads, "matmul_gflops": ceil,
                       "load_average": os.getloadavg()}, "shape": args.shape, "engines": {}}
    with tempfile.TemporaryDirectory(prefix="auto_precision_") as tmp:
        for name, cfg in engine_configs(Path(tmp), args.shape, args.engine).items():
            ways = [w for w in args.precisions.split(",")
                    if WAYS.get(w, w) in ENGINE_PRECISIONS[name]
                    and (w not in WAYS or name == "proxyclip")]
            got = {}
            stages = {}
            for way in ways:                      # one model in memory at a time
                seg = load_way(cfg, way, args.threads)
                stages[way] = seg.describe().get("stage_precision")
                if way == "int8-clip-mlp":      # loaded as fp32, then quantised here
                    stages[way] = dict(stages[way], trunks="int8 (CLIP attention fp32)")
                for photo, rgb in photos().items():
                    if not args.labels_only:
                        seg.predict(rgb)                              # warm-up
                    t0 = time.perf_counter()
                    pred = seg.predict(rgb)
                    got[way, photo] = (pred, time.perf_counter() - t0)
                seg = None
            rows = {}
            for photo in photos():
                ref = got["fp32", photo][0]
                rows[photo] = {f"{w}_s": got[w, photo][1] for w in ways}
                text = ""
                for w in ways:
                    if w == "fp32":
                        continue
                    pred = got[w, photo][0]
                    rows[photo][f"{w}_agreement"] = float((pred.semantic == ref.semantic).mean())
                    if name in ("fcclip", "maftplus"):   # panoptic: segments against fp32
                        m = segment_match(pred.panoptic, pred.segments, ref.panoptic,
                                          fp32_segments(ref))
                        rows[photo][f"{w}_segments"] = m
                        text += (f"; {w} segments {m['segments_ours']}/{m['segments_ref']} "
                                 f"(vs fp32) IoU min {m['segment_iou_min']:.4f} classes equal "
                                 f"{m['segment_classes_equal']}")
                print(f"{name:>10} {photo:>18}: " + ", ".join(
                    f"{w} {got[w, photo][1]:.2f} s" + (
                        f" ({100 * rows[photo][w + '_agreement']:7.3f} % of fp32)"
                        if w != "fp32" else "") for w in ways) + text, flush=True)
            worst = {w: min(r[f"{w}_agreement"] for r in rows.values())
                     for w in ways if w != "fp32"}
            out["engines"][name] = {"photos": rows, "worst": worst, "stage_precision": stages}
            for w in ways:
                print(f"{name:>10} {w}: stages {stages[w]}" + (
                    f"; worst photo {100 * worst[w]:.3f} % of fp32" if w in worst else ""),
                    flush=True)
    end_line, _ = cpu_machine_line(args.threads, int8=True)
    print(f"end: {end_line}", flush=True)
    out["machine"]["end"] = end_line
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--engine", action="append",
                    choices=("ovseg", "proxyclip", "fcclip", "maftplus"))
    ap.add_argument("--shape", default="default", choices=("default", "cpu_realtime"),
                    help="ProxyCLIP's models and geometry (see the module doc)")
    ap.add_argument("--precisions", default="fp32,bf16,int8",
                    help="comma list, fp32 first: fp32, bf16, int8, int8-clip-mlp (engines "
                         "without one skip it)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--labels-only", action="store_true",
                    help="one predict per photo, no warm-up (its seconds include first-call "
                         "costs): for a loaded machine, where only the labels are firm")
    args = ap.parse_args(argv)
    if args.precisions.split(",")[0] != "fp32":
        ap.error("--precisions must start with fp32 (the reference)")
    out = run(args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
