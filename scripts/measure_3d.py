#!/usr/bin/env python3
"""Cost of the 3D products of one frame beyond the 2D outputs: back-projection, the
labelled cloud, the per-segment 3D statistics and the marker plan (core/products_3d.py,
core/geometry.py, core/markers.py), for a 640x480 frame with 20 segments.

The frame is the SYNTHETIC RGB-D scene (ovseg_ros/testing/rgbd_scene.py) with its
panoptic map replaced by a 4 x 5 grid of 20 segments covering every pixel (the worst
case: every valid pixel enters the statistics). No model runs. Prints the machine, the
threads, the load average and the fp32/bf16 matmul ceilings measured in the same run,
then the median time of each step over ``--repeat`` runs.

    .venv/bin/python scripts/measure_3d.py --threads 2
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from ovseg_ros.core import geometry as G  # noqa: E402
from ovseg_ros.core.depth import DepthFrame, Intrinsics, depth_to_metres  # noqa: E402
from ovseg_ros.core.markers import MarkerPlanner  # noqa: E402
from ovseg_ros.core.products import FrameProducts  # noqa: E402
from ovseg_ros.core.products_3d import build_3d  # noqa: E402
from ovseg_ros.testing import rgbd_scene as S  # noqa: E402
from ovseg_ros.tools.bench import cpu_model, matmul_ceiling  # noqa: E402


def frame(stride: int):
    rgb, mm, sem, _, _ = S.render(0)
    rows = np.arange(S.HEIGHT) * 4 // S.HEIGHT
    cols = np.arange(S.WIDTH) * 5 // S.WIDTH
    pan = (rows[:, None] * 5 + cols[None, :] + 1).astype(np.int32)      # 20 segments
    segs = [{"id": i, "class_id": i % 3, "class_name": S.CLASSES[i % 3], "is_thing": True,
             "score": 0.5, "area": int((pan == i).sum()), "bbox": [0, 0, 1, 1]}
            for i in range(1, 21)]
    prod = FrameProducts(semantic=sem, panoptic=pan, confidence=None, segments=segs,
                         colored=None, vocabulary_version=1, random_weights=False)
    intr = Intrinsics(S.FX, S.FY, S.CX, S.CY, S.WIDTH, S.HEIGHT)
    return prod, rgb, mm, intr


def median_ms(fn, repeat: int):
    """(median wall ms, median CPU ms of this thread): on a shared machine the wall time
    also holds the waits for a core, the thread's CPU time only the work."""
    fn()
    wall, cpu = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.thread_time()
        fn()
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - t)
    return float(np.median(wall) * 1e3), float(np.median(cpu) * 1e3)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args(argv)
    import cv2
    import torch

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    prod, rgb, mm, intr = frame(1)
    m, _ = depth_to_metres(mm, "16UC1")
    depth = DepthFrame(m, intr, "cam", 0)
    stats = G.segment_stats_depth(m, intr, prod.panoptic)
    planner = MarkerPlanner("cam")
    build_3d(prod, depth, None, rgb=rgb)
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, {args.threads} threads "
          f"(OpenCV, torch), fp32, load average {os.getloadavg()[0]:.2f}")
    print(f"matmul ceiling (2048^2): fp32 {matmul_ceiling('fp32', 'cpu'):.0f} GFLOP/s, "
          f"bf16 {matmul_ceiling('bf16', 'cpu'):.0f} GFLOP/s")
    print(f"frame: {S.WIDTH}x{S.HEIGHT}, {len(stats)} segments, "
          f"{int(np.isfinite(m).sum())} valid depth pixels; median of {args.repeat} runs")
    rows = [
        ("depth 16UC1 -> metres", lambda: depth_to_metres(mm, "16UC1")),
        ("labelled cloud (organised)", lambda: G.labelled_cloud(m, intr, rgb, prod.semantic,
                                                                prod.panoptic)),
        ("3D segment statistics", lambda: G.segment_stats_depth(m, intr, prod.panoptic)),
        ("marker plan", lambda: planner.plan(prod.segments_3d, 1)),
        ("build_3d: cloud + 3D segments", lambda: build_3d(prod, depth, None, rgb=rgb)),
        ("build_3d: 3D segments only", lambda: build_3d(prod, depth, {"segments_3d"}, rgb=rgb)),
        ("build_3d: cloud, stride 2", lambda: build_3d(prod, depth, {"points"}, rgb=rgb,
                                                       stride=2)),
    ]
    print(f"  {'step':38s} {'wall ms':>8s} {'CPU ms':>8s}")
    for name, fn in rows:
        print(f"  {name:38s} {'%8.2f %8.2f' % median_ms(fn, args.repeat)}")
    total = median_ms(lambda: (depth_to_metres(mm, "16UC1"), build_3d(prod, depth, None, rgb=rgb),
                               planner.plan(prod.segments_3d, 1)), args.repeat)
    print(f"  {'total beyond 2D (decode+build+markers)':38s} {'%8.2f %8.2f' % total} "
          f"(load average {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
