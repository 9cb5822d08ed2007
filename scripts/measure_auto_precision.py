#!/usr/bin/env python3
"""bf16 against fp32, per engine, on the comparison photos: the evidence ``precision: auto``
is decided on (``ovseg_ros.config.AUTO_LOW_PRECISION``).

For each engine the same weights are loaded twice (``precision: fp32`` and ``bf16``, torch
backend, CPU) and every photo runs through both: the share of pixels whose label agrees
(raw, no margin), the seconds per frame of each, and which precision each stage ran in
(``Segmenter.describe()['stage_precision']``). The machine line names the CPU, the
threads, the load average and the fp32/bf16 matmul ceiling measured in the same run.

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
from ovseg_ros.testing.comparison import CLASSES, photos, segment_match  # noqa: E402
from ovseg_ros.testing.fcclip_parity import write_parity_weights  # noqa: E402
from ovseg_ros.testing.ovseg_checkpoint import released_state_dict  # noqa: E402
from ovseg_ros.tools.bench import cpu_machine_line, cpu_model  # noqa: E402

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


#: FC-CLIP / MAFT+ input size: a VGA frame (short side 480, long side at most 640)
VGA = {"short_side": 480, "max_size": 640}


def engine_configs(tmp: Path, wanted) -> dict:
    """Config per engine (only those in ``wanted``, all when empty): parity weights are
    written only for the engines measured."""
    makers = {
        "ovseg": lambda: ovseg_config(tmp),
        "proxyclip": lambda: {"engine": "proxyclip", "random_init": True, "text_cache_dir": ""},
        **{e: (lambda e=e: write_parity_weights(e, tmp, **{f"{e}.{k}": v
                                                           for k, v in VGA.items()}))
           for e in ("fcclip", "maftplus")}}
    return {name: make() for name, make in makers.items() if not wanted or name in wanted}


def fp32_segments(pred) -> list:
    """fp32 segments in the form ``segment_match`` takes as its reference."""
    return [{"id": s.id, "category_id": s.class_id} for s in pred.segments]


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    line, ceil = cpu_machine_line(args.threads, "torch backend, fp32 and bf16")
    machine = {"cpu": cpu_model(), "threads": args.threads, "load_average": os.getloadavg(),
               "matmul_gflops": ceil}
    print(line, flush=True)
    out = {"machine": machine, "engines": {}}
    with tempfile.TemporaryDirectory(prefix="auto_precision_") as tmp:
        for name, cfg in engine_configs(Path(tmp), args.engine).items():
            segs = {p: load_segmenter(dict(cfg, precision=p, vocabulary=CLASSES,
                                           num_threads=args.threads))
                    for p in ("fp32", "bf16")}
            rows = {}
            for photo, rgb in photos().items():
                got = {}
                for prec, seg in segs.items():
                    seg.predict(rgb)                                  # warm-up
                    t0 = time.perf_counter()
                    pred = seg.predict(rgb)
                    got[prec] = (pred, time.perf_counter() - t0)
                f32, b16 = got["fp32"][0], got["bf16"][0]
                agree = float((f32.semantic == b16.semantic).mean())
                rows[photo] = {"agreement": agree, "fp32_s": got["fp32"][1],
                               "bf16_s": got["bf16"][1]}
                text = ""
                if name in ("fcclip", "maftplus"):
                    rows[photo].update(segment_match(b16.panoptic, b16.segments, f32.panoptic,
                                                     fp32_segments(f32)))
                    r = rows[photo]
                    text = (f", segments {r['segments_ours']}/{r['segments_ref']} (bf16/fp32) "
                            f"IoU min {r['segment_iou_min']:.4f} classes equal "
                            f"{r['segment_classes_equal']}")
                print(f"{name:>10} {photo:>18}: labels {100 * agree:7.3f} % of fp32, "
                      f"fp32 {got['fp32'][1]:.2f} s, bf16 {got['bf16'][1]:.2f} s{text}",
                      flush=True)
            out["engines"][name] = {
                "photos": rows, "worst": min(r["agreement"] for r in rows.values()),
                "stage_precision": {p: s.describe().get("stage_precision")
                                    for p, s in segs.items()}}
            stages = out["engines"][name]["stage_precision"]["bf16"]
            print(f"{name:>10} stages with precision bf16: {stages}", flush=True)
    out["machine"]["load_average_end"] = os.getloadavg()
    print("end: " + cpu_machine_line(args.threads)[0], flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--engine", action="append",
                    choices=("ovseg", "proxyclip", "fcclip", "maftplus"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    out = run(args)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
