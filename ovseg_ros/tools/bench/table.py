"""``ovseg-bench``: frames per second, latency and memory per engine x backend x precision x size.

    ovseg-bench --quick --out out/bench                      # tiny models, 1-4 minutes
    ovseg-bench --preset proxyclip-b16-dinos8-single336 --random-init \\
                --backends torch,onnxruntime --precisions fp32,bf16 --sizes 640x480
    ovseg-bench --preset proxyclip-tiny --vocab-sizes 10,150,847 --sizes 640x480 \\
                --backends torch --precisions fp32 --iters 3  # the vocabulary axis
    ovseg-bench --node-overhead --sizes 640x480,1280x720      # the node's own work per frame
    ovseg-bench --shapes --threads 2     # elongated, tiny and 4K frames next to 640x480

Every case builds a Segmenter through the public API (``load_segmenter``),
runs warm-up frames, then times ``predict`` on one synthetic frame. Reported
per case: frames per second (1 / mean latency), latency p50/p95, first-frame
time (build + export + first run: what a user waits for once), peak memory
(process peak RSS on the CPU, ``torch.cuda.max_memory_allocated`` on CUDA),
the engine's per-stage timings (``Prediction.timings``), FLOPs per frame
(``torch.utils.flop_counter.FlopCounterMode`` over one fp32 torch predict:
matmuls, convolutions and attention; element-wise work is not counted), the
achieved GFLOP/s against a matrix-multiplication ceiling measured on this
machine for the case's arithmetic (and reference figures of an AMD EPYC), and how
many pixels get the same label as the fp32 torch run of the same preset.

The vocabulary axis (``--vocab-sizes 10,150,847``) repeats every case with
vocabularies of that many classes (10: a small indoor list, 150: ADE-150,
847: ADE-847, other sizes: the first N of ADE-847) and adds per case: the
first-time text encoding of the vocabulary (a fresh text cache, the configured
templates), its reload from the disk cache (a new embedder on the same cache),
the post-processing time per frame, and the peak RSS while frames run (reset
after the warm-up, so model loading and text encoding are not in it).

Every figure names the machine (CPU model, cores, GPU), the threads, the
precision, the settings and whether the weights were random. Results go to
``<out>/bench.json`` and ``<out>/bench.md``.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..presets import PRESETS

QUICK = dict(presets=["proxyclip-tiny", "fcclip-tiny"], backends=["torch", "onnxruntime"],
             precisions=["fp32", "bf16"], sizes=["160x120", "320x240"], iters=5, warmup=1)
VOCABULARY = ["person", "chair", "table", "floor", "wall", "ceiling", "window", "door",
              "plant", "sky"]
#: reference ceilings measured on an AMD EPYC (2 threads, 2048^2 matmul)
REFERENCE_CEILING_GFLOPS = {"fp32": 150.0, "bf16": 740.0}


# --- machine facts ------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cpu_flags() -> List[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                return sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile",
                                       "avx512_fp16"})
    except OSError:
        pass
    return []


def machine_info(device: str) -> Dict[str, Any]:
    import torch

    info: Dict[str, Any] = {
        "cpu": cpu_model(), "cpu_flags": cpu_flags(), "logical_cpus": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "loadavg_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "memory_gib": _mem_total_gib(), "python": platform.python_version(),
        "torch": torch.__version__, "gpu": None}
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info


def _mem_total_gib() -> Optional[float]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2 ** 20, 1)
    except OSError:
        pass
    return None


def matmul_ceiling(dtype_name: str, device: str, n: int = 2048, seconds: float = 1.0) -> float:
    """Achieved GFLOP/s of an n x n matmul in this dtype (the arithmetic ceiling of the case)."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype_name]
    dev = torch.device(device)
    a = torch.randn(n, n, device=dev).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)
    for _ in range(2):
        a @ b
    _sync(dev)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or reps < 3:
        a @ b
        reps += 1
        _sync(dev)
    dt = time.perf_counter() - t0
    return 2 * n ** 3 * reps / dt / 1e9


