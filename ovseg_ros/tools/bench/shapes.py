"""``ovseg-bench --shapes``: the cost of hostile frame shapes next to a 640x480 frame.

    ovseg-bench --shapes --threads 2                     # the tiny presets, all shapes
    ovseg-bench --shapes --preset proxyclip-tiny --sizes 640x480,1000x3,3840x2160

Per preset and shape: the median and fastest time of ``predict`` (after one warm-up; the
ratio to 640x480 uses the fastest, least disturbed by other jobs), the frame's
peak memory (process peak RSS reset before the frames, minus the RSS before them), the
pixels the image model received, ProxyCLIP's windows, and whether a limit clamped the
resize (``Prediction.notes``). The worst accepted shape (largest time) is reported
next to 640x480 with both ratios. Frames are the benchmark's synthetic 640x480 scene
resized to each shape, so every shape has the same content.
"""
from __future__ import annotations

import gc
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np

from .common import (_jsonable, _status_kib, build_config, parse_size, reset_peak_rss,
                     synthetic_frame)
from .machine import machine_info, matmul_ceiling

#: (width, height): the baseline, elongated, tiny and 4K frames of docs/node.md
SHAPES = ("640x480", "1000x3", "3x1000", "4000x2", "2x4000", "1x1", "2x2", "3840x2160")
TINY_PRESETS = ("proxyclip-tiny", "fcclip-tiny", "ovseg-tiny")


def frame(scene: np.ndarray, width: int, height: int) -> np.ndarray:
    """``scene`` (the benchmark's synthetic 640x480 frame) resized to width x height."""
    import cv2

    return cv2.resize(scene, (width, height), interpolation=cv2.INTER_AREA)


def measure(seg, rgb: np.ndarray, iters: int, reset_peak_rss: Callable[[], bool],
            status_kib: Callable[[str], Optional[int]]) -> Dict[str, Any]:
    """One preset at one frame: ``reset_peak_rss`` and ``status_kib`` are the benchmark's
    peak-RSS helpers (ovseg_ros/tools/bench/common.py)."""
    height, width = rgb.shape[:2]
    pixels: List[int] = []
    hook = seg.engine.image_model.register_forward_pre_hook(
        lambda _m, args: pixels.append(int(args[0].shape[0] * args[0].shape[-2] *
                                           args[0].shape[-1])))
    try:
        pred = seg.predict(rgb)                                   # warm-up
        rss0 = status_kib("VmRSS")
        peak_ok = reset_peak_rss()
        pixels.clear()
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            pred = seg.predict(rgb)
            times.append(time.perf_counter() - t0)
        hwm = status_kib("VmHWM")
    finally:
        hook.remove()
    row: Dict[str, Any] = {
        "shape": f"{width}x{height}", "ms": 1000 * statistics.median(times),
        # the fastest frame: the least disturbed by other jobs on a shared machine
        "ms_min": 1000 * min(times),
        "peak_mib": (hwm - rss0) / 1024 if peak_ok and hwm and rss0 else None,
        "process_peak_mib": hwm / 1024 if hwm else None,
        "model_pixels": sum(pixels) // iters, "notes": list(pred.notes)}
    if seg.config["engine"] == "proxyclip":
        row["windows"] = len(seg.engine.window_layout(height, width)[1])
    return row


def _line(preset: str, label: str, r: Dict[str, Any], base: Dict[str, Any]) -> str:
    peak = f"{r['peak_mib']:.0f}" if r["peak_mib"] is not None else "–"
    process = f"{r['process_peak_mib']:.0f}" if r["process_peak_mib"] is not None else "–"
    return (f"| {preset} | {label} | {r['ms']:.1f} | {r['ms_min']:.1f} | "
            f"{r['ms_min'] / base['ms_min']:.2f} | {peak} | "
            f"{process} | "
            f"{r['model_pixels']} | {r.get('windows', '–')} | {'yes' if r['notes'] else ''} |")


def markdown(results: List[Dict[str, Any]], header: str) -> str:
    lines = [header, "", "| preset | frame (WxH) | ms median | ms min | min ×640x480 | frame peak "
             "MiB | process peak MiB | model pixels | windows | clamped |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        base = res["rows"][0]
        lines += [_line(res["preset"], r["shape"], r, base) for r in res["rows"]]
        lines.append(_line(res["preset"], f"**worst: {res['worst']['shape']}**", res["worst"],
                           base))
    notes = sorted({n for res in results for r in res["rows"] for n in r["notes"]})
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + "\n"


def run(args, argv) -> int:
    import torch

    from ...segmenter import load_segmenter

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    presets = args.preset or list(TINY_PRESETS)
    sizes = [parse_size(s) for s in (args.sizes.split(",") if args.sizes
                                     else SHAPES)]
    iters = args.iters or 3
    machine = machine_info(args.device)
    ceilings = {p: matmul_ceiling(p, args.device) for p in ("fp32", "bf16")}
    load = os.getloadavg()[0]
    header = (f"## Frame shapes: time and memory per frame\n\n"
              f"Machine: {machine['cpu']}, {torch.get_num_threads()} threads, fp32, load "
              f"average {load:.2f}; matmul ceiling fp32 {ceilings['fp32']:.0f} GFLOP/s, bf16 "
              f"{ceilings['bf16']:.0f} GFLOP/s; medians of {iters} frames after one warm-up; "
              "frame peak = process peak RSS during the frames minus RSS before them; process "
              "peak = the peak RSS itself (models of the earlier presets included).")
    print(header, flush=True)
    scene = synthetic_frame(640, 480)
    results = []
    for preset in presets:
        seg = load_segmenter(build_config(preset, "torch", "fp32", args))
        rows = []
        for w, h in sizes:
            rows.append(measure(seg, frame(scene, w, h), iters,
                                             reset_peak_rss, _status_kib))
            print(f"{preset} {rows[-1]}", flush=True)
        worst = max(rows[1:] or rows, key=lambda r: r["ms_min"])
        results.append({"preset": preset, "rows": rows, "worst": worst})
        del seg
        gc.collect()
    md = markdown(results, header)
    print(md)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "shapes.json").write_text(json.dumps(_jsonable(
        {"created_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine,
         "threads": torch.get_num_threads(), "precision": "fp32", "loadavg": load,
         "matmul_ceiling_gflops": ceilings, "command": " ".join(["ovseg-bench", *argv]),
         "results": results}), indent=2))
    (out / "shapes.md").write_text(md)
    print(f"wrote {out / 'shapes.json'} and {out / 'shapes.md'}")
    return 0
