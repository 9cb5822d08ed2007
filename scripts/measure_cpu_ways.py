#!/usr/bin/env python3
"""Model-level CPU speed of the small ProxyCLIP (config/cpu_realtime.yaml's shape: CLIP
ViT-B/16 + a DINO ViT-S, one 224 window) under each way of running it, with labels
against fp32 on the bundled photos. Random weights (speed does not depend on them).

    python scripts/measure_cpu_ways.py --threads 2 [--vfm vit_small_patch8_224.dino]
    python scripts/measure_cpu_ways.py --ways bf16 --profile      # per-op table of the trunks

A way is a precision (fp32, bf16) and options joined by '+':

- ``compile``: torch.compile of the whole image model (Inductor, ``dynamic=False``: the
  one window never changes shape), as the ``torch_compile`` setting does;
- ``freeze``: Inductor's ``freezing`` (weights become constants: oneDNN prepacks them and
  folds what depends only on them);
- ``autotune``: Inductor's ``max_autotune`` (its C++ GEMM templates benchmarked against
  oneDNN per shape; ``mode="max-autotune-no-cudagraphs"`` on a CPU);
- ``trunks``: compile the CLIP and the DINO trunk each, the proxy attention and head eager;
- ``int8``: dynamic int8 quantisation of every nn.Linear (fp32 activations, VNNI).

SDPA is already what the ViTs use (timm fused attention, open_clip's MultiheadAttention):
it is printed, not toggled. channels_last only touches the patch-embedding convolution of a
ViT and is a CUDA-only option of the torch backend.

Inductor's cache: a fresh directory per run unless ``--inductor-cache DIR`` names one, so a
way's "first frame" is a cold compile; run twice with the same directory for the cache-hit
start (a new process, as a restarted node).

Prints machine, threads, load average and the fp32/bf16 matmul ceiling (2048², the
bench's ``matmul_ceiling``) measured in the same run, then one line per way: image-model
ms at the predict's window shape (p50 of the timed calls), full predict ms at 640x480,
first frame (compile) s, share of the ceiling, and labels equal to fp32 on the photos
(mean and worst of four).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

OPTIONS = ("compile", "freeze", "autotune", "trunks", "int8")


def _quantize_linears(seg) -> None:
    """int8 dynamic quantisation of the image path's nn.Linear layers, in place."""
    from torch.ao.quantization import quantize_dynamic

    backend = seg.engine.backend
    backend.model = quantize_dynamic(backend.model, {torch.nn.Linear}, dtype=torch.qint8)
    backend._run = backend.model


def _compile(seg, opts) -> None:
    """torch.compile the image path in place with the way's Inductor options."""
    options = {"freezing": "freeze" in opts, "max_autotune": "autotune" in opts}
    backend = seg.engine.backend
    model = backend.model
    if "trunks" in opts:
        # the trunks only: stage timers between them keep working (eager code)
        model.clip = torch.compile(model.clip, dynamic=False, options=options)
        model.vfm = torch.compile(model.vfm, dynamic=False, options=options)
        return
    backend._run = torch.compile(model, dynamic=False, options=options)
    backend.torch_compile = True        # the backend switches in-forward profiling off


def _window_shape(seg, frame) -> tuple:
    """The input shape the engine hands its image path for ``frame``."""
    backend = seg.engine.backend
    seen = []
    run = backend._run
    backend._run = lambda x: seen.append(tuple(x.shape)) or run(x)
    try:
        seg.predict(frame)
    finally:
        backend._run = run
    return seen[0]


def _profile(seg, x, rows: int) -> None:
    """Per-op table (self CPU time, input shapes) of one image-model call."""
    from torch.profiler import ProfilerActivity, profile

    backend = seg.engine.backend
    backend(x)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        backend(x)
    print(prof.key_averages(group_by_input_shape=True).table(
        sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=28,
        max_shapes_column_width=70), flush=True)