def cpu_machine_line(threads: int, extra: str = "") -> Tuple[str, Dict[str, float]]:
    """(one line, ceilings): what every CPU figure of a measurement script depends on: the
    CPU and its flags, threads, load average and the fp32/bf16 matmul ceilings (GFLOP/s)
    measured now."""
    m = machine_info("cpu")
    ceil = {k: matmul_ceiling(k, "cpu") for k in ("fp32", "bf16")}
    line = (f"machine: {m.get('cpu')} flags {','.join(m.get('cpu_flags') or [])}; "
            f"{threads} thread(s); load average {os.getloadavg()[0]:.2f}; ceiling fp32 "
            f"{ceil['fp32']:.0f} bf16 {ceil['bf16']:.0f} GFLOP/s")
    return (f"{line}; {extra}" if extra else line), ceil


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


# --- memory -----------------------------------------------------------------------------------
def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_kib(field_name: str) -> Optional[int]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


# --- photos for label agreement ------------------------------------------------------------
#: scikit-image's sample photos: real image statistics for the bf16 / backend label agreement
#: (the synthetic frame's flat shapes hide most of the differences)
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
#: (preset, size) -> labels of the fp32 torch case on each photo
_PHOTO_REFERENCE: Dict[tuple, List[np.ndarray]] = {}


def photo_frames(width: int, height: int) -> List[np.ndarray]:
    import cv2
    import skimage.data

    return [cv2.resize(np.ascontiguousarray(getattr(skimage.data, name)()[..., :3]),
                       (width, height), interpolation=cv2.INTER_AREA) for name in PHOTOS]


def photo_agreement(seg, case: "Case", shape) -> Dict[str, Any]:
    """Labels on the photos; the fp32 torch case keeps them as the reference, the other
    cases report the share of pixels equal to it (mean and worst photo)."""
    labels = [seg.predict(f).semantic for f in photo_frames(shape[1], shape[0])]
    key = (case.preset, case.size)
    if case.backend == "torch" and case.precision == "fp32":
        _PHOTO_REFERENCE[key] = labels
        return {}
    ref = _PHOTO_REFERENCE.get(key)
    if ref is None:
        return {}
    equal = [100.0 * float((a == b).mean()) for a, b in zip(labels, ref)]
    return {"labels_equal_fp32_photos_pct": float(np.mean(equal)),
            "labels_equal_fp32_photos_min_pct": float(min(equal)),
            "labels_equal_fp32_per_photo_pct": dict(zip(PHOTOS, equal))}


