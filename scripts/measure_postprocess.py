#!/usr/bin/env python3
"""ProxyCLIP post-processing alone against the vocabulary size: window stitching as two
matrix products (ovseg_ros/core/window_stitch.py) against the former step-by-step chain
(bilinear upsample per window, stitch, resize), both feeding the streamed softmax argmax.

No model runs: the window logits are synthetic cosines with the default preset's
geometry (640x480 input, 448x336 resized, two 336^2 windows at stride 224, 21x21 grid),
so the figures isolate the cost that grows with the synonyms. Prints the machine, the
fp32 matmul ceiling measured in the same run, per-size times, and how many pixels'
labels differ between the two paths (and between two chunk sizes of the former path,
the rounding noise both share).

    .venv/bin/python scripts/measure_postprocess.py --threads 2 --classes 10,150,847
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ovseg_ros.core.class_names import load_class_file  # noqa: E402
from ovseg_ros.core.postprocess import SoftmaxArgmax, class_chunk  # noqa: E402
from ovseg_ros.core.preprocess import sliding_windows  # noqa: E402
from ovseg_ros.core.window_stitch import Layout, WindowStitch  # noqa: E402
from ovseg_ros.tools.bench import cpu_model, matmul_ceiling  # noqa: E402

SCALE = 100.0


def synonym_classes(num_classes: int) -> torch.Tensor:
    names = load_class_file("ade847").names[:num_classes]
    counts = [len([s for s in n.split(",") if s.strip()]) for n in names]
    return torch.repeat_interleave(torch.arange(num_classes), torch.tensor(counts))


def window_logits(num_synonyms: int, grid=(21, 21), windows: int = 2, dim: int = 512,
                  seed: int = 0) -> torch.Tensor:
    """Cosines of smooth unit patch features with unit text rows: n x S x gh x gw."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(windows, dim, *grid, generator=g)
    feats = F.avg_pool2d(feats, 3, stride=1, padding=1, count_include_pad=False)
    feats = F.normalize(feats, dim=1)
    text = F.normalize(torch.randn(num_synonyms, dim, generator=g), dim=-1)
    return torch.einsum("behw,se->bshw", feats, text)


def former_chain(low, layout: Layout, chunk: int):
    (ph, pw), (top, left), (rh, rw), (h0, w0) = (layout.padded, layout.pad_top_left,
                                                  layout.resized, layout.size)
    windows = layout.windows
    wh, ww = windows[0][1] - windows[0][0], windows[0][3] - windows[0][2]
    count = torch.zeros((1, rh, rw))
    for y1, y2, x1, x2 in windows:
        count[:, y1:y2, x1:x2] += 1
    for s0 in range(0, low.shape[1], chunk):
        up = F.interpolate(low[:, s0:s0 + chunk], size=(ph, pw), mode="bilinear",
                           align_corners=False)[:, :, top:top + wh, left:left + ww]
        acc = torch.zeros((up.shape[1], rh, rw))
        for k, (y1, y2, x1, x2) in enumerate(windows):
            acc[:, y1:y2, x1:x2] += up[k]
        out = acc.div_(count)
        if (rh, rw) != (h0, w0):
            out = F.interpolate(out[None], size=(h0, w0), mode="bilinear",
                                align_corners=False)[0]
        yield out.mul_(SCALE)


def operator_chain(low, layout: Layout, chunk: int):
    op = WindowStitch(layout, SCALE)
    blocks = op.block_matrix(low)
    for s0 in range(0, blocks.shape[0], chunk):
        yield op(blocks[s0:s0 + chunk])


def decide(chunks, synonym_class, num_classes):
    acc = SoftmaxArgmax(synonym_class, num_classes)
    for z in chunks:
        acc.update(z)
    return acc.result()


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
    ap.add_argument("--repeats", type=int, default=2, help="best of this many runs")
    ap.add_argument("--size", default="640x480", help="input WxH")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    w0, h0 = (int(v) for v in args.size.split("x"))
    short = 336
    rh, rw = (short, round(w0 * short / h0)) if h0 <= w0 else (round(h0 * short / w0), short)
    windows = tuple(sliding_windows(rh, rw, 336, 224))
    layout = Layout((21, 21), (336, 336), (0, 0), windows, (rh, rw), (h0, w0))
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{args.threads} threads, fp32, load average {os.getloadavg()[0]:.2f}")
    print(f"geometry: input {w0}x{h0}, resized {rw}x{rh}, {len(windows)} windows of 336^2, "
          f"21x21 grid; fp32 matmul ceiling {matmul_ceiling('fp32', 'cpu'):.0f} GFLOP/s")
    print("| classes | synonyms | former chain ms | operator ms | speed-up | "
          "labels differing (former vs operator) | (former, two chunk sizes) | "
          "confidence max rel. diff |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    pixels = h0 * w0
    for k in (int(v) for v in args.classes.split(",")):
        sc = synonym_classes(k)
        low = window_logits(sc.numel())
        chunk_old = class_chunk(sc.numel(), pixels)              # the former 8 Mi budget
        chunk_new = class_chunk(sc.numel(), pixels, 1 << 22)
        t_old, (lab_old, conf_old) = timed(
            lambda: decide(former_chain(low, layout, chunk_old), sc, k), args.repeats)
        t_new, (lab_new, conf_new) = timed(
            lambda: decide(operator_chain(low, layout, chunk_new), sc, k), args.repeats)
        lab_alt, _ = decide(former_chain(low, layout, max(1, chunk_old // 3)), sc, k)
        conf_err = float(((conf_new - conf_old).abs() / conf_old).max())
        print(f"| {k} | {sc.numel()} | {t_old * 1e3:.0f} | {t_new * 1e3:.0f} | "
              f"{t_old / t_new:.2f}x | {int((lab_old != lab_new).sum())} of {pixels} | "
              f"{int((lab_old != lab_alt).sum())} | {conf_err:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
