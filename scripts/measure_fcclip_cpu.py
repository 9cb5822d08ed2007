#!/usr/bin/env python3
"""FC-CLIP / MAFT+ at real size (ConvNeXt-L CLIP, 250 queries, 640x480 frame resized to
683x512), random weights, on the CPU: per-stage time of fp32 and bf16, and of the
grid_sample form of the deformable sampling (the path before the gather form; it is what
tracing exports) and of the reference-order form (``*.deformable_sampling:
reference_order``) on the same fp32 model in the same run. Labels of bf16 and of the
grid_sample form against fp32 on synthetic frames and scikit-image photos.

    python scripts/measure_fcclip_cpu.py --threads 2 [--engine maftplus] [--rounds 2]

The bf16 path before this change ran the whole pixel decoder in fp32 with grid_sample;
its figure is composed from this run's stages: bf16 total - bf16 pixel_decoder + the
grid_sample fp32 pixel_decoder (the trunk and the fp32 transformer decoder are the
same code in both). Prints machine, threads, load average, fp32/bf16 matmul ceilings.
"""
from __future__ import annotations

import argparse
import contextlib
import os
from unittest import mock

import numpy as np
import torch


def main() -> int:
    from ovseg_ros.models import deformable_attention
    from ovseg_ros.segmenter import load_segmenter
    from ovseg_ros.tools.bench import (VOCABULARY, cpu_machine_line, photo_frames,
                                       synthetic_frame)

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--engine", default="fcclip", choices=["fcclip", "maftplus"])
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    line, _ = cpu_machine_line(args.threads, f"engine {args.engine}")
    print(line, flush=True)
    e = args.engine
    segs = {}
    for prec in ("fp32", "bf16"):
        torch.manual_seed(0)
        segs[prec] = load_segmenter({
            "engine": e, "random_init": True, "device": "cpu", "precision": prec,
            "num_threads": args.threads, "vocabulary": VOCABULARY, f"{e}.short_side": 512,
            f"{e}.max_size": 853, "text_cache_dir": "/tmp/ovseg_measure_fcclip_text"})
    frames = [synthetic_frame(640, 480, 0)]
    grid = mock.patch.object(deformable_attention, "_exporting", lambda: True)

    @contextlib.contextmanager
    def reference_order():
        deformable_attention.set_sampling(segs["fp32"].engine.image_model, "reference_order")
        try:
            yield
        finally:
            deformable_attention.set_sampling(segs["fp32"].engine.image_model, "gather")

    # name -> (segmenter, a new context manager per frame that sets the form up)
    runs = {"fp32": (segs["fp32"], contextlib.nullcontext),
            "fp32 grid_sample": (segs["fp32"], lambda: grid),
            "fp32 reference_order": (segs["fp32"], reference_order),
            "bf16": (segs["bf16"], contextlib.nullcontext)}
    best: dict = {}
    for name, (seg, form) in runs.items():       # warm-up (and the vocabulary encoding)
        with form():
            seg.predict(frames[0])
    for r in range(args.rounds):
        for name, (seg, form) in runs.items():
            with form():
                t = seg.predict(frames[0]).timings
            for k, v in t.items():
                best.setdefault(name, {})[k] = min(best.get(name, {}).get(k, 1e9), v)
            print(f"round {r} {name}: total {1000 * t['total']:.0f} ms, load "
                  f"{os.getloadavg()[0]:.2f}", flush=True)
    stages = ("backbone", "pixel_decoder", "transformer_decoder", "clip_pool", "classify",
              "post", "total")
    for name, t in best.items():
        print(f"{name:20s} min ms: " + ", ".join(f"{k} {1000 * t[k]:.0f}" for k in stages
                                                   if k in t))
    old_bf16 = best["bf16"]["total"] - best["bf16"]["pixel_decoder"] \
        + best["fp32 grid_sample"]["pixel_decoder"]
    print(f"bf16 before (composed) {1000 * old_bf16:.0f} ms; fp32/bf16 speed-up now "
          f"{best['fp32']['total'] / best['bf16']['total']:.2f}x, before "
          f"{best['fp32 grid_sample']['total'] / old_bf16:.2f}x")
    check = frames + [synthetic_frame(640, 480, 1)]
    try:
        check += photo_frames(640, 480)
    except Exception as exc:          # scikit-image photos are optional
        print(f"no photos: {exc}")
    ref = np.stack([segs["fp32"].predict(f).semantic for f in check])
    with grid:
        old = np.stack([segs["fp32"].predict(f).semantic for f in check])
    b16 = np.stack([segs["bf16"].predict(f).semantic for f in check])
    print(f"labels on {len(check)} frames: grid_sample form = gather form "
          f"{100 * (old == ref).mean():.3f}%; bf16 = fp32 {100 * (b16 == ref).mean():.3f}% "
          f"(classes present in fp32: {len(np.unique(ref))})")
    print("end: " + cpu_machine_line(args.threads)[0])   # the load and ceilings once more
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