# --- the synthetic frame ----------------------------------------------------------------------
def synthetic_frame(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A deterministic RGB scene: smooth gradients plus flat shapes (no pure noise, which
    is an unrealistic worst case for the attention threshold and panoptic merging)."""
    import cv2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([xx / max(1, width - 1), yy / max(1, height - 1),
                    0.5 + 0.5 * np.sin(xx / 17.0) * np.cos(yy / 23.0)], axis=-1)
    img = (img * 200 + 20).astype(np.uint8)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(width // 8, width // 3)), y0 + int(rng.integers(
            height // 8, height // 3))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.rectangle(img, (x0, y0), (x1, y1), color, thickness=-1)
    cv2.circle(img, (width // 2, height // 2), max(2, min(width, height) // 6), (240, 240, 240), -1)
    return img


def parse_size(text: str):
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise SystemExit(f"--sizes: {text!r} is not WIDTHxHEIGHT (e.g. 640x480)") from exc
    if w <= 0 or h <= 0:
        raise SystemExit(f"--sizes: {text!r} must be positive")
    return w, h


# --- cases ------------------------------------------------------------------------------------
@dataclass
class Case:
    preset: str
    backend: str
    precision: str
    size: str
    config: Dict[str, Any] = field(default_factory=dict)
    vocab_axis: bool = False     # measure text encoding and frame memory for this case


def vocabulary_of_size(n: int) -> List[str]:
    """The vocabulary-axis lists: 10 = VOCABULARY, 150 = ADE-150, 847 = ADE-847, any other
    size the first n classes of ADE-847 (up to 847)."""
    from ..core.class_names import load_class_file

    if n == len(VOCABULARY):
        return list(VOCABULARY)
    if n == 150:
        return list(load_class_file("ade150").names)
    ade847 = load_class_file("ade847").names
    if not 1 <= n <= len(ade847):
        raise SystemExit(f"--vocab-sizes: {n} must be in 1..{len(ade847)}")
    return list(ade847[:n])


def build_config(preset: str, backend: str, precision: str, args,
                 vocabulary: Optional[List[str]] = None) -> Dict[str, Any]:
    cfg = dict(PRESETS[preset])
    cfg.update({"backend": backend, "precision": precision, "device": args.device,
                "num_threads": args.threads, "vocabulary": vocabulary or VOCABULARY,
                "graph_cache_dir": str(Path(args.cache_dir).expanduser()),
                "text_cache_dir": str(Path(args.cache_dir).expanduser() / "text")})
    if args.random_init:
        cfg["random_init"] = True
    for item in args.set or []:
        key, _, value = item.partition("=")
        import yaml

        cfg[key.strip()] = yaml.safe_load(value)
    return cfg


def count_flops(seg, rgb) -> Optional[int]:
    """FLOPs of one predict() as torch executes it (only meaningful on the torch backend)."""
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:
        return None
    with FlopCounterMode(display=False) as counter:
        seg.predict(rgb)
    return int(counter.get_total_flops())


def run_case(case: Case, rgb: np.ndarray, args, baseline: Optional[np.ndarray]) -> Dict[str, Any]:
    import torch

    from ..segmenter import load_segmenter

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


def measure_text(seg, config: Dict[str, Any]) -> Dict[str, Any]:
    """First-time encoding of the config's vocabulary (the case's text cache is fresh) and
    its reload from the disk cache by a new embedder (no in-memory entries)."""
    from ..core.text_cache import TextEmbedder

    t0 = time.perf_counter()
    vocab = seg.vocabulary                       # encoded now (lazy default vocabulary)
    encode_s = time.perf_counter() - t0
    stats = dict(seg._text.last_stats)
    fresh = TextEmbedder.for_engine(seg.engine, seg.config)
    t0 = time.perf_counter()
    fresh.embed_vocabulary(vocab.synonyms)
    reload_s = time.perf_counter() - t0
    return {"num_classes": vocab.num_classes, "num_synonyms": int(vocab.embeddings.shape[0]),
            "num_templates": len(seg._text.templates),
            "text_prompts": int(stats.get("encoded", 0)) * len(seg._text.templates),
            "text_encode_s": encode_s, "text_reload_s": reload_s,
            "text_reload_disk_hits": fresh.last_stats.get("disk_hits"),
            # the encoder's path (shared_prefix / truncated / full), where it has one
            "text_encoder_mode": getattr(getattr(seg.engine, "_text_encoder", None), "mode",
                                         None)}


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


# --- report -----------------------------------------------------------------------------------
def _fmt(v, spec=".1f", none="–"):
    return none if v is None else format(v, spec)


def markdown(report: Dict[str, Any]) -> str:
    m = report["machine"]
    s = report["settings"]
    lines = [f"# ovseg-bench results ({report['created_utc']})", "",
             f"- Machine: {m['cpu']} ({m['cpus_usable']} usable of {m['logical_cpus']} logical "
             f"CPUs; flags {', '.join(m['cpu_flags']) or 'n/a'}; {m['memory_gib']} GiB); "
             f"GPU: {m['gpu'] or 'none'}; load average at start "
             f"{_fmt(m['loadavg_at_start'], '.2f')}",
             f"- Software: Python {m['python']}, torch {m['torch']}, "
             f"onnxruntime {m['onnxruntime']}",
             f"- Settings: device {s['device']}, {s['threads']} thread(s), warm-up {s['warmup']}, "
             f"up to {s['iters']} timed frames (or {s['max_case_seconds']} s) per case, "
             f"synthetic frames, vocabulary of {len(VOCABULARY)} classes",
             f"- Matmul ceiling measured here (2048², {s['threads']} thread(s)): "
             + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in report["ceilings_gflops"].items())
             + "; AMD EPYC reference: fp32 ≈ 150, bf16 ≈ 740 GFLOP/s",
             ""]
    lines += ["| preset | backend | precision | input | weights | FPS | p50 ms | p95 ms | min ms | "
              "first frame s | peak mem MiB | GFLOP/frame | GFLOP/s (% ceiling) | "
              "labels = fp32 | stages ms (mean) |",
              "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    skipped = []
    for r in report["results"]:
        if "error" in r:
            skipped.append(r)
            continue
        gf = r.get("gflops_per_frame")
        ach = r.get("achieved_gflops")
        pct = r.get("ceiling_pct")
        stages = ", ".join(f"{k} {v:.0f}" for k, v in r["stages_ms"].items() if k != "total")
        low = [k for k, p in r.get("stage_precision", {}).items() if p != "fp32"]
        stages += f"; in {r['precision']}: {', '.join(low)}" if low else "; all fp32"
        lines.append(
            f"| {r['preset']} | {r['backend']} | {r['precision']} | {r['size']} | "
            f"{'random' if r.get('random_weights') else 'pretrained'} | {r['fps']:.2f} | "
            f"{r['latency_ms_p50']:.0f} | {r['latency_ms_p95']:.0f} | {r['latency_ms_min']:.0f} | "
            f"{r['first_frame_s']:.1f} | "
            f"{_fmt(r.get('peak_memory_mib'), '.0f')} | {_fmt(gf, '.2f')} | "
            f"{_fmt(ach, '.1f')}" + (f" ({pct:.0f}%)" if pct is not None else "") + " | "
            f"{_fmt(r.get('labels_equal_fp32_pct'), '.1f')}"
            f"{'%' if r.get('labels_equal_fp32_pct') is not None else ''}"
            + (f" (photos {r['labels_equal_fp32_photos_pct']:.2f}%, min "
               f"{r['labels_equal_fp32_photos_min_pct']:.2f}%)"
               if "labels_equal_fp32_photos_pct" in r else "") + " | "
            f"{stages} |")
    axis = [r for r in report["results"] if "num_classes" in r and "error" not in r]
    if axis:
        lines += ["", "## Vocabulary size", "",
                  "| preset | backend | precision | input | classes | synonyms | p50 ms | "
                  "× smallest | × smallest, model time held | text + post ms | "
                  "frame peak RSS MiB | Δ MiB vs smallest | "
                  "first-time encode s (prompts) | cached reload s |",
                  "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        base: Dict[tuple, Dict[str, Any]] = {}
        for r in axis:
            key = (r["preset"], r["backend"], r["precision"], r["size"])
            b = base.setdefault(key, r)
            mem, bmem = r.get("frame_peak_memory_mib"), b.get("frame_peak_memory_mib")
            lines.append(
                f"| {r['preset']} | {r['backend']} | {r['precision']} | {r['size']} | "
                f"{r['num_classes']} | {r['num_synonyms']} | {r['latency_ms_p50']:.0f} | "
                f"{r['latency_ms_p50'] / b['latency_ms_p50']:.2f} | "
                f"{_fmt(_held_ratio(r, b), '.2f')} | {_fmt(_vocab_ms(r), '.0f')} | "
                f"{_fmt(mem, '.0f')} | "
                f"{_fmt(mem - bmem if mem is not None and bmem is not None else None, '+.0f')} | "
                f"{r['text_encode_s']:.2f} ({r['text_prompts']}) | {r['text_reload_s']:.3f} |")
    if skipped:
        lines += ["", "Not run:", ""]
        lines += [f"- {r['preset']} / {r['backend']} / {r['precision']} / {r['size']}: "
                  f"{r['error'].splitlines()[0][:300]}" for r in skipped]
    lines += ["", "FPS = frames / total time of the timed frames; latency is one "
              "`Segmenter.predict` (pre-processing, image path, text cosine, post-processing). "
              "First frame = `load_segmenter` + first predict (includes ONNX export on a cold "
              "cache). Peak memory: " + (report["results"][0].get("memory_kind", "") if
                                         report["results"] else "") + ". GFLOP/frame counted "
              "with torch's FlopCounterMode over one fp32 torch predict (matmul/conv/attention "
              "only) and reused for the other backends of the same preset and input; achieved "
              "GFLOP/s uses the p50 latency, and the ceiling is a 2048² matmul in the case's "
              "arithmetic (fp32 for onnxruntime on the CPU) measured right after the case, "
              "under the same neighbours' load. Min ms is the fastest frame (closest to an "
              "idle machine when cores are shared). 'labels = fp32' is the share of pixels "
              "labelled as by the fp32 "
              "torch run of the same preset and input; '(photos …)' the same on scikit-image's "
              f"photos {', '.join(PHOTOS)} resized to the input (mean, worst photo).", ""]
    return "\n".join(lines)


def _vocab_ms(r: Dict[str, Any]) -> Optional[float]:
    """The stages whose cost follows the vocabulary: the text cosine and post-processing."""
    st = r.get("stages_ms", {})
    if "post" not in st:
        return None
    return st.get("post", 0.0) + st.get("text", 0.0) + st.get("classify", 0.0)


def _held_ratio(r: Dict[str, Any], base: Dict[str, Any]) -> Optional[float]:
    """The frame-time ratio to the smallest vocabulary with the model's time held at the
    smallest case's: (p50_base + vocabulary stages_r - vocabulary stages_base) / p50_base.
    Each case builds its own model, and on shared cores its time swings by more than the
    vocabulary's cost; this keeps only what the vocabulary adds."""
    a, b = _vocab_ms(r), _vocab_ms(base)
    if a is None or b is None or not base.get("latency_ms_p50"):
        return None
    return (base["latency_ms_p50"] + a - b) / base["latency_ms_p50"]


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="ovseg-bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="out/bench", help="output directory (bench.json, bench.md)")
    p.add_argument("--quick", action="store_true",
                   help="tiny random-weight models, small inputs, few frames "
                        "(1-4 minutes on 2 cores)")
    p.add_argument("--preset", action="append", choices=sorted(PRESETS),
                   help="configuration preset (repeatable); default: the quick set")
    p.add_argument("--backends", default=None, help="comma list: torch,onnxruntime,tensorrt")
    p.add_argument("--precisions", default=None, help="comma list: fp32,bf16,fp16")
    p.add_argument("--sizes", default=None, help="comma list of input frames WxH (640x480)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=0,
                   help="torch / onnxruntime CPU threads (0 = library default)")
    p.add_argument("--iters", type=int, default=None, help="timed frames per case")
    p.add_argument("--warmup", type=int, default=None, help="warm-up frames per case (>= 1)")
    p.add_argument("--max-case-seconds", type=float, default=60.0,
                   help="stop timing a case after this long (at least 2 frames)")
    p.add_argument("--random-init", action="store_true",
                   help="random weights for the real architectures (timing only; no download)")
    p.add_argument("--no-photos", dest="photos", action="store_false",
                   help="skip the label agreement on scikit-image photos (4 extra frames a case)")
    p.add_argument("--no-flops", dest="flops", action="store_false",
                   help="skip FLOP counting (one extra fp32 frame per preset and size)")
    p.add_argument("--cache-dir", default="~/.cache/ovseg_ros/bench",
                   help="engine (ONNX/TensorRT) and text cache used by the cases")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="extra config setting for every case (YAML value), repeatable")
    p.add_argument("--vocab-sizes", default=None,
                   help="comma list of vocabulary sizes (10,150,847): repeat every case per "
                        "size, with first-time text encoding, cached reload, post-processing "
                        "time and frame peak RSS")
    p.add_argument("--cameras", default=None, metavar="N,N",
                   help="also time N cameras' frames in one predict_batch against N "
                        "single-camera runs of the same model (torch backend, first "
                        "precision and size)")
    p.add_argument("--node-overhead", action="store_true",
                   help="only time the node's per-frame work apart from the model (decode, "
                        "output products, messages, publish to a listening process) at "
                        "--sizes (default 640x480,1280x720); needs rclpy")
    p.add_argument("--node-classes", type=int, default=150,
                   help="vocabulary size of the synthetic prediction for --node-overhead")
    p.add_argument("--shapes", action="store_true",
                   help="only time hostile frame shapes (elongated, tiny, 4K; or --sizes) "
                        "next to 640x480 per preset (default: the tiny presets), with frame "
                        "peak memory, model pixels and clamps (ovseg_ros/tools/bench_shapes.py)")
    args = p.parse_args(argv)
    if args.node_overhead:
        return node_overhead(args, argv)
    if args.shapes:
        return shapes(args, argv if argv is not None else sys.argv[1:])

    import torch

    quick = args.quick or not args.preset
    presets = args.preset or QUICK["presets"]
    backends = (args.backends.split(",") if args.backends else QUICK["backends"])
    precisions = (args.precisions.split(",") if args.precisions else QUICK["precisions"])
    sizes = (args.sizes.split(",") if args.sizes else QUICK["sizes"])
    # check every list before the (slow) ceiling measurement: a typo used to end in a
    # traceback (--precisions, --device) or in a table of nothing but failed cases (--backends)
    from ..config import BACKENDS

    for b in backends:
        if b not in BACKENDS:
            p.error(f"--backends: unknown backend {b!r}; choose from {', '.join(BACKENDS)}")
    for pr in precisions:
        if pr not in ("fp32", "bf16", "fp16"):
            p.error(f"--precisions: unknown precision {pr!r}; choose from fp32, bf16, fp16")
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


