"""Tracking metrics (MOTA, IDF1, ID switches) with ``motmetrics`` over mask sequences.

Per frame, the ground-truth instances and the predicted segments (their published
ids: track ids when tracking is on) are paired by mask IoU: a pair may match only at
IoU >= ``iou_threshold`` (0.5, the MOTS convention), with distance 1 - IoU.
``motmetrics`` then does the CLEAR-MOT bookkeeping (carried-over matches, switches,
misses, false positives) and the ID measures. Stuff (``ignore`` ids, e.g. the floor)
is left out of both sides.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional

import numpy as np


class TrackingEvalError(RuntimeError):
    """The tracking evaluation cannot run (motmetrics missing); the message says what to do."""


def _motmetrics():
    try:
        import motmetrics
    except ImportError as exc:
        raise TrackingEvalError("tracking metrics need the motmetrics package "
                                "(requirements/runtime.txt: motmetrics==1.4.0)") from exc
    return motmetrics


def mask_iou_matrix(gt: np.ndarray, pred: np.ndarray, gt_ids: List[int],
                    pred_ids: List[int]) -> np.ndarray:
    """len(gt_ids) x len(pred_ids) IoU of two id maps, from one joint histogram."""
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth {gt.shape} and prediction {pred.shape} differ in size")
    g_index = np.zeros(int(gt.max(initial=0)) + 1, np.int64)
    p_index = np.zeros(int(pred.max(initial=0)) + 1, np.int64)
    g_index[gt_ids] = np.arange(1, len(gt_ids) + 1)
    p_index[pred_ids] = np.arange(1, len(pred_ids) + 1)
    g, p = g_index[gt.ravel()], p_index[pred.ravel()]
    n_g, n_p = len(gt_ids) + 1, len(pred_ids) + 1
    joint = np.bincount(g * n_p + p, minlength=n_g * n_p).reshape(n_g, n_p)
    inter = joint[1:, 1:].astype(np.float64)
    union = joint[1:].sum(1)[:, None] + joint[:, 1:].sum(0)[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


class TrackingEvaluator:
    """Accumulate frames, then ``summary()``. Ids are compared as given: ground truth
    from the dataset, predictions as published."""

    def __init__(self, iou_threshold: float = 0.5, ignore_gt: Iterable[int] = (),
                 ignore_pred: Iterable[int] = ()):
        mm = _motmetrics()
        self._mm = mm
        self.acc = mm.MOTAccumulator(auto_id=False)
        self.iou_threshold = float(iou_threshold)
        self.ignore_gt = set(ignore_gt)
        self.ignore_pred = set(ignore_pred)
        self.frames = 0

    def add_frame(self, gt: np.ndarray, pred: np.ndarray) -> None:
        """One frame: ground-truth instance ids and predicted ids (0 = none, both HxW)."""
        gt_ids = [i for i in np.unique(gt).tolist() if i and i not in self.ignore_gt]
        pred_ids = [i for i in np.unique(pred).tolist() if i and i not in self.ignore_pred]
        iou = mask_iou_matrix(gt, pred, gt_ids, pred_ids)
        dist = np.where(iou >= self.iou_threshold, 1.0 - iou, np.nan)
        self.acc.update(gt_ids, pred_ids, dist, frameid=self.frames)
        self.frames += 1

    def switches(self) -> List[Dict[str, int]]:
        """Where the ID switches happen: frame, ground-truth id, previous and new predicted id."""
        events = self.acc.mot_events
        out = []
        last: Dict[int, int] = {}
        for (frame, _), row in events.iterrows():
            if row["Type"] in ("MATCH", "SWITCH"):
                oid, hid = int(row["OId"]), int(row["HId"])
                if row["Type"] == "SWITCH":
                    out.append({"frame": int(frame), "gt_id": oid,
                                "previous_id": last.get(oid, 0), "id": hid})
                last[oid] = hid
        return out

    def summary(self, name: str = "sequence") -> Dict[str, object]:
        """MOTA, MOTP (mean 1 - IoU of matches), IDF1, ID switches and the counts."""
        mh = self._mm.metrics.create()
        metrics = ["mota", "motp", "idf1", "idp", "idr", "num_switches", "num_false_positives",
                   "num_misses", "num_objects", "num_unique_objects", "mostly_tracked",
                   "num_fragmentations"]
        df = mh.compute(self.acc, metrics=metrics, name=name)
        row = {k: df.loc[name, k] for k in metrics}
        out: Dict[str, object] = {k: (int(v) if k.startswith(("num_", "mostly")) else float(v))
                                  for k, v in row.items()}
        out["frames"] = self.frames
        out["switches"] = self.switches()
        return out


def switches_outside(switches: List[Dict[str, int]],
                     occluded: List[set], window: int = 0) -> List[Dict[str, int]]:
    """The switches whose ground-truth object was not occluded at that frame (or within
    ``window`` frames before it)."""
    out = []
    for s in switches:
        f = s["frame"]
        near = set().union(*occluded[max(0, f - window):f + 1]) if occluded else set()
        if s["gt_id"] not in near:
            out.append(s)
    return out


def format_summary(summary: Dict[str, object], title: Optional[str] = None) -> str:
    """A short text report: the metrics line and one line per ID switch."""
    lines = [title] if title else []
    lines.append("MOTA {mota:.4f}  IDF1 {idf1:.4f}  ID switches {num_switches}  "
                 "FP {num_false_positives}  misses {num_misses}  objects {num_objects}  "
                 "frames {frames}".format(**summary))
    for s in summary["switches"]:
        lines.append(f"  switch at frame {s['frame']}: ground truth {s['gt_id']} "
                     f"{s['previous_id']} -> {s['id']}")
    return "\n".join(lines)


__all__ = ["TrackingEvaluator", "TrackingEvalError", "mask_iou_matrix", "switches_outside",
           "format_summary"]