def main() -> int:
    from ovseg_ros.segmenter import load_segmenter
    from ovseg_ros.tools.bench import (VOCABULARY, _median_seconds, count_flops, cpu_machine_line,
                                       photo_frames, synthetic_frame)

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--vfm", default="vit_small_patch16_224.dino")
    p.add_argument("--ways", default="fp32,bf16,bf16+compile,bf16+compile+freeze")
    p.add_argument("--inductor-cache", default="",
                   help="Inductor cache directory (default: a fresh one, i.e. cold compiles)")
    p.add_argument("--profile", action="store_true",
                   help="print the per-op profile of each eager way's image model")
    p.add_argument("--profile-rows", type=int, default=25)
    args = p.parse_args()
    ways = args.ways.split(",")
    for way in ways:
        prec, *opts = way.split("+")
        if prec not in ("fp32", "bf16") or not set(opts) <= set(OPTIONS):
            p.error(f"way {way!r}: a precision (fp32, bf16) and options from {OPTIONS}")
    # before any compile: Inductor reads its cache directory from the environment
    cache = args.inductor_cache or tempfile.mkdtemp(prefix="ovseg_ways_inductor_")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.abspath(cache)
    torch.set_num_threads(args.threads)
    line, ceil = cpu_machine_line(args.threads, f"vfm {args.vfm}; inductor cache {cache}")
    print(line, flush=True)
    frames = [synthetic_frame(640, 480, s) for s in range(2)]
    photos = photo_frames(640, 480)
    base_cfg = {"engine": "proxyclip", "random_init": True, "device": "cpu",
                "num_threads": args.threads, "vocabulary": VOCABULARY,
                "proxyclip.vfm_model": args.vfm, "proxyclip.sliding_window": False,
                "proxyclip.short_side": 224, "proxyclip.crop_size": 224,
                "text_cache_dir": "/tmp/ovseg_measure_ways_text"}
    ref_labels, flops = None, None
    for way in ways:
        prec, *opts = way.split("+")
        torch.manual_seed(0)
        seg = load_segmenter(dict(base_cfg, precision=prec))
        if flops is None:
            seg.predict(frames[1])        # the vocabulary is encoded here, not counted
            flops = count_flops(seg, frames[0])
        shape = _window_shape(seg, frames[0])
        x = torch.rand(*shape)
        if "int8" in opts:
            _quantize_linears(seg)
        if args.profile and not ({"compile", "trunks"} & set(opts)):
            _profile(seg, x, args.profile_rows)
        if {"compile", "trunks"} & set(opts):
            _compile(seg, opts)
        t0 = time.perf_counter()
        seg.predict(frames[0])            # first frame: compile (if any) happens here
        first = time.perf_counter() - t0
        model_ms = 1000 * _median_seconds(lambda: seg.engine.backend(x), args.iters, 1)
        frame_ms = 1000 * _median_seconds(lambda: seg.predict(frames[1]), args.iters, 1)
        labels = [seg.predict(f).semantic for f in photos]
        if ref_labels is None:
            ref_labels = labels
        agree = [100 * float((a == b).mean()) for a, b in zip(labels, ref_labels)]
        arith = "bf16" if prec == "bf16" else "fp32"
        gflops = (flops or 0) / 1e9
        pct = 100 * gflops / (frame_ms / 1000) / ceil[arith] if flops else float("nan")
        print(f"{way:26s} model {model_ms:7.1f} ms {shape[2]}x{shape[3]} | predict 640x480 "
              f"{frame_ms:7.1f} ms ({1000 / frame_ms:5.2f} FPS) | first frame {first:5.1f} s | "
              f"{gflops:.1f} GFLOP/frame, {pct:4.1f}% of the {arith} ceiling | labels = fp32 "
              f"{np.mean(agree):.2f}% (worst {min(agree):.2f}%) | load "
              f"{os.getloadavg()[0]:.2f}", flush=True)
        seg = None   # free the model before the next way is built
    print("end: " + cpu_machine_line(args.threads)[0])   # the load and ceilings once more
    return 0


if __name__ == "__main__":
    from concurrent.futures import ThreadPoolExecutor

    # in a worker thread, as the node runs its model: on this project's shared cores the
    # same predict in a process's main thread measured 5-10x slower (docs/benchmarks/cpu.md,
    # "Main thread"); torch's thread count is set in that thread (main() does)
    with ThreadPoolExecutor(1) as pool:
        raise SystemExit(pool.submit(main).result())
