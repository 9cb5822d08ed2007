"""Markdown and HTML reports with per-class tables and matplotlib (Agg) plots."""
from __future__ import annotations

import html
import math
import os
from pathlib import Path
from typing import List, Optional

import numpy as np


def _fmt(x, pct: bool = True) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{100 * x:.2f}" if pct else str(x)


def _display(name: str) -> str:
    return name.split(",")[0].strip()


def plot_iou_bars(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [_display(n) for n in res["classes"]]
    iou = np.array([np.nan if v is None else v for v in res["semantic"]["per_class_iou"]], float)
    height = max(3.0, 0.18 * len(names) + 1)
    fig, ax = plt.subplots(figsize=(7, height))
    y = np.arange(len(names))
    ax.barh(y, np.nan_to_num(iou) * 100, color="tab:blue")
    ax.set_yticks(y, names, fontsize=6 if len(names) > 40 else 8)
    ax.invert_yaxis()
    ax.set_xlabel("IoU (%)")
    ax.set_xlim(0, 100)
    ax.set_title(f"Per-class IoU (mIoU {res['semantic']['mIoU'] * 100:.2f})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(confusion: np.ndarray, classes: List[str], path: Path) -> None:
    """Row-normalised confusion matrix; the last column is 'no prediction'."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = confusion.astype(np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    c = len(classes)
    size = min(16.0, max(5.0, 0.12 * c + 3))
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm, cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
    if c <= 60:
        names = [_display(n) for n in classes]
        fs = 9 if c <= 20 else 6
        ax.set_yticks(range(c), names, fontsize=fs)
        ax.set_xticks(range(c + 1), names + ["(none)"], fontsize=fs, rotation=90)
    ax.set_ylabel("ground truth")
    ax.set_xlabel("prediction")
    ax.set_title("Confusion matrix (rows normalised)")
    fig.colorbar(im, fraction=0.046, pad=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _summary_rows(res: dict) -> List[tuple]:
    rows = []
    sem = res.get("semantic")
    if sem:
        rows += [("mIoU", _fmt(sem["mIoU"])), ("fwIoU", _fmt(sem["fwIoU"])),
                 ("mAcc", _fmt(sem["mAcc"])), ("pAcc", _fmt(sem["pAcc"]))]
    pan = res.get("panoptic")
    if pan:
        for g in ("All", "Things", "Stuff"):
            rows += [(f"PQ {g}", _fmt(pan[g]["PQ"])), (f"SQ {g}", _fmt(pan[g]["SQ"])),
                     (f"RQ {g}", _fmt(pan[g]["RQ"]))]
    return rows


def _class_rows(res: dict) -> List[list]:
    sem = res["semantic"]
    pan = res.get("panoptic")
    rows = []
    for i, name in enumerate(res["classes"]):
        r = [str(i), _display(name), "thing" if res["is_thing"][i] else "stuff",
             _fmt(sem["per_class_iou"][i]), _fmt(sem["per_class_acc"][i]),
             str(sem["gt_pixels"][i])]
        if pan:
            r += [_fmt(pan["per_class_pq"][i]), _fmt(pan["per_class_sq"][i]),
                  _fmt(pan["per_class_rq"][i])]
        rows.append(r)
    return rows


def _header(res: dict) -> List[str]:
    h = ["id", "class", "kind", "IoU", "Acc", "GT pixels"]
    if res.get("panoptic"):
        h += ["PQ", "SQ", "RQ"]
    return h


def _source_lines(res: dict) -> List[str]:
    src = ", ".join(f"{k}={v}" for k, v in res["source"].items() if v is not None)
    lines = [f"- source: {src}", f"- images evaluated: {res['num_images']}",
             f"- complete: {'yes' if res['finished'] else 'NO (partial run: --limit or stopped)'}"]
    eng = res.get("engine")
    if eng:
        keys = ("engine", "backend", "device", "precision", "clip_model", "clip_weights",
                "vfm_model", "vfm_weights")
        lines.append("- engine: " + ", ".join(f"{k}={eng[k]}" for k in keys if k in eng))
        if eng.get("random_weights"):
            lines.append("- **random weights: the numbers are meaningless**")
    for k, v in (res.get("extra") or {}).items():
        lines.append(f"- {k}: {v}")
    return lines


def _html_item(text: str) -> str:
    """A markdown list item as HTML: **bold** (the random-weights warning) becomes <strong>."""
    if text.startswith("**") and text.endswith("**"):
        return f"<li><strong>{html.escape(text[2:-2])}</strong></li>"
    return f"<li>{html.escape(text)}</li>"


def write_report(res: dict, out_dir: Path, confusion: Optional[np.ndarray] = None) -> Path:
    """report.md, report.html and plots under ``out_dir`` (written, then renamed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = []
    if res.get("semantic"):
        plot_iou_bars(res, out_dir / "per_class_iou.png")
        plots.append(("Per-class IoU", "per_class_iou.png"))
        if confusion is not None:
            plot_confusion(confusion, res["classes"], out_dir / "confusion.png")
            plots.append(("Confusion matrix", "confusion.png"))
    samples = sorted((out_dir / "samples").glob("sample_*.png")) if \
        (out_dir / "samples").is_dir() else []

    md = ["# Segmentation evaluation", ""] + _source_lines(res) + ["", "## Summary", "",
                                                                  "| metric | % |", "|---|---|"]
    md += [f"| {k} | {v} |" for k, v in _summary_rows(res)]
    if res.get("semantic"):
        hdr = _header(res)
        md += ["", "## Per class", "", "| " + " | ".join(hdr) + " |",
               "|" + "---|" * len(hdr)]
        md += ["| " + " | ".join(r) + " |" for r in _class_rows(res)]
    md += ["", "## Plots", ""] + [f"![{t}]({f})" for t, f in plots]
    if samples:
        md += ["", "## Samples (image | prediction | ground truth)", ""]
        md += [f"![sample](samples/{p.name})" for p in samples]

    h = ["<!doctype html><html><head><meta charset='utf-8'><title>Segmentation evaluation</title>",
         "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
         "td,th{border:1px solid #bbb;padding:2px 6px;text-align:right}"
         "td:nth-child(2){text-align:left}img{max-width:100%}</style></head><body>",
         "<h1>Segmentation evaluation</h1><ul>"]
    h += [_html_item(l[2:]) for l in _source_lines(res)]
    h += ["</ul><h2>Summary</h2><table><tr><th>metric</th><th>%</th></tr>"]
    h += [f"<tr><td>{k}</td><td>{v}</td></tr>" for k, v in _summary_rows(res)]
    h.append("</table>")
    if res.get("semantic"):
        h.append("<h2>Per class</h2><table><tr>" +
                 "".join(f"<th>{html.escape(x)}</th>" for x in _header(res)) + "</tr>")
        h += ["<tr>" + "".join(f"<td>{html.escape(x)}</td>" for x in r) + "</tr>"
              for r in _class_rows(res)]
        h.append("</table>")
    h += [f"<h2>{t}</h2><img src='{f}'>" for t, f in plots]
    if samples:
        h.append("<h2>Samples (image | prediction | ground truth)</h2>")
        h += [f"<img src='samples/{p.name}'><br>" for p in samples]
    h.append("</body></html>")

    for name, text in (("report.md", "\n".join(md) + "\n"), ("report.html", "\n".join(h))):
        tmp = out_dir / (name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out_dir / name)
    return out_dir / "report.md"


__all__ = ["write_report", "plot_iou_bars", "plot_confusion"]
