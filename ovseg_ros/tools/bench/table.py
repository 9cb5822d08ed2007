"""``ovseg-bench``'s engine table: every preset x backend x precision x size case built
through the public API and timed (frames per second, latency, first frame, memory, FLOPs,
the share of the matmul ceiling, label agreement with fp32), optionally per vocabulary size.
"""
from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from .common import (_jsonable, _status_kib, build_config, parse_size, reset_peak_rss,
                     synthetic_frame)
from .machine import REFERENCE_CEILING_GFLOPS, machine_info, matmul_ceiling
from .photos import photo_agreement
from .table_report import markdown
from .vocab import labels_only_frames, measure_text, vocabulary_of_size

QUICK = dict(presets=["proxyclip-tiny", "fcclip-tiny"], backends=["torch", "onnxruntime"],
             precisions=["fp32", "bf16"], sizes=["160x120", "320x240"], iters=5, warmup=1)


@dataclass
class Case:
    preset: str
    backend: str
    precision: str
    size: str
    config: Dict[str, Any] = field(default_factory=dict)
    vocab_axis: bool = False     # measure text encoding and frame memory for this case


def count_flops(seg, rgb) -> Optional[int]:
    """FLOPs of one predict() as torch executes it, attention included (only meaningful on
    the torch backend; see flops.py)."""
    try:
        from .flops import count_call_flops
    except ImportError:
        return None
    return count_call_flops(lambda: seg.predict(rgb))


def run_case(case: Case, rgb: np.ndarray, args, baseline: Optional[np.ndarray]) -> Dict[str, Any]:
    import torch

    from ...segmenter import load_segmenter

    rec: Dict[str, Any] = {"preset": case.preset, "backend": case.backend,
                           "precision": case.precision, "size": case.size,
                           "settings": {k: v for k, v in case.config.items()
                                        if k not in ("vocabulary", "text_cache_dir")}}
    gc.collect()
    dev = torch.device(args.device)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    rss_reset = reset_peak_rss()
    rss_start = _status_kib("VmRSS")
    t0 = time.perf_counter()
    try:
        if case.vocab_axis:
            seg = load_segmenter(case.config)
            rec.update(measure_text(seg, case.config))
        else:
            seg = load_segmenter(case.config)
        # which arithmetic each stage ran in (the resolved precision, per stage)
        rec["stage_precision"] = seg.describe().get("stage_precision", {})
        pred = seg.predict(rgb)
    except Exception as exc:  # a case that cannot run is reported, the others still run
        rec["error"] = f"{type(exc).__name__}: {exc}"
        return rec
    rec["first_frame_s"] = time.perf_counter() - t0
    rec["random_weights"] = bool(pred.random_weights)
    for _ in range(max(0, args.warmup - 1)):
        seg.predict(rgb)
    frame_rss_reset = case.vocab_axis and reset_peak_rss()
    frame_rss_start = _status_kib("VmRSS")
    lat: List[float] = []
    stages: Dict[str, List[float]] = {}
    t_budget = time.perf_counter()
    while len(lat) < args.iters:
        t1 = time.perf_counter()
        pred = seg.predict(rgb)
        lat.append(time.perf_counter() - t1)
        for k, v in pred.timings.items():
            stages.setdefault(k, []).append(float(v))
        if len(lat) >= 2 and time.perf_counter() - t_budget > args.max_case_seconds:
            break
    if case.vocab_axis:
        rec.update(labels_only_frames(seg, rgb, len(lat)))
    lat_sorted = sorted(lat)
    rec.update({
        "iterations": len(lat),
        "fps": len(lat) / sum(lat),
        "latency_ms_mean": 1000 * statistics.fmean(lat),
        "latency_ms_min": 1000 * lat_sorted[0],
        "latency_ms_p50": 1000 * float(np.percentile(lat_sorted, 50)),
        "latency_ms_p95": 1000 * float(np.percentile(lat_sorted, 95)),
        "stages_ms": {k: 1000 * statistics.fmean(v) for k, v in stages.items()},
        "threads": torch.get_num_threads(),
    })
    if dev.type == "cuda":
        rec["peak_memory_mib"] = torch.cuda.max_memory_allocated(dev) / 2 ** 20
        rec["memory_kind"] = "torch.cuda.max_memory_allocated"
    else:
        peak = _status_kib("VmHWM")
        rec["peak_memory_mib"] = peak / 1024 if peak else None
        rec["memory_kind"] = "process peak RSS (VmHWM" + (", reset per case)" if rss_reset
                                                           else ", since process start)")
        if rss_start and peak:
            rec["memory_increase_mib"] = (peak - rss_start) / 1024
        if frame_rss_reset and peak:
            rec["frame_peak_memory_mib"] = peak / 1024
            rec["frame_memory_increase_mib"] = (peak - frame_rss_start) / 1024
    rec["semantic"] = pred.semantic
    if baseline is not None and baseline.shape == pred.semantic.shape:
        rec["labels_equal_fp32_pct"] = 100.0 * float((pred.semantic == baseline).mean())
    if getattr(args, "photos", False):
        rec.update(photo_agreement(seg, case, rgb.shape))
    if case.backend == "torch" and case.precision == "fp32" and args.flops:
        rec["flops_per_frame"] = count_flops(seg, rgb)
    try:
        rec["describe"] = _jsonable(seg.describe())
    except Exception:  # describe is informative only
        pass
    del seg
    return rec



