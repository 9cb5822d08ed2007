"""Several cameras, one model: ``predict_batch`` over N cameras' frames against N
single-camera runs of the same model.

    python -m ovseg_ros.tools.bench_cameras --quick            # tiny ProxyCLIP, < 1 minute
    python -m ovseg_ros.tools.bench_cameras --preset proxyclip-b16-dinos8-single224 \\
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
``camera_scaling`` in ``ovseg_ros/tools/bench.py`` (also ``ovseg-bench --cameras``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    from ..presets import PRESETS
    from .bench import machine_info, markdown_section, parse_size, run_presets

    p = argparse.ArgumentParser(prog="python -m ovseg_ros.tools.bench_cameras",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="proxyclip-tiny, cameras 1,2,4, 320x240, 3 timed runs")
    p.add_argument("--preset", action="append", choices=sorted(PRESETS))
    p.add_argument("--cameras", default="1,2,4", help="comma list of camera counts")
    p.add_argument("--size", default="320x240", help="frame size WxH of every camera")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
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
