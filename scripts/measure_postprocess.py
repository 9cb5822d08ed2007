#!/usr/bin/env python3
"""ProxyCLIP post-processing alone against the vocabulary size: the operator path (every
synonym at every pixel through two matrix products per chunk, the streamed softmax argmax:
the engine's path whenever the confidence is wanted) against the bounded path
(ovseg_ros/core/bounded_labels.py: the synonyms that can win per 32 x 32 tile, exact; the
engine's path for labels alone), without and with the confidence (``confidence_from_max``
after the bounded labels, measured but not adopted).

No model runs: the window cosines are seeded (ovseg_ros/testing/cosines.py: ``scene``,
regions won by a few synonyms, and ``random``, independent fields: the bounds' worst case)
with the default preset's geometry (640x480 input, 448x336 resized, two 336^2 windows at
stride 224, 21x21 grid, logit scale 40), so the figures isolate the cost that grows with the
synonyms. Prints the machine line (CPU, threads, load, fp32/bf16 matmul ceilings measured
now) before and after, per size and kind the times (best of --repeats), how many pixels'
labels differ between the paths (must be 0), the share of synonym x tile pairs the bounded
path interpolated, the largest relative confidence difference, and the share of softmax
terms below float32 rounding of the sum (what any exact pruning of the confidence could
skip at most).

    .venv/bin/python scripts/measure_postprocess.py --threads 2 --classes 10,150,847
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from ovseg_ros.core.bounded_labels import (bounded_argmax, confidence_from_max,  # noqa: E402
                                           tile_plan)
from ovseg_ros.core.class_names import load_class_file  # noqa: E402
from ovseg_ros.core.postprocess import SoftmaxArgmax, class_chunk  # noqa: E402
from ovseg_ros.core.preprocess import sliding_windows  # noqa: E402
from ovseg_ros.core.window_stitch import Layout, WindowStitch  # noqa: E402
from ovseg_ros.testing.cosines import KINDS, grid_cosines, unit_rows  # noqa: E402
from ovseg_ros.tools.bench.machine import cpu_machine_line  # noqa: E402

SCALE = 40.0          # proxyclip.logit_scale's default


def synonym_classes(num_classes: int) -> torch.Tensor:
    names = load_class_file("ade847").names[:num_classes]
    counts = [len([s for s in n.split(",") if s.strip()]) for n in names]
    return torch.repeat_interleave(torch.arange(num_classes), torch.tensor(counts))


def window_logits(kind: str, num_synonyms: int, windows: int, grid=(21, 21), stride_cells=14,
                  seed: int = 0) -> torch.Tensor:
    """n x S x gh x gw: the windows cut from one seeded grid of cosines, overlapping as the
    sliding windows do (stride 224 px = 14 cells)."""
    gen = torch.Generator().manual_seed(seed)
    text = unit_rows(num_synonyms, 512, gen)
    gh, gw = grid
    frame = grid_cosines(kind, text, gh, gw + stride_cells * (windows - 1), gen)
    return torch.stack([frame[:, :, i * stride_cells:i * stride_cells + gw]
                        for i in range(windows)])


def operator_path(op: WindowStitch, blocks, sc, num_classes, chunk):
    acc = SoftmaxArgmax(sc, num_classes)
    for s0 in range(0, blocks.shape[0], chunk):
        acc.update(op(blocks[s0:s0 + chunk]))
    return acc.result()


def bounded_path(op: WindowStitch, blocks, sc, chunk, confidence: bool):
    found = bounded_argmax(op, blocks, sc)
    conf = confidence_from_max(op, blocks, found.best, chunk) if confidence else None
    return found, conf


def negligible_share(op: WindowStitch, blocks, best, chunk) -> float:
    """Share of the softmax terms exp(z_s - z_max) below 2^-24 / S: dropping all of them
    moves the sum by less than float32 rounding, so no exact formulation can do better than
    skipping these."""
    s = blocks.shape[0]
    cut = -(math.log(s) + 24 * math.log(2))
    below = 0
    for s0 in range(0, s, chunk):
        below += int((op(blocks[s0:s0 + chunk]).sub_(best) < cut).sum())
    return below / (s * best.numel())


def timed(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--classes", default="10,150,847",
                    help="comma-separated class counts (first N ADE-847 classes)")
    ap.add_argument("--kinds", default=",".join(KINDS), help="cosine kinds: scene, random")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs")
    ap.add_argument("--size", default="640x480", help="input WxH")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    w0, h0 = (int(v) for v in args.size.split("x"))
    short = 336
    rh, rw = (short, round(w0 * short / h0)) if h0 <= w0 else (round(h0 * short / w0), short)
    windows = tuple(sliding_windows(rh, rw, 336, 224))
    layout = Layout((21, 21), (336, 336), (0, 0), windows, (rh, rw), (h0, w0))
    op = WindowStitch(layout, SCALE)
    t0 = time.perf_counter()
    plan = tile_plan(op)
    plan_ms = (time.perf_counter() - t0) * 1e3
    print(cpu_machine_line(args.threads, "fp32, torch " + torch.__version__)[0])
    print(f"geometry: input {w0}x{h0}, resized {rw}x{rh}, {len(windows)} windows of 336^2, "
          f"21x21 grid, logit scale {SCALE:g}; {len(plan.tiles)} tiles of {plan.tile}^2 "
          f"(plan with its exactness check {plan_ms:.0f} ms once per layout, exact: "
          f"{plan.exact})")
    print("| cosines | classes | synonyms | operator ms (labels + confidence) | bounded labels "
          "ms | bounded + confidence ms | labels only: speed-up | with confidence: speed-up "
          "| labels differing | pairs interpolated | confidence max rel. diff | "
          "negligible softmax terms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    pixels = h0 * w0
    for kind in args.kinds.split(","):
        for k in (int(v) for v in args.classes.split(",")):
            sc = synonym_classes(k)
            blocks = op.block_matrix(window_logits(kind, sc.numel(), len(windows)))
            chunk = class_chunk(sc.numel(), pixels, 1 << 22)        # the engine's chunks
            t_op, (lab_op, conf_op) = timed(
                lambda: operator_path(op, blocks, sc, k, chunk), args.repeats)
            t_lab, (found, _) = timed(
                lambda: bounded_path(op, blocks, sc, chunk, False), args.repeats)
            t_conf, (found_c, conf) = timed(
                lambda: bounded_path(op, blocks, sc, chunk, True), args.repeats)
            differ = int((found.labels != lab_op).sum()) + int((found_c.labels != lab_op).sum())
            conf_err = float(((conf - conf_op).abs() / conf_op).max())
            share = negligible_share(op, blocks, found.best, chunk)
            print(f"| {kind} | {k} | {sc.numel()} | {t_op * 1e3:.0f} | {t_lab * 1e3:.0f} | "
                  f"{t_conf * 1e3:.0f} | {t_op / t_lab:.1f}x | {t_op / t_conf:.2f}x | "
                  f"{differ} of {pixels} | {100 * found.candidates / found.pairs:.1f}% | "
                  f"{conf_err:.1e} | {100 * share:.1f}% |", flush=True)
    print(cpu_machine_line(args.threads, "at the end")[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
