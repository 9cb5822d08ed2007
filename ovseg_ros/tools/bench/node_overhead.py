"""``ovseg-bench --node-overhead``: the node's per-frame work apart from the model, timed by
the ROS-layer measurements of ``node.py`` and written as ``node_overhead.json`` / ``.md``.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from .common import _jsonable, parse_size
from .machine import machine_info, matmul_ceiling


def run(args, argv) -> int:
    import torch

    # the ROS layer: rclpy is imported only for this mode
    from .node import TOPICS, measure, measure_3d, table, table_3d

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    sizes = args.sizes.split(",") if args.sizes else ["640x480", "1280x720"]
    for sz in sizes:
        parse_size(sz)
    machine = machine_info("cpu")
    iters = args.iters or 50
    threads = torch.get_num_threads()
    ceilings = {p: matmul_ceiling(p, "cpu") for p in ("fp32", "bf16")}
    load0 = os.getloadavg()[0]
    print(f"machine: {machine['cpu']}, {machine['cpus_usable']} CPUs usable, {threads} "
          f"thread(s), fp32; node overhead per frame, {iters} frames per size, "
          f"{args.node_classes} classes, load average {load0:.2f}; matmul ceiling "
          + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in ceilings.items()), flush=True)
    rows = []
    for subscribed in (TOPICS, ("semantic", "segments")):
        rows += measure(sizes, iters=iters, num_classes=args.node_classes,
                                   subscribed=subscribed)
    # a camera with depth: what the 3D outputs add (20 segments, every pixel with depth)
    rows_3d = measure_3d(sizes, iters=iters)
    load1 = os.getloadavg()[0]
    md = ("## Node overhead per frame, apart from the model\n\n"
          f"Machine: {machine['cpu']}, {machine['cpus_usable']} CPUs usable, {threads} "
          f"thread(s), fp32; load average {load0:.2f} at the start, {load1:.2f} at the end; "
          "matmul ceiling " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in ceilings.items())
          + f"; RMW {os.environ.get('RMW_IMPLEMENTATION', 'default')}, "
          f"{rows[0]['dds'] if rows else ''}; one listener process "
          "subscribed to the outputs named; medians of "
          f"{iters} frames.\n\n" + table(rows) + "\n\n"
          "### 3D outputs beyond the 2D ones (a camera with depth; points, segments_3d "
          "and markers subscribed; target 10 ms at 640x480 with 20 segments)\n\n"
          + table_3d(rows_3d) + "\n")
    print(md)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "node_overhead.json").write_text(json.dumps(_jsonable(
        {"created_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
         "machine": machine, "threads": threads, "ceilings_gflops": ceilings,
         "loadavg": [load0, load1], "command": " ".join(["ovseg-bench"] + list(
             argv if argv is not None else sys.argv[1:])), "rows": rows,
         "rows_3d": rows_3d}), indent=2))
    (out / "node_overhead.md").write_text(md)
    print(f"wrote {out / 'node_overhead.json'} and {out / 'node_overhead.md'}")
    return 0
