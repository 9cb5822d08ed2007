"""``bench.md``: the markdown report of the engine table (and its vocabulary-size section).
"""
from __future__ import annotations

from typing import Any, Dict

from .common import VOCABULARY
from .photos import PHOTOS
from .vocab import _held_ratio, _held_ratio_labels_only, _vocab_ms


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
                  "labels only: text + post ms | labels only: × smallest, model time held | "
                  "frame peak RSS MiB | Δ MiB vs smallest | "
                  "first-time encode s (prompts) | cached reload s |",
                  "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
                  "---:|"]
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
                f"{_fmt(_vocab_ms(r['labels_only']) if 'labels_only' in r else None, '.0f')} | "
                f"{_fmt(_held_ratio_labels_only(r, b), '.2f')} | "
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

