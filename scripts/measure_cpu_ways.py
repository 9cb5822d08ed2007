#!/usr/bin/env python3
"""Model-level CPU speed of ProxyCLIP under each way of running it, with labels against
fp32 on the bundled photos. Random weights (speed does not depend on them).

    python scripts/measure_cpu_ways.py --threads 2 [--shape cpu_realtime|default]
                                       [--vfm vit_small_patch8_224.dino]
    python scripts/measure_cpu_ways.py --ways bf16 --profile      # per-op table of the trunks

Shapes: ``cpu_realtime`` is config/cpu_realtime.yaml's (CLIP ViT-B/16 + DINO ViT-S/16,
one 224 window); ``default`` the published preset (B/16 + DINO B/8, sliding 336
windows: two per 640x480 frame, one batch). ``--vfm`` replaces the VFM.

A way is a precision and options joined by '+'. Precisions: fp32 eager; bf16 (the shipped
bf16 path); ``int8`` (the shipped int8 path: dynamic int8 linears in both trunks,
``precision: int8``); ``int8-clip-mlp`` (int8 with CLIP's attention projections left
fp32, as torch's ``quantize_dynamic`` alone leaves them). Options (fp32 / bf16 only: int8
runs eagerly):

- ``compile``: torch.compile of the whole image model (Inductor, ``dynamic=False``: the
  window never changes shape), as the ``torch_compile`` setting does;
- ``freeze``: Inductor's ``freezing`` (weights become constants: oneDNN prepacks them and
  folds what depends only on them; what ``torch_compile`` does on the CPU);
- ``autotune``: Inductor's ``max_autotune`` (its C++ GEMM templates benchmarked against
  oneDNN per shape; ``mode="max-autotune-no-cudagraphs"`` on a CPU);
- ``trunks``: compile the CLIP and the DINO trunk each, the proxy attention and head eager.

SDPA is already what the ViTs use (timm fused attention, open_clip's MultiheadAttention):
it is printed, not toggled. channels_last only touches the patch-embedding convolution of a
ViT and is a CUDA-only option of the torch backend.

``--interleave`` keeps every way loaded and times them in turns (one model call of each
way, then one predict of each, ``--iters`` rounds, in a worker thread), so a neighbour's
load falls on all ways alike; it prints each way's medians, the median of its per-round
ratio to the first way (the reference: any way) and the timed frame's labels against
it. Use it on a shared machine.

Inductor's cache: a fresh directory per run unless ``--inductor-cache DIR`` names one, so a
way's "first frame" is a cold compile; run twice with the same directory for the cache-hit
start (a new process, as a restarted node).

Prints machine, threads, load average and the fp32/bf16 matmul ceiling (2048², the
bench's ``matmul_ceiling``) and the int8 one (``torch._int_mm``, GOP/s) measured in the
same run, then one line per way: image-model ms at the predict's window shape (p50 of the
timed calls), full predict ms at 640x480, first frame (compile) s, the FLOPs of a frame
per second as a share of the way's arithmetic ceiling, and labels equal to fp32 on the
photos (mean and worst of four).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

#: ways that are a precision setting plus a change made here (the setting they load as)
WAYS = {"int8-clip-mlp": "fp32"}
#: options a fp32 / bf16 way may add
OPTIONS = ("compile", "freeze", "autotune", "trunks")


def _load(cfg: dict, way: str):
    """The segmenter of a precision (compile options are applied by ``_compile``), or of a
    ``WAYS`` change."""
    from ovseg_ros.segmenter import load_segmenter

    prec = way.split("+")[0]
    seg = load_segmenter(dict(cfg, precision=WAYS.get(prec, prec)))
    if prec == "int8-clip-mlp":
        seg.engine.image_model.quantize_int8(clip_attention=False)
    return seg


def _window_batch(seg, rgb) -> torch.Tensor:
    """A random input of the shape the image model gets for ``rgb`` (its window batch)."""
    shapes = []
    hook = seg.engine.image_model.register_forward_pre_hook(
        lambda m, args: shapes.append(tuple(args[0].shape)))
    try:
        seg.predict(rgb)
    finally:
        hook.remove()
    return torch.rand(shapes[0])


def _interleaved(cfg: dict, ways, frames, iters: int, threads: int) -> int:
    """Every way loaded, timed in turns; medians, per-round ratios to the first way and the
    labels of the timed frame against the first way's."""
    from ovseg_ros.tools.bench import cpu_machine_line

    segs = {}
    for way in ways:
        torch.manual_seed(0)
        segs[way] = _load(cfg, way)
        segs[way].predict(frames[2])                   # vocabulary, first-call costs
    xs = {way: _window_batch(seg, frames[2]) for way, seg in segs.items()}
    model = {w: [] for w in ways}
    frame = {w: [] for w in ways}
    labels = {}

    def rounds():
        for _ in range(iters):
            for way, seg in segs.items():
                t0 = time.perf_counter()
                seg.engine.backend(xs[way])
                model[way].append(time.perf_counter() - t0)
            for way, seg in segs.items():
                t0 = time.perf_counter()
                labels[way] = seg.predict(frames[1]).semantic
                frame[way].append(time.perf_counter() - t0)

    # in a worker thread, as the node runs its model: on shared cores the main thread
    # measured 5-10x slower (docs/benchmarks/cpu.md, "Main thread")
    with ThreadPoolExecutor(1) as pool:
        pool.submit(rounds).result()
    ref = ways[0]
    for way in ways:
        m_ratio = np.median(np.array(model[way]) / np.array(model[ref]))
        f_ratio = np.median(np.array(frame[way]) / np.array(frame[ref]))
        x = xs[way]
        print(f"{way:14s} model {1000 * np.median(model[way]):7.1f} ms "
              f"({x.shape[0]}x{x.shape[2]}x{x.shape[3]}), {m_ratio:.3f}x {ref} | predict "
              f"640x480 {1000 * np.median(frame[way]):7.1f} ms, {f_ratio:.3f}x {ref} | "
              f"labels = {ref} {100 * float((labels[way] == labels[ref]).mean()):.2f}% | "
              f"{iters} rounds in turns | load {os.getloadavg()[0]:.2f}", flush=True)
    print("end: " + cpu_machine_line(threads, int8=True)[0])   # load, ceilings again
    return 0


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
    from ovseg_ros.presets import preset_group
    from ovseg_ros.tools.bench import (VOCABULARY, _median_seconds, count_flops, cpu_machine_line,
                                       photo_frames, synthetic_frame)

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--shape", default="cpu_realtime", choices=("cpu_realtime", "default"))
    p.add_argument("--vfm", default=None, help="timm VFM instead of the shape's")
    p.add_argument("--ways", default="fp32,bf16,bf16+compile+freeze,int8",
                   help="comma list, fp32 first (the labels' and FLOPs' reference)")
    p.add_argument("--interleave", action="store_true",
                   help="every way loaded at once, timed in turns (see the module doc)")
    p.add_argument("--inductor-cache", default="",
                   help="Inductor cache directory (default: a fresh one, i.e. cold compiles)")
    p.add_argument("--profile", action="store_true",
                   help="print the per-op profile of each eager way's image model")
    p.add_argument("--profile-rows", type=int, default=25)
    args = p.parse_args()
    ways = args.ways.split(",")
    if ways[0] != "fp32" and not args.interleave:
        p.error("--ways must start with fp32 (with --interleave the first way is the reference)")
    for way in ways:
        prec, *opts = way.split("+")
        if prec not in ("fp32", "bf16", "int8", "int8-clip-mlp") or not set(opts) <= set(OPTIONS) \
                or (opts and prec.startswith("int8")):
            p.error(f"way {way!r}: fp32/bf16 with options from {OPTIONS}, or int8/int8-clip-mlp")
    if args.interleave and any("+" in w for w in ways):
        p.error("--interleave times precisions only (no compile options)")
    # before any compile: Inductor reads its cache directory from the environment
    cache = args.inductor_cache or tempfile.mkdtemp(prefix="ovseg_ways_inductor_")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.abspath(cache)
    torch.set_num_threads(args.threads)
    line, ceil = cpu_machine_line(args.threads, f"shape {args.shape}; inductor cache {cache}",
                                  int8=True)
    print(line, flush=True)
    frames = [synthetic_frame(640, 480, s) for s in range(3)]
    photos = photo_frames(640, 480)
    shape = {} if args.shape == "default" else preset_group(args.shape, "proxyclip")
    shape = {k: v for k, v in shape.items() if k != "torch_compile"}   # ways choose it
    if args.vfm:
        shape["proxyclip.vfm_model"] = args.vfm
    base_cfg = {**shape, "engine": "proxyclip", "random_init": True, "device": "cpu",
                "num_threads": args.threads, "vocabulary": VOCABULARY,
                "text_cache_dir": "/tmp/ovseg_measure_ways_text"}
    print(f"models: {base_cfg.get('proxyclip.clip_model', 'ViT-B-16')} + "
          f"{base_cfg.get('proxyclip.vfm_model', 'vit_base_patch8_224.dino')}", flush=True)
    if args.interleave:
        return _interleaved(base_cfg, ways, frames, args.iters, args.threads)
    ref_labels, flops = None, None
    for way in ways:
        prec, *opts = way.split("+")
        torch.manual_seed(0)
        seg = _load(base_cfg, prec)
        if flops is None:
            seg.predict(frames[1])        # the vocabulary is encoded here, not counted
            flops = count_flops(seg, frames[0])
        x = _window_batch(seg, frames[2])
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
        arith = "bf16" if prec == "bf16" else "int8" if prec.startswith("int8") else "fp32"
        gflops = (flops or 0) / 1e9
        pct = 100 * gflops / (frame_ms / 1000) / ceil[arith] if flops else float("nan")
        print(f"{way:26s} model {model_ms:7.1f} ms ({x.shape[0]}x{x.shape[2]}x{x.shape[3]}) | "
              f"predict 640x480 {frame_ms:7.1f} ms ({1000 / frame_ms:5.2f} FPS) | first frame "
              f"{first:5.1f} s | {gflops:.1f} GFLOP/frame, {pct:4.1f}% of the {arith} ceiling | "
              f"labels = fp32 {np.mean(agree):.2f}% (worst {min(agree):.2f}%) | load "
              f"{os.getloadavg()[0]:.2f}", flush=True)
        seg = None   # free the model before the next way is built
    print("end: " + cpu_machine_line(args.threads, int8=True)[0])   # load, ceilings again
    return 0


if __name__ == "__main__":
    from concurrent.futures import ThreadPoolExecutor

    # in a worker thread, as the node runs its model: on this project's shared cores the
    # same predict in a process's main thread measured 5-10x slower (docs/benchmarks/cpu.md,
    # "Main thread"); torch's thread count is set in that thread (main() does)
    with ThreadPoolExecutor(1) as pool:
        raise SystemExit(pool.submit(main).result())