# --- the node's own per-frame work (``--node-overhead``; ovseg_ros/tools/bench_node.py) -----
def node_overhead(args, argv) -> int:
    import torch

    from . import bench_node    # the ROS layer: rclpy is imported only for this axis

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    sizes = args.sizes.split(",") if args.sizes else ["640x480", "1280x720"]
    for sz in sizes:
        parse_size(sz)
    machine = machine_info("cpu")
    iters = args.iters or 50
    threads = torch.get_num_threads()
    ceilings = {p: matmul_ceiling(p, "cpu") for p in ("fp32", "bf16")}
    load0 = os.getloadavg()[0]
    print(f"machine: {machine['cpu']}, {machine['cpus_usable']} CPUs usable, {threads} "
          f"thread(s), fp32; node overhead per frame, {iters} frames per size, "
          f"{args.node_classes} classes, load average {load0:.2f}; matmul ceiling "
          + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in ceilings.items()), flush=True)
    rows = []
    for subscribed in (bench_node.TOPICS, ("semantic", "segments")):
        rows += bench_node.measure(sizes, iters=iters, num_classes=args.node_classes,
                                   subscribed=subscribed)
    # a camera with depth: what the 3D outputs add (20 segments, every pixel with depth)
    rows_3d = bench_node.measure_3d(sizes, iters=iters)
    load1 = os.getloadavg()[0]
    md = ("## Node overhead per frame, apart from the model\n\n"
          f"Machine: {machine['cpu']}, {machine['cpus_usable']} CPUs usable, {threads} "
          f"thread(s), fp32; load average {load0:.2f} at the start, {load1:.2f} at the end; "
          "matmul ceiling " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in ceilings.items())
          + f"; RMW {os.environ.get('RMW_IMPLEMENTATION', 'default')}, "
          f"{rows[0]['dds'] if rows else ''}; one listener process "
          "subscribed to the outputs named; medians of "
          f"{iters} frames.\n\n" + bench_node.table(rows) + "\n\n"
          "### 3D outputs beyond the 2D ones (a camera with depth; points, segments_3d "
          "and markers subscribed; target 10 ms at 640x480 with 20 segments)\n\n"
          + bench_node.table_3d(rows_3d) + "\n")
    print(md)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "node_overhead.json").write_text(json.dumps(_jsonable(
        {"created_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
         "machine": machine, "threads": threads, "ceilings_gflops": ceilings,
         "loadavg": [load0, load1], "command": " ".join(["ovseg-bench"] + list(
             argv if argv is not None else sys.argv[1:])), "rows": rows,
         "rows_3d": rows_3d}), indent=2))
    (out / "node_overhead.md").write_text(md)
    print(f"wrote {out / 'node_overhead.json'} and {out / 'node_overhead.md'}")
    return 0


