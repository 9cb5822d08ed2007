#!/usr/bin/env python3
"""FC-CLIP's pixel decoder alone at real size (ConvNeXt-L widths, 683x512 input padded to
704x512: levels 22x16, 44x32, 88x64 and res2 at 176x128), random weights, interleaved in
one process so that a busy neighbour slows every form alike; the minimum of the rounds:

- fp32, grid_sample form (the path before the gather form; what tracing exports)
- fp32, gather form (eager now; exact)
- bf16: gather form, encoder FFNs and convolutions in bf16 (FCCLIPImageModel's scope)

    python scripts/measure_pixel_decoder.py --threads 2 --rounds 5
"""
from __future__ import annotations

import argparse
import copy
import time
from unittest import mock

import torch


def main() -> int:
    from ovseg_ros.models import deformable_attention
    from ovseg_ros.models.deformable_attention import MSDeformAttn
    from ovseg_ros.models.pixel_decoder import MSDeformAttnPixelDecoder
    from ovseg_ros.models.precision import matmul_weights_to
    from ovseg_ros.tools.bench import cpu_machine_line

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    line, _ = cpu_machine_line(args.threads)
    print(line, flush=True)
    torch.manual_seed(0)
    widths = {"res2": 192, "res3": 384, "res4": 768, "res5": 1536}   # ConvNeXt-L
    fp32 = MSDeformAttnPixelDecoder(widths).eval()
    bf16 = copy.deepcopy(fp32)
    matmul_weights_to(bf16, torch.bfloat16,
                      keep=[a for a in bf16.modules() if isinstance(a, MSDeformAttn)])
    feats = {f"res{i}": torch.randn(1, c, 512 // s, 704 // s) for i, c, s in
             ((2, 192, 4), (3, 384, 8), (4, 768, 16), (5, 1536, 32))}
    grid = mock.patch.object(deformable_attention, "_exporting", lambda: True)

    def run(name):
        with torch.inference_mode():
            if name == "fp32 grid_sample":
                with grid:
                    return fp32(feats)
            if name == "fp32 gather":
                return fp32(feats)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return bf16(feats)

    names = ("fp32 grid_sample", "fp32 gather", "bf16 gather")
    outs = {n: run(n) for n in names}             # warm-up
    ref = outs["fp32 grid_sample"][0]
    best = {n: float("inf") for n in names}
    for _ in range(args.rounds):
        for n in names:
            t0 = time.perf_counter()
            run(n)
            best[n] = min(best[n], time.perf_counter() - t0)
    for n in names:
        diff = float((outs[n][0] - ref).abs().max() / ref.abs().max())
        print(f"{n:17s} min {1000 * best[n]:6.0f} ms ({best['fp32 grid_sample'] / best[n]:.2f}x"
              f" the grid_sample form); mask features max rel. diff {diff:.1e}")
    print("end: " + cpu_machine_line(args.threads)[0])   # the load and ceilings once more
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
