"""Several cameras, one model: ``predict_batch`` over N cameras' frames against N
single-camera runs of the same model.

    python -m ovseg_ros.tools.bench.cameras --quick            # tiny ProxyCLIP, < 1 minute
    python -m ovseg_ros.tools.bench.cameras --preset proxyclip-b16-dinos8-single224 \\
        --random-init --cameras 1,2,4 --size 640x480 --iters 5
    ovseg-bench ... --cameras 2,4                               # the same, as a bench section

What a multi-camera node does each round (``ovseg_ros/node/worker.py``): the waiting
frame of every camera goes through one ``Segmenter.predict_batch`` call. The
alternative is one single-camera node per camera, i.e. N models each running
``predict`` on its own camera; on one device they share the compute, so their
combined throughput is at best that of one model predicting the N frames one
after the other. Reported per N: the batch time, frames per second over all
cameras for both ways, the speed-up, the model memory (parameters and buffers)
of one model against N, and how many pixels of the batched labels equal the
one-at-a-time labels (the contract says all of them). The measurement itself is
``camera_scaling`` below (also ``ovseg-bench --cameras``).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from .common import _median_seconds, parse_size, synthetic_frame
from .machine import machine_info


# What a multi-camera node does each round (ovseg_ros/node/worker.py): the waiting frame of every
# camera goes through one Segmenter.predict_batch call. The alternative is one single-camera
# node per camera: N models sharing the device, together at best one model predicting the
# N frames one after the other.
def model_bytes(seg) -> int:
    """Parameters and buffers of every torch module the engine holds (one model's memory)."""
    import torch

    seen, total = set(), 0
    for value in vars(seg.engine).values():
        modules = [value] if isinstance(value, torch.nn.Module) else []
        inner = getattr(value, "model", None)          # a backend wrapping the image model
        if isinstance(inner, torch.nn.Module):
            modules.append(inner)
        for mod in modules:
            for t in list(mod.parameters()) + list(mod.buffers()):
                if id(t) not in seen:
                    seen.add(id(t))
                    total += t.numel() * t.element_size()
    return total


def camera_scaling(config: Dict[str, Any], cameras: List[int], size: tuple,
                   iters: int = 3, warmup: int = 1) -> Dict[str, Any]:
    """Time one model over N cameras (batched) and N single-camera predictions (in a row)."""
    from ...segmenter import load_segmenter

    if not cameras or min(cameras) < 1:
        raise ValueError(f"cameras must be positive counts, got {list(cameras)}")
    seg = load_segmenter(config)
    w, h = size
    frames = [synthetic_frame(w, h, seed=i) for i in range(max(cameras))]
    single = [seg.predict(f).semantic for f in frames]        # also the first-frame warm-up
    t_single = statistics.median(
        _median_seconds(lambda f=f: seg.predict(f), iters, warmup) for f in frames[:1])
    mbytes = model_bytes(seg)
    rows = []
    for n in cameras:
        batch = frames[:n]
        t_batch = _median_seconds(lambda b=batch: seg.predict_batch(b), iters, warmup)
        preds = seg.predict_batch(batch)
        same = float(np.mean([np.mean(p.semantic == s) for p, s in zip(preds, single[:n])]))
        rows.append({
            "cameras": n, "batch_ms": 1000 * t_batch, "single_ms": 1000 * t_single,
            "fps_batched": n / t_batch, "fps_separate": 1.0 / t_single,
            "per_camera_fps_batched": 1.0 / t_batch, "per_camera_fps_separate":
                1.0 / (n * t_single),
            "speedup": n * t_single / t_batch,
            "model_mib_one": mbytes / 2**20, "model_mib_separate": n * mbytes / 2**20,
            "labels_equal": same,
        })
    return {"engine": seg.describe().get("engine"), "backend": seg.describe().get("backend"),
            "precision": seg.describe().get("precision"), "size": f"{w}x{h}",
            "random_weights": seg.random_weights, "iters": iters, "rows": rows}


def markdown_section(results: List[Dict[str, Any]]) -> str:
    lines = ["## Several cameras, one model", "",
             "N cameras' frames in one `predict_batch` call against N single-camera runs of "
             "the same model (N × `predict`, one after the other: the best N separate "
             "single-camera nodes can do together on one device).", "",
             "| preset | backend | precision | input | weights | cameras | batch ms | single ms "
             "| FPS all cameras, batched | FPS all cameras, separate | speed-up | model MiB one "
             "/ separate | labels equal |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for res in results:
        if res.get("error"):
            lines.append(f"| {res.get('preset', '')} | not run: "
                         f"{res['error'].splitlines()[0][:160]} |" + " |" * 11)
        for r in res["rows"]:
            lines.append(
                f"| {res.get('preset', '')} | {res['backend']} | {res['precision']} | "
                f"{res['size']} | {'random' if res['random_weights'] else 'pretrained'} | "
                f"{r['cameras']} | {r['batch_ms']:.0f} | {r['single_ms']:.0f} | "
                f"{r['fps_batched']:.2f} | {r['fps_separate']:.2f} | {r['speedup']:.2f}× | "
                f"{r['model_mib_one']:.0f} / {r['model_mib_separate']:.0f} | "
                f"{100 * r['labels_equal']:.1f}% |")
    return "\n".join(lines) + "\n"


def run_presets(presets: List[str], cameras: List[int], size: tuple,
                iters: int, warmup: int, make_config) -> List[Dict[str, Any]]:
    """One result per preset; ``make_config(preset)`` gives its config (bench's settings)."""
    out = []
    for preset in presets:
        print(f"[{preset} | cameras {','.join(map(str, cameras))}] ...", end=" ", flush=True)
        try:
            res = camera_scaling(make_config(preset), cameras, size, iters, warmup)
        except Exception as exc:   # a preset without weights here: say so, keep the others
            print(f"not run: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            out.append({"preset": preset, "error": f"{type(exc).__name__}: {exc}",
                        "rows": [], "backend": "", "precision": "", "size": "",
                        "random_weights": True})
            continue
        res["preset"] = preset
        print(", ".join(f"{r['cameras']}: {r['fps_batched']:.2f} vs {r['fps_separate']:.2f} FPS"
                        for r in res["rows"]), flush=True)
        out.append(res)
    return out



def main(argv: Optional[List[str]] = None) -> int:
    from ...presets import PRESETS

    p = argparse.ArgumentParser(prog="python -m ovseg_ros.tools.bench.cameras",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="proxyclip-tiny, cameras 1,2,4, 320x240, 3 timed runs")
    p.add_argument("--preset", action="append", choices=sorted(PRESETS))
    p.add_argument("--cameras", default="1,2,4", help="comma list of camera counts")
    p.add_argument("--size", default="320x240", help="frame size WxH of every camera")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16", "int8"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--random-init", action="store_true")
    p.add_argument("--out", default="out/bench_cameras")
    args = p.parse_args(argv)
    try:
        cameras = [int(v) for v in args.cameras.split(",")]
    except ValueError:
        p.error(f"--cameras: {args.cameras!r} is not a comma list of integers")
    if min(cameras) < 1:
        p.error("--cameras: counts must be >= 1")
    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    presets = args.preset or ["proxyclip-tiny"]

    def make_config(preset):
        cfg = dict(PRESETS[preset], device=args.device, precision=args.precision,
                   num_threads=args.threads)
        if args.random_init:
            cfg["random_init"] = True
        return cfg

    results = run_presets(presets, cameras, parse_size(args.size), max(1, args.iters),
                          max(1, args.warmup), make_config)
    machine = machine_info(args.device)
    head = (f"Machine: {machine['cpu']}, {machine['cpus_usable']} CPUs usable, GPU "
            f"{machine['gpu'] or 'none'}; torch threads {torch.get_num_threads()}; "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cameras.json").write_text(json.dumps({"machine": machine, "results": results},
                                                 indent=2, default=str))
    (out / "cameras.md").write_text(head + markdown_section(results))
    print(head + markdown_section(results))
    return 0 if any(r["rows"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