# --- hostile frame shapes next to 640x480 (``--shapes``; ovseg_ros/tools/bench_shapes.py) --------
def shapes(args, argv) -> int:
    import torch

    from ..segmenter import load_segmenter
    from . import bench_shapes

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    presets = args.preset or list(bench_shapes.TINY_PRESETS)
    sizes = [parse_size(s) for s in (args.sizes.split(",") if args.sizes
                                     else bench_shapes.SHAPES)]
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
            rows.append(bench_shapes.measure(seg, bench_shapes.frame(scene, w, h), iters,
                                             reset_peak_rss, _status_kib))
            print(f"{preset} {rows[-1]}", flush=True)
        worst = max(rows[1:] or rows, key=lambda r: r["ms_min"])
        results.append({"preset": preset, "rows": rows, "worst": worst})
        del seg
        gc.collect()
    md = bench_shapes.markdown(results, header)
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


# --- several cameras, one model (``--cameras``; ovseg_ros/tools/bench_cameras.py) -----------------
# What a multi-camera node does each round (ovseg_ros/node/worker.py): the waiting frame of every
# camera goes through one Segmenter.predict_batch call. The alternative is one single-camera
# node per camera: N models sharing the device, together at best one model predicting the
# N frames one after the other.
def model_bytes(seg) -> int:
    """Parameters and buffers of every torch module the engine holds (one model's memory)."""
    import torch

    seen, total = set(), 0
    for value in vars(seg.engine).values():
        modules = [value] if isinstance(value, torch.nn.Module) else []
        inner = getattr(value, "model", None)          # a backend wrapping the image model
        if isinstance(inner, torch.nn.Module):
            modules.append(inner)
        for mod in modules:
            for t in list(mod.parameters()) + list(mod.buffers()):
                if id(t) not in seen:
                    seen.add(id(t))
                    total += t.numel() * t.element_size()
    return total


