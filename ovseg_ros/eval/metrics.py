"""Accumulating segmentation metrics: mIoU / accuracies and PQ / SQ / RQ.

Both metrics are ``torchmetrics.Metric`` subclasses whose states are sums
(``dist_reduce_fx="sum"``): a confusion matrix for semantic segmentation and
per-class TP / FP / FN / IoU-sum counters for panoptic quality. Sums add, so
the same metric runs single-process, over shards that are merged later
(``merge_state``), or under ``torchrun`` with torchmetrics' distributed sync,
and always gives the result of one single pass.

Conventions
-----------
* Ground-truth semantic labels are integer class ids in ``[0, C)``; ``IGNORE``
  (-1) marks pixels that are not evaluated. Dataset readers map each
  benchmark's own ignore convention to ``IGNORE``.
* Predicted ``UNLABELED`` (65535, the node's "no class" value) counts as "no
  prediction": a miss for the ground-truth class, a false positive for none.
  Any other predicted id outside ``[0, C)`` means the engine's vocabulary does
  not match the class list, and raises.
* Panoptic quality follows the COCO definition (Kirillov et al., 2019, and
  the COCO panoptic evaluation): segment id 0 is void; a prediction matches a
  ground-truth segment of the same class when their IoU exceeds 0.5, the union
  leaving out predicted pixels on void ground truth; crowd regions are not
  counted as false negatives, and an unmatched prediction lying more than half
  on void or on the crowd region of its class is not a false positive. As in
  the COCO reference evaluation (panopticapi ``pq_compute``), a class has at
  most one crowd region per image: when the ground truth lists several crowd
  segments of one class, the last one listed is that region (COCO's own
  annotations never hold two), and every listed non-crowd segment that is not
  matched is a false negative.
* IoU sums are kept exactly: every matched IoU (a float64 in (0.5, 1]) is an
  integer multiple of 2**-53, so the state holds those integers (in two int64
  limbs) and sums of any grouping or order (shards, torchrun ranks) are
  identical bit for bit; the float sum is formed once, in ``compute``.
"""
from __future__ import annotations

import math
from typing import Dict, Mapping, Sequence, Tuple

import numpy as np
import torch
from torchmetrics import Metric

from ..core.types import UNLABELED

#: ground-truth value of pixels that are not evaluated
IGNORE = -1

#: matched IoUs are stored as integers in units of 2**-IOU_BITS, split into two limbs of
#: IOU_LIMB bits so that 2**36 matches per class fit in int64 before any overflow
IOU_BITS = 53
IOU_LIMB = 26


class LabelError(ValueError):
    """A label map does not fit the class list (ids out of range, shape mismatch)."""


