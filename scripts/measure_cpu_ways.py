#!/usr/bin/env python3
"""Model-level CPU speed of the small ProxyCLIP (config/cpu_realtime.yaml's shape: CLIP
ViT-B/16 + a DINO ViT-S, one 224 window) under each way of running it, with labels
against fp32 on the same frames. Random weights (speed does not depend on them).

    python scripts/measure_cpu_ways.py --threads 2 [--vfm vit_small_patch8_224.dino]

Ways: fp32 eager; bf16 autocast (the shipped bf16 path); each with torch.compile
(Inductor on the CPU, static shapes: the one 224 window never changes shape); int8
dynamic quantisation of every nn.Linear (fp32 activations, int8 weights, VNNI). SDPA is
already what the ViTs use (timm fused attention, open_clip's MultiheadAttention): it is
printed, not toggled. channels_last only touches the patch-embedding convolution of a
ViT and is a CUDA-only option of the torch backend.

Prints machine, threads, load average and the fp32/bf16 matmul ceiling (2048², the
bench's ``matmul_ceiling``) measured in the same run, then one line per way: image-model
ms (p50 of the timed calls), full predict ms at 640x480, share of the case's ceiling,
and labels equal to fp32.
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch


def _quantize_linears(seg) -> None:
    """int8 dynamic quantisation of the image path's nn.Linear layers, in place."""
    from torch.ao.quantization import quantize_dynamic

    backend = seg.engine.backend
    backend.model = quantize_dynamic(backend.model, {torch.nn.Linear}, dtype=torch.qint8)
    backend._run = backend.model


def main() -> int:
    from ovseg_ros.segmenter import load_segmenter
    from ovseg_ros.tools.bench import (VOCABULARY, _median_seconds, count_flops, cpu_machine_line,
                                       synthetic_frame)

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--vfm", default="vit_small_patch16_224.dino")
    p.add_argument("--ways", default="fp32,bf16,fp32+compile,bf16+compile,fp32+int8")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    line, ceil = cpu_machine_line(args.threads, f"vfm {args.vfm}")
    print(line, flush=True)
    frames = [synthetic_frame(640, 480, s) for s in range(3)]
    base_cfg = {"engine": "proxyclip", "random_init": True, "device": "cpu",
                "num_threads": args.threads, "vocabulary": VOCABULARY,
                "proxyclip.vfm_model": args.vfm, "proxyclip.sliding_window": False,
                "proxyclip.short_side": 224, "proxyclip.crop_size": 224,
                "text_cache_dir": "/tmp/ovseg_measure_ways_text"}
    ref_labels, flops = None, None
    for way in args.ways.split(","):
        prec = way.split("+")[0]
        cfg = dict(base_cfg, precision=prec, torch_compile="compile" in way)
        torch.manual_seed(0)
        seg = load_segmenter(cfg)
        if flops is None:
            seg.predict(frames[2])        # the vocabulary is encoded here, not counted
            flops = count_flops(seg, frames[0])
        if "int8" in way:
            _quantize_linears(seg)
        x = torch.from_numpy(frames[0]).permute(2, 0, 1)[None].float() / 255
        x = torch.nn.functional.interpolate(x, size=(224, 224))
        t0 = time.perf_counter()
        seg.predict(frames[0])            # first frame: compile (if any) happens here
        first = time.perf_counter() - t0
        model_ms = 1000 * _median_seconds(lambda: seg.engine.backend(x), args.iters, 1)
        frame_ms = 1000 * _median_seconds(lambda: seg.predict(frames[1]), args.iters, 1)
        labels = np.stack([seg.predict(f).semantic for f in frames])
        if ref_labels is None:
            ref_labels = labels
        agree = float((labels == ref_labels).mean())
        arith = "bf16" if prec == "bf16" else "fp32"
        gflops = (flops or 0) / 1e9
        pct = 100 * gflops / (frame_ms / 1000) / ceil[arith] if flops else float("nan")
        print(f"{way:14s} model {model_ms:7.1f} ms | predict 640x480 {frame_ms:7.1f} ms "
              f"({1000 / frame_ms:5.2f} FPS) | first frame {first:5.1f} s | "
              f"{gflops:.1f} GFLOP/frame, {pct:4.1f}% of the {arith} ceiling | labels = fp32 "
              f"{100 * agree:.2f}% | load {os.getloadavg()[0]:.2f}", flush=True)
        seg = None   # free the model before the next way is built
    print("end: " + cpu_machine_line(args.threads)[0])   # the load and ceilings once more
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