def run(p: argparse.ArgumentParser, args, argv: Optional[List[str]]) -> int:
    """Every preset x backend x precision x size (x vocabulary size) case, timed; ``p``
    reports bad lists as usage errors."""
    import torch

    # here, not at module scope: see the package's imports (cameras runs as __main__)
    from .cameras import markdown_section, run_presets

    quick = args.quick or not args.preset
    presets = args.preset or QUICK["presets"]
    backends = (args.backends.split(",") if args.backends else QUICK["backends"])
    precisions = (args.precisions.split(",") if args.precisions else QUICK["precisions"])
    sizes = (args.sizes.split(",") if args.sizes else QUICK["sizes"])
    # check every list before the (slow) ceiling measurement: a typo used to end in a
    # traceback (--precisions, --device) or in a table of nothing but failed cases (--backends)
    from ...config import BACKENDS

    for b in backends:
        if b not in BACKENDS:
            p.error(f"--backends: unknown backend {b!r}; choose from {', '.join(BACKENDS)}")
    for pr in precisions:
        if pr not in ("fp32", "bf16", "fp16", "int8"):
            p.error(f"--precisions: unknown precision {pr!r}; choose from fp32, bf16, fp16, "
                    "int8 (its ceiling: the int8 matmul, GOP/s)")
    for sz in sizes:
        parse_size(sz)
    try:
        vocab_sizes = [int(v) for v in args.vocab_sizes.split(",")] if args.vocab_sizes else []
    except ValueError:
        p.error(f"--vocab-sizes: {args.vocab_sizes!r} is not a comma list of integers")
    vocabularies = [vocabulary_of_size(n) for n in vocab_sizes] or [None]
    try:
        dev = torch.device(args.device)
    except RuntimeError as exc:
        p.error(f"--device {args.device!r}: {exc}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        p.error(f"--device {args.device}: CUDA is not available on this machine; use --device cpu")
    args.iters = args.iters or (QUICK["iters"] if quick else 10)
    args.warmup = max(1, args.warmup or QUICK["warmup"])
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()

    machine = machine_info(args.device)
    ceilings = {}
    dev_type = torch.device(args.device).type
    for prec in sorted(set(precisions) | {"fp32"}):
        if prec == "fp16" and dev_type == "cpu":
            continue
        ceilings[prec] = matmul_ceiling(prec, args.device)
    print(f"machine: {machine['cpu']}, {machine['cpus_usable']} CPUs usable, GPU "
          f"{machine['gpu'] or 'none'}; {threads} thread(s); ceilings "
          + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in ceilings.items()), flush=True)

    results = []
    for preset in presets:
        for size in sizes:
            w, h = parse_size(size)
            rgb = synthetic_frame(w, h)
            baseline: Dict[Optional[int], np.ndarray] = {}     # per vocabulary size
            flops: Dict[Optional[int], Optional[int]] = {}
            # fp32 torch first: it is the reference for label agreement and FLOPs
            order = sorted(((b, pr) for b in backends for pr in precisions),
                           key=lambda bp: (bp != ("torch", "fp32"), backends.index(bp[0]),
                                           precisions.index(bp[1])))
            cases = [(b, pr, v) for b, pr in order for v in vocabularies]
            for backend, prec, vocab in cases:
                case = Case(preset, backend, prec, size,
                            build_config(preset, backend, prec, args, vocab),
                            vocab_axis=vocab is not None)
                if vocab is not None:
                    # a fresh text cache per case: the encoding measured is the first one
                    import tempfile

                    case.config["text_cache_dir"] = tempfile.mkdtemp(prefix="ovseg-bench-text-")
                label = f" | {len(vocab)} classes" if vocab is not None else ""
                print(f"[{preset} | {backend} | {prec} | {size}{label}] ...", end=" ",
                      flush=True)
                n = len(vocab) if vocab is not None else None
                rec = run_case(case, rgb, args, baseline.get(n))
                sem = rec.pop("semantic", None)
                if backend == "torch" and prec == "fp32" and sem is not None:
                    baseline[n] = sem
                    flops[n] = rec.get("flops_per_frame")
                if case.vocab_axis:
                    import shutil

                    shutil.rmtree(case.config["text_cache_dir"], ignore_errors=True)
                if "error" in rec:
                    print("not run:", rec["error"].splitlines()[0][:200], flush=True)
                else:
                    if flops.get(n):
                        rec["gflops_per_frame"] = flops[n] / 1e9
                        rec["achieved_gflops"] = flops[n] / 1e9 / (rec["latency_ms_p50"] / 1000)
                        # the arithmetic the case runs in (onnxruntime: fp32 graphs on the CPU)
                        arith = prec if (backend == "torch" or dev_type == "cuda") else "fp32"
                        # measured again right after the case: on shared cores the ceiling
                        # moves with the neighbours' load, the percentage should not
                        ceiling = matmul_ceiling(arith, args.device, seconds=0.5)
                        rec["ceiling_gflops"] = ceiling
                        rec["ceiling_pct"] = 100 * rec["achieved_gflops"] / ceiling
                    print(f"{rec['fps']:.2f} FPS, p50 {rec['latency_ms_p50']:.0f} ms", flush=True)
                results.append(rec)

    report = {"created_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "machine": machine, "ceilings_gflops": ceilings,
              "reference_ceilings_gflops": REFERENCE_CEILING_GFLOPS,
              "settings": {"device": args.device, "threads": threads, "iters": args.iters,
                           "warmup": args.warmup, "max_case_seconds": args.max_case_seconds,
                           "quick": quick, "random_init_flag": args.random_init,
                           "command": " ".join(["ovseg-bench"] + (argv if argv is not None
                                                                  else sys.argv[1:]))},
              "results": results}
    if args.cameras:
        counts = [int(v) for v in args.cameras.split(",")]
        report["cameras"] = run_presets(
            presets, counts, parse_size(sizes[0]), args.iters, args.warmup,
            lambda preset: build_config(preset, "torch", precisions[0], args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(_jsonable(report), indent=2))
    md = markdown(report)
    if report.get("cameras"):
        md += "\n" + markdown_section(report["cameras"])
    (out / "bench.md").write_text(md)
    print(f"wrote {out / 'bench.json'} and {out / 'bench.md'}")
    return 0 if any("error" not in r for r in results) else 1
