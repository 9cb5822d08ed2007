"""What the reference comparisons (``scripts/compare_*reference.py``) and the bf16 measurement
share: the four comparison photos, the vocabulary, and the agreement figures.

Agreement is read against the official code's own noise: the reference runs with 1 and
with 2 torch threads, and

* raw agreement is the share of pixels whose label is the reference's (1 thread);
* the floor is the reference's own label agreement, 1 thread vs 2 threads;
* margin-aware agreement also counts a differing pixel when the reference's normalised
  per-pixel scores of the two labels are closer than the largest 1- vs 2-thread change of
  those scores on that photo (a tie the official code itself does not decide reproducibly).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import torch

#: the comparisons' vocabulary (one name per class, as the references' datasets have)
CLASSES = ["person", "sky", "tree", "grass", "building", "road", "cat", "cup", "table",
           "rocket", "water", "wall", "floor", "car", "face", "hair"]


def photos() -> Dict[str, np.ndarray]:
    """The four comparison photos (uint8 RGB, as the cameras deliver them): scikit-image's
    coffee, astronaut, chelsea and a 512x256 portrait crop of astronaut."""
    import skimage.data as data

    astro = data.astronaut()
    return {"coffee 400x600": data.coffee(), "astronaut 512x512": astro,
            "chelsea 300x451": data.chelsea(),
            "portrait 512x256": np.ascontiguousarray(astro[:, 128:384])}


def with_threads(threads: int, fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)`` under ``threads`` torch threads, the old count restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            return fn(*args, **kwargs)
    finally:
        torch.set_num_threads(before)


def normalised(scores: torch.Tensor) -> torch.Tensor:
    """K x H x W non-negative scores -> per-pixel shares (sum 1 over K)."""
    return scores / scores.sum(0, keepdim=True).clamp_min(1e-12)


def margin_agreement(ours: np.ndarray, ref_norm: torch.Tensor, margin: float) -> float:
    """Share of pixels with our label, or a label whose reference score is within
    ``margin`` of the reference's best (the reference does not decide it reproducibly)."""
    best = ref_norm.max(0).values
    mine = ref_norm.gather(0, torch.from_numpy(np.asarray(ours).astype(np.int64))[None])[0]
    return float(((best - mine) <= margin).float().mean())


def agreement(ours: np.ndarray, ref_1: torch.Tensor, ref_2: torch.Tensor) -> Dict[str, float]:
    """Our H x W labels against the reference's K x H x W non-negative scores with 1 thread
    (``ref_1``) and 2 threads (``ref_2``): raw, margin-aware, floor, the score noise the
    margin is and the number of classes the reference's labels hold."""
    labels = ref_1.argmax(0).numpy()
    n1, n2 = normalised(ref_1.float()), normalised(ref_2.float())
    noise = float((n1 - n2).abs().max())
    return {"raw": float((np.asarray(ours) == labels).mean()),
            "margin": margin_agreement(ours, n1, noise),
            "floor": float((ref_2.argmax(0).numpy() == labels).mean()),
            "reference_score_noise": noise,
            "classes_present": int(len(np.unique(labels)))}


def failures(rows: Dict[str, Dict[str, float]], min_agreement: float = 0.999) -> list:
    """The issue's targets per photo: raw agreement >= ``min_agreement`` or the reference's
    own floor, whichever is lower, and margin-aware agreement 100 %."""
    bad = []
    for name, r in rows.items():
        need = min(min_agreement, r["floor"])
        if r["raw"] < need:
            bad.append(f"{name}: raw agreement {r['raw']:.6f} < {need:.6f}")
        if r["margin"] < 1.0:
            bad.append(f"{name}: margin-aware agreement {r['margin']:.6f} < 1")
    return bad


def sem_seg_postprocess(result: torch.Tensor, img_size, output_height: int,
                        output_width: int) -> torch.Tensor:
    """STAND-IN for detectron2's ``sem_seg_postprocess`` (not installable here), written
    out: crop the padding to ``img_size``, bilinear resize (``align_corners=False``)."""
    import torch.nn.functional as F

    result = result[:, : img_size[0], : img_size[1]].expand(1, -1, -1, -1)
    return F.interpolate(result, size=(output_height, output_width), mode="bilinear",
                         align_corners=False)[0]


def segment_match(ours_pan: np.ndarray, ours_segments, ref_pan: np.ndarray, ref_info) -> dict:
    """Each reference panoptic segment (``ref_info``: detectron2's segments_info dicts) against
    the segment of ours that overlaps it most: the smallest IoU, whether every class
    agrees, the segment counts and the share of pixels with equal ids."""
    ious, same_class = [], True
    ours_class = {s.id: s.class_id for s in ours_segments}
    for seg in ref_info:
        ref_mask = ref_pan == seg["id"]
        ids, counts = np.unique(ours_pan[ref_mask], return_counts=True)
        best = int(ids[np.argmax(counts)])
        mine = ours_pan == best
        ious.append(float((ref_mask & mine).sum() / max(1, (ref_mask | mine).sum()))
                    if best else 0.0)
        same_class &= best != 0 and ours_class.get(best) == seg["category_id"]
    return {"segments_ref": len(ref_info), "segments_ours": len(ours_segments),
            "segment_iou_min": min(ious) if ious else 1.0, "segment_classes_equal": same_class,
            "panoptic_pixels_equal_ids": float((ours_pan == ref_pan).mean())}


def segment_failures(rows: Dict[str, dict], min_iou: float = 0.99) -> list:
    """The panoptic target per photo: every reference segment matched with IoU >= ``min_iou``,
    the same classes, the same number of segments."""
    return [f"{n}: panoptic segment IoU {r['segment_iou_min']:.4f} < {min_iou} or classes "
            f"differ ({r['segments_ours']} vs {r['segments_ref']} segments)"
            for n, r in rows.items()
            if r["segment_iou_min"] < min_iou or not r["segment_classes_equal"]
            or r["segments_ours"] != r["segments_ref"]]


HEADER = f"{'photo':>18} {'raw':>9} {'margin':>9} {'floor':>9} {'noise':>9} {'classes':>7}"


def row_text(name: str, r: Dict[str, float]) -> str:
    """One line of the table under ``HEADER``."""
    return (f"{name:>18} {r['raw']:>9.4%} {r['margin']:>9.4%} {r['floor']:>9.4%} "
            f"{r['reference_score_noise']:>9.2e} {r['classes_present']:>7}")



def report_verdict(bad: List[str], results: dict, json_path=None) -> int:
    """Print each failed check and the verdict, write ``results`` as JSON when asked;
    the exit status of a comparison script (0: every check passed)."""
    for b in bad:
        print("FAIL:", b)
    print("PASS" if not bad else f"FAIL: {len(bad)} check(s)")
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=1))
    return 0 if not bad else 1

__all__ = ["CLASSES", "photos", "with_threads", "normalised", "margin_agreement", "agreement",
           "failures", "sem_seg_postprocess", "segment_match", "segment_failures", "HEADER",
           "row_text", "report_verdict"]
