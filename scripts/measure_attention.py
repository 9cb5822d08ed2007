#!/usr/bin/env python3
"""Exact attention on the CPU, each way at the presets' shapes: ms, GFLOP/s, max difference.

Shapes (batch x heads x tokens x head size): 1x12x253 (config/cpu_realtime.yaml: one
299x224 window, CLIP B/16's 14x18 patches + CLS; DINO S/16 has the same tokens, 6
heads), 2x12x442 (default preset, CLIP B/16 on two 336 windows), 2x12x1765 (default
preset, DINO B/8 on two 336 windows), 1x12x3530 (twice that length). For fp32 and bf16
inputs (bf16 = the trunks' q/k/v under the bf16 path), every way is timed in rounds that
interleave the ways, so a busy neighbour slows each alike; the minimum over rounds is
printed with its GFLOP/s (4 B H L^2 D flops) and the max |difference| to fp32 SDPA on the
same (bf16-rounded) inputs. Ways:

- ``sdpa``: F.scaled_dot_product_attention in the input dtype (the CPU flash kernel);
- ``sdpa fp32``: bf16 inputs widened to fp32, SDPA, output rounded to bf16;
- ``blocked`` / ``blocked pv32``: tools/bench/attention_ways.blocked_attention, one
  (batch, head) slice at a time (fp32 scores, product with v in the input dtype / in
  fp32), query blocks of 256 KiB of scores;
- ``blocked 1M`` / ``blocked 64K``: the same with 1 MiB / 64 KiB of scores per block;
- ``blocked heads``: all (batch, head) slices in each product, 4 MiB of scores per block
  (fewer, larger calls);
- ``explicit``: one q k^T over all heads, softmax, @ v, in the input dtype (the scores
  of a bf16 input are rounded to bf16: not exact, for the record);
- ``compile`` (``--compile``): torch.compile of the explicit form (Inductor);
- ``flex`` (``--compile``): torch.compile'd flex_attention (Inductor's CPU template).

    python scripts/measure_attention.py --threads 2 --rounds 5 [--compile]
"""
from __future__ import annotations

import argparse
import time
from typing import Callable, Dict

import torch
import torch.nn.functional as F

SHAPES = ((1, 12, 253, 64), (2, 12, 442, 64), (2, 12, 1765, 64), (1, 12, 3530, 64))


def ways(dtype: torch.dtype, compiled: bool) -> Dict[str, Callable]:
    from ovseg_ros.tools.bench.attention_ways import (block_rows, blocked_attention,
                                                      explicit_attention, sdpa_widened)

    w: Dict[str, Callable] = {"sdpa": F.scaled_dot_product_attention}
    if dtype != torch.float32:
        w["sdpa fp32"] = sdpa_widened
    w["blocked"] = blocked_attention
    if dtype != torch.float32:
        w["blocked pv32"] = lambda q, k, v: blocked_attention(q, k, v, pv_dtype=torch.float32)
    w["blocked 1M"] = lambda q, k, v: blocked_attention(
        q, k, v, block=block_rows(k.shape[-2], budget=1 << 20))
    w["blocked 64K"] = lambda q, k, v: blocked_attention(
        q, k, v, block=block_rows(k.shape[-2], budget=1 << 16))
    w["blocked heads"] = lambda q, k, v: blocked_attention(
        q, k, v, group=q.shape[0] * q.shape[1], block=block_rows(
            k.shape[-2], budget=4 << 20, slices=q.shape[0] * q.shape[1]))
    w["explicit"] = explicit_attention
    if compiled:
        from torch.nn.attention.flex_attention import flex_attention

        w["compile"] = torch.compile(explicit_attention, dynamic=False)
        w["flex"] = torch.compile(flex_attention, dynamic=False)
    return w


def main() -> int:
    from ovseg_ros.tools.bench import cpu_machine_line

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="also the torch.compile ways")
    p.add_argument("--lengths", default="", help="only these token counts, e.g. 1765,442")
    p.add_argument("--dtypes", default="fp32,bf16")
    p.add_argument("--ways", default="", help="only these ways (comma-separated names)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    line, _ = cpu_machine_line(args.threads, f"torch {torch.__version__}")
    print(line, flush=True)
    keep = {int(x) for x in args.lengths.split(",") if x}
    print("| shape B x H x L x D | dtype | way | ms (min) | ms (median) | GFLOP/s | "
          "max diff to fp32 SDPA | first call s |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for shape in SHAPES:
        if keep and shape[2] not in keep:
            continue
        b, h, n, d = shape
        gflop = 4 * b * h * n * n * d / 1e9
        for name in args.dtypes.split(","):
            dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[name]
            torch.manual_seed(0)
            # DINO-like logits: q and k of norm ~sqrt(D) x 1.5, so scores spread over ~+-10
            q, k, v = (torch.randn(shape) * 1.5 for _ in range(3))
            q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
            with torch.inference_mode():
                ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
                fns = ways(dtype, args.compile)
                only = [w for w in args.ways.split(",") if w]
                fns = {w: f for w, f in fns.items() if not only or w in only}
                first, diff = {}, {}
                for way, fn in fns.items():
                    t0 = time.perf_counter()
                    out = fn(q, k, v)
                    first[way] = time.perf_counter() - t0
                    diff[way] = (out.float() - ref).abs().max().item()
                times = {way: [] for way in fns}
                for _ in range(args.rounds):
                    for way, fn in fns.items():
                        t0 = time.perf_counter()
                        fn(q, k, v)
                        times[way].append(time.perf_counter() - t0)
            for way, ts in times.items():
                ts.sort()
                best, med = ts[0] * 1e3, ts[len(ts) // 2] * 1e3
                print(f"| {b}x{h}x{n}x{d} | {name} | {way} | {best:.1f} | {med:.1f} | "
                      f"{gflop / ts[0]:.0f} | {diff[way]:.2e} | {first[way]:.2f} |", flush=True)
    print("end: " + cpu_machine_line(args.threads)[0])   # the load and ceilings once more
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