def _as_int64(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2:
        raise LabelError(f"{what} must be a 2-D HxW label map, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.integer):
        raise LabelError(f"{what} must hold integers, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


class SemanticSegmentationMetric(Metric):
    """Confusion-matrix based mIoU, mean accuracy, pixel accuracy and per-class IoU.

    ``confusion[g, p]`` counts pixels of ground-truth class ``g`` predicted as
    ``p``; the extra last column counts pixels with no prediction (UNLABELED).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, num_classes: int, **kwargs):
        # states are reduced explicitly (``sync``) by the distributed runner: a compute() on
        # rank 0 alone must not start a collective the other ranks never join
        kwargs.setdefault("sync_on_compute", False)
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.add_state("confusion", torch.zeros(num_classes, num_classes + 1, dtype=torch.int64),
                       dist_reduce_fx="sum", persistent=True)

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:  # type: ignore[override]
        """Add one image: ``pred`` and ``target`` are HxW integer label maps."""
        pred = _as_int64(pred, "prediction")
        target = _as_int64(target, "ground truth")
        if pred.shape != target.shape:
            raise LabelError(f"prediction {pred.shape} and ground truth {target.shape} differ in "
                             "size; predictions must be at the label resolution")
        c = self.num_classes
        bad_gt = (target != IGNORE) & ((target < 0) | (target >= c))
        if bad_gt.any():
            raise LabelError(f"ground truth holds class ids {_few(target[bad_gt])} outside "
                             f"[0, {c}) for a class list of {c} classes: the class-name file "
                             "does not match these labels (or the ignore label is wrong)")
        no_pred = pred == UNLABELED
        bad_pred = ~no_pred & ((pred < 0) | (pred >= c))
        if bad_pred.any():
            raise LabelError(f"prediction holds class ids {_few(pred[bad_pred])} outside [0, {c}): "
                             "the engine's vocabulary does not match the class list")
        valid = target != IGNORE
        col = np.where(no_pred, c, pred)[valid]
        idx = target[valid] * (c + 1) + col
        counts = np.bincount(idx, minlength=c * (c + 1)).reshape(c, c + 1)
        self.confusion += torch.from_numpy(counts)

    def compute(self) -> Dict[str, object]:
        """mIoU etc. Classes absent from both ground truth and prediction get IoU NaN
        and are left out of the means (the mmseg / detectron2 convention)."""
        cm = self.confusion.double().numpy()
        c = self.num_classes
        tp = np.diag(cm[:, :c])
        gt_count = cm.sum(axis=1)                     # includes "no prediction"
        pred_count = cm[:, :c].sum(axis=0)
        union = gt_count + pred_count - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            acc = np.where(gt_count > 0, tp / gt_count, np.nan)
        total = cm.sum()
        present = gt_count > 0
        freq = gt_count / total if total > 0 else np.zeros(c)
        valid_iou = ~np.isnan(iou)
        return {
            "mIoU": float(np.nanmean(iou)) if valid_iou.any() else float("nan"),
            "fwIoU": float((freq[valid_iou] * iou[valid_iou]).sum()) if total > 0 else float("nan"),
            "mAcc": float(np.nanmean(acc)) if present.any() else float("nan"),
            "pAcc": float(tp.sum() / total) if total > 0 else float("nan"),
            "per_class_iou": iou.tolist(),
            "per_class_acc": acc.tolist(),
            "gt_pixels": gt_count.astype(np.int64).tolist(),
            "pixels": int(total),
        }


class PanopticQualityMetric(Metric):
    """PQ / SQ / RQ overall, over things and over stuff (COCO definition)."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, is_thing: Sequence[bool], **kwargs):
        kwargs.setdefault("sync_on_compute", False)
        super().__init__(**kwargs)
        if not len(is_thing):
            raise ValueError("is_thing must name at least one class")
        self.is_thing = tuple(bool(t) for t in is_thing)
        c = len(self.is_thing)
        self.num_classes = c
        for name in ("tp", "fp", "fn"):
            self.add_state(name, torch.zeros(c, dtype=torch.int64), dist_reduce_fx="sum",
                           persistent=True)
        # exact IoU sums: [high, low] limbs of sum(iou * 2**53) per class
        self.add_state("iou_fixed", torch.zeros(c, 2, dtype=torch.int64), dist_reduce_fx="sum",
                       persistent=True)

    @property
    def iou_sum(self) -> np.ndarray:
        """Per-class sum of matched IoUs (float64, the exact sum rounded once)."""
        hi, lo = self.iou_fixed.cpu().numpy().T.tolist()
        return np.array([math.ldexp(float((h << IOU_LIMB) + l), -IOU_BITS)
                         for h, l in zip(hi, lo)], np.float64)

    def update(self, pred_panoptic: np.ndarray,  # type: ignore[override]
               pred_segments: Mapping[int, int],
               gt_panoptic: np.ndarray,
               gt_segments: Mapping[int, Tuple[int, bool]]) -> None:
        """Add one image.

        pred_panoptic / gt_panoptic: HxW segment ids (0 = void).
        pred_segments: segment id -> class id.
        gt_segments: segment id -> (class id, iscrowd).
        """
        pred = _as_int64(pred_panoptic, "predicted panoptic map")
        gt = _as_int64(gt_panoptic, "ground-truth panoptic map")
        if pred.shape != gt.shape:
            raise LabelError(f"predicted panoptic {pred.shape} and ground truth {gt.shape} "
                             "differ in size")
        c = self.num_classes
        for what, mapping, get_class in (("predicted", pred_segments, lambda v: v),
                                         ("ground-truth", gt_segments, lambda v: v[0])):
            for sid, val in mapping.items():
                cls = int(get_class(val))
                if not 0 <= cls < c:
                    raise LabelError(f"{what} segment {sid} has class id {cls} outside [0, {c}): "
                                     "the class-name file does not match these labels")
        # Pixel-pair counts: one np.unique over gt_id * K + pred_id.
        k = int(max(pred.max(initial=0), 0)) + 1
        if pred.min(initial=0) < 0 or gt.min(initial=0) < 0:
            raise LabelError("panoptic segment ids must be >= 0")
        pairs, counts = np.unique(gt.ravel() * k + pred.ravel(), return_counts=True)
        gt_ids, pred_ids = pairs // k, pairs % k
        gt_area: Dict[int, int] = {}
        pred_area: Dict[int, int] = {}
        inter: Dict[Tuple[int, int], int] = {}
        for g, p, n in zip(gt_ids.tolist(), pred_ids.tolist(), counts.tolist()):
            gt_area[g] = gt_area.get(g, 0) + n
            pred_area[p] = pred_area.get(p, 0) + n
            inter[(g, p)] = n
        for g in gt_area:
            if g != 0 and g not in gt_segments:
                raise LabelError(f"ground-truth panoptic map holds segment id {g} that is not in "
                                 "its segments_info")
        for p in pred_area:
            if p != 0 and p not in pred_segments:
                raise LabelError(f"predicted panoptic map holds segment id {p} without a segment "
                                 "entry")

        tp = np.zeros(c, np.int64)
        fp = np.zeros(c, np.int64)
        fn = np.zeros(c, np.int64)
        iou_fixed = np.zeros((c, 2), np.int64)
        gt_matched, pred_matched = set(), set()
        for (g, p), n in inter.items():
            if g == 0 or p == 0:
                continue
            g_cls, g_crowd = int(gt_segments[g][0]), bool(gt_segments[g][1])
            if g_crowd or int(pred_segments[p]) != g_cls:
                continue
            union = pred_area[p] + gt_area[g] - n - inter.get((0, p), 0)
            iou = n / union
            if iou > 0.5:   # > 0.5 makes every match unique
                gt_matched.add(g)
                pred_matched.add(p)
                tp[g_cls] += 1
                m = int(math.ldexp(iou, IOU_BITS))      # exact: iou is k * 2**-53
                iou_fixed[g_cls, 0] += m >> IOU_LIMB
                iou_fixed[g_cls, 1] += m & ((1 << IOU_LIMB) - 1)
        # the reference keeps one crowd region per class: the last crowd segment listed
        crowd_of_class: Dict[int, int] = {}
        for g, (g_cls, g_crowd) in gt_segments.items():
            if g_crowd:
                crowd_of_class[int(g_cls)] = g
            elif g not in gt_matched:
                fn[int(g_cls)] += 1
        for p, area in pred_area.items():
            if p == 0 or p in pred_matched:
                continue
            p_cls = int(pred_segments[p])
            ignored = inter.get((0, p), 0)
            if p_cls in crowd_of_class:
                ignored += inter.get((crowd_of_class[p_cls], p), 0)
            if ignored / area > 0.5:
                continue
            fp[p_cls] += 1
        self.tp += torch.from_numpy(tp)
        self.fp += torch.from_numpy(fp)
        self.fn += torch.from_numpy(fn)
        self.iou_fixed += torch.from_numpy(iou_fixed)

    def compute(self) -> Dict[str, object]:
        tp = self.tp.double().numpy()
        fp = self.fp.double().numpy()
        fn = self.fn.double().numpy()
        iou_sum = self.iou_sum
        denom = tp + 0.5 * fp + 0.5 * fn
        with np.errstate(invalid="ignore", divide="ignore"):
            sq = np.where(tp > 0, iou_sum / np.maximum(tp, 1), 0.0)
            rq = np.where(denom > 0, tp / np.maximum(denom, 1e-12), 0.0)
        pq = sq * rq
        counted = denom > 0
        things = np.array(self.is_thing)
        out: Dict[str, object] = {}
        for group, sel in (("All", np.ones_like(things)), ("Things", things),
                           ("Stuff", ~things)):
            m = counted & sel
            n = int(m.sum())
            out[group] = {"PQ": float(pq[m].mean()) if n else float("nan"),
                          "SQ": float(sq[m].mean()) if n else float("nan"),
                          "RQ": float(rq[m].mean()) if n else float("nan"),
                          "n": n}
        pq_c = np.where(counted, pq, np.nan)
        out["per_class_pq"] = pq_c.tolist()
        out["per_class_sq"] = np.where(counted, sq, np.nan).tolist()
        out["per_class_rq"] = np.where(counted, rq, np.nan).tolist()
        out["tp"] = self.tp.tolist()
        out["fp"] = self.fp.tolist()
        out["fn"] = self.fn.tolist()
        return out


def semantic_from_panoptic(panoptic: np.ndarray, segments: Mapping[int, Tuple[int, bool]],
                           ) -> np.ndarray:
    """HxW class ids (IGNORE on void) from a panoptic map and its segments."""
    pan = _as_int64(panoptic, "panoptic map")
    ids = np.unique(pan)
    lut_keys = ids
    lut_vals = np.array([int(segments[i][0]) if i in segments else IGNORE for i in ids.tolist()],
                        np.int64)
    return lut_vals[np.searchsorted(lut_keys, pan)]


def metric_arrays(metric: Metric) -> Dict[str, np.ndarray]:
    """The metric's sum states as numpy arrays (for state files)."""
    return {k: v.detach().cpu().numpy() for k, v in metric.metric_state.items()}


def load_metric_arrays(metric: Metric, arrays: Mapping[str, np.ndarray]) -> None:
    """Replace the metric's states by saved arrays (shape-checked)."""
    for name, cur in metric.metric_state.items():
        if name not in arrays:
            raise ValueError(f"saved state lacks {name!r}")
        a = np.asarray(arrays[name])
        if a.shape != tuple(cur.shape):
            raise ValueError(f"saved state {name!r} has shape {a.shape}, expected "
                             f"{tuple(cur.shape)}: the class list differs")
        setattr(metric, name, torch.from_numpy(a.astype(cur.numpy().dtype)).to(cur.device))
    metric._update_count = max(metric._update_count, 1)   # compute() without a warning


def _few(values: np.ndarray, n: int = 8) -> str:
    u = np.unique(values)
    s = ", ".join(str(int(v)) for v in u[:n])
    return f"[{s}{', ...' if len(u) > n else ''}]"


__all__ = ["IGNORE", "LabelError", "SemanticSegmentationMetric", "PanopticQualityMetric",
           "semantic_from_panoptic", "metric_arrays", "load_metric_arrays"]