def _median_seconds(fn, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def camera_scaling(config: Dict[str, Any], cameras: List[int], size: tuple,
                   iters: int = 3, warmup: int = 1) -> Dict[str, Any]:
    """Time one model over N cameras (batched) and N single-camera predictions (in a row)."""
    from ..segmenter import load_segmenter

    if not cameras or min(cameras) < 1:
        raise ValueError(f"cameras must be positive counts, got {list(cameras)}")
    seg = load_segmenter(config)
    w, h = size
    frames = [synthetic_frame(w, h, seed=i) for i in range(max(cameras))]
    single = [seg.predict(f).semantic for f in frames]        # also the first-frame warm-up
    t_single = statistics.median(
        _median_seconds(lambda f=f: seg.predict(f), iters, warmup) for f in frames[:1])
    mbytes = model_bytes(seg)
    rows = []
    for n in cameras:
        batch = frames[:n]
        t_batch = _median_seconds(lambda b=batch: seg.predict_batch(b), iters, warmup)
        preds = seg.predict_batch(batch)
        same = float(np.mean([np.mean(p.semantic == s) for p, s in zip(preds, single[:n])]))
        rows.append({
            "cameras": n, "batch_ms": 1000 * t_batch, "single_ms": 1000 * t_single,
            "fps_batched": n / t_batch, "fps_separate": 1.0 / t_single,
            "per_camera_fps_batched": 1.0 / t_batch, "per_camera_fps_separate":
                1.0 / (n * t_single),
            "speedup": n * t_single / t_batch,
            "model_mib_one": mbytes / 2**20, "model_mib_separate": n * mbytes / 2**20,
            "labels_equal": same,
        })
    return {"engine": seg.describe().get("engine"), "backend": seg.describe().get("backend"),
            "precision": seg.describe().get("precision"), "size": f"{w}x{h}",
            "random_weights": seg.random_weights, "iters": iters, "rows": rows}


def markdown_section(results: List[Dict[str, Any]]) -> str:
    lines = ["## Several cameras, one model", "",
             "N cameras' frames in one `predict_batch` call against N single-camera runs of "
             "the same model (N × `predict`, one after the other: the best N separate "
             "single-camera nodes can do together on one device).", "",
             "| preset | backend | precision | input | weights | cameras | batch ms | single ms "
             "| FPS all cameras, batched | FPS all cameras, separate | speed-up | model MiB one "
             "/ separate | labels equal |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for res in results:
        if res.get("error"):
            lines.append(f"| {res.get('preset', '')} | not run: "
                         f"{res['error'].splitlines()[0][:160]} |" + " |" * 11)
        for r in res["rows"]:
            lines.append(
                f"| {res.get('preset', '')} | {res['backend']} | {res['precision']} | "
                f"{res['size']} | {'random' if res['random_weights'] else 'pretrained'} | "
                f"{r['cameras']} | {r['batch_ms']:.0f} | {r['single_ms']:.0f} | "
                f"{r['fps_batched']:.2f} | {r['fps_separate']:.2f} | {r['speedup']:.2f}× | "
                f"{r['model_mib_one']:.0f} / {r['model_mib_separate']:.0f} | "
                f"{100 * r['labels_equal']:.1f}% |")
    return "\n".join(lines) + "\n"


def run_presets(presets: List[str], cameras: List[int], size: tuple,
                iters: int, warmup: int, make_config) -> List[Dict[str, Any]]:
    """One result per preset; ``make_config(preset)`` gives its config (bench's settings)."""
    out = []
    for preset in presets:
        print(f"[{preset} | cameras {','.join(map(str, cameras))}] ...", end=" ", flush=True)
        try:
            res = camera_scaling(make_config(preset), cameras, size, iters, warmup)
        except Exception as exc:   # a preset without weights here: say so, keep the others
            print(f"not run: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            out.append({"preset": preset, "error": f"{type(exc).__name__}: {exc}",
                        "rows": [], "backend": "", "precision": "", "size": "",
                        "random_weights": True})
            continue
        res["preset"] = preset
        print(", ".join(f"{r['cameras']}: {r['fps_batched']:.2f} vs {r['fps_separate']:.2f} FPS"
                        for r in res["rows"]), flush=True)
        out.append(res)
    return out


if __name__ == "__main__":
    sys.exit(main())
