"""Mask-classification post-processing (Mask2Former / FC-CLIP inference rules).

Inputs are per-query class logits ``mask_cls`` (Q x (K+1), the last column is
"void"/no-object) and mask logits ``mask_pred`` (Q x H x W).

Semantic: softmax over K+1, drop void, weight sigmoid(masks): scores[k, p] =
sum_q P(k|q) sigmoid(mask_q[p]); label = argmax.

Panoptic:
  1. keep queries whose best class is not void and whose score exceeds
     ``object_mask_threshold``;
  2. each pixel goes to the kept query with the largest score * sigmoid(mask);
  3. a query's segment = its pixels where also sigmoid(mask) >= 0.5; it is
     dropped when that region is empty or holds less than ``overlap_threshold``
     of its own (sigmoid >= 0.5) mask;
  4. stuff segments of one class merge into one id; every thing query gets its own.
Segment ids start at 1 in query order; 0 = no segment.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .types import Segment


def semantic_inference(mask_cls: torch.Tensor, mask_pred: torch.Tensor) -> torch.Tensor:
    """Q x (K+1) logits, Q x H x W mask logits -> K x H x W class scores."""
    probs = F.softmax(mask_cls, dim=-1)[..., :-1]
    return torch.einsum("qc,qhw->chw", probs, mask_pred.sigmoid())


def select_queries(mask_cls: torch.Tensor, object_mask_threshold: float
                   ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(keep mask Q, scores Q, labels Q) of step 1; void is the last column."""
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    num_classes = mask_cls.shape[-1] - 1
    keep = labels.ne(num_classes) & (scores > object_mask_threshold)
    return keep, scores, labels


def _bbox(mask: np.ndarray) -> Tuple[int, int, int, int]:
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    return int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)


def merge_segments(scores: torch.Tensor, labels: torch.Tensor, mask_probs: torch.Tensor,
                   is_thing: Sequence[bool], overlap_threshold: float,
                   with_queries: bool = False):
    """Steps 2-4 for the kept queries: scores N, labels N (class ids), mask_probs
    N x H x W sigmoid probabilities -> (H x W int32 panoptic ids, segments).

    A merged stuff segment's score is the best score among its queries.
    ``with_queries``: a third element, segment id -> the indices (into the N kept
    queries) that made it (segment embeddings pool their queries' CLIP embeddings).
    """
    n = mask_probs.shape[0]
    return merge_segments_chunked(scores, labels, lambda i0, i1: mask_probs[i0:i1],
                                  tuple(mask_probs.shape[-2:]), is_thing, overlap_threshold,
                                  chunk=max(1, n), device=mask_probs.device,
                                  with_queries=with_queries)


def merge_segments_chunked(scores: torch.Tensor, labels: torch.Tensor,
                           mask_probs: Callable[[int, int], torch.Tensor], shape: Tuple[int, int],
                           is_thing: Sequence[bool], overlap_threshold: float, *, chunk: int,
                           device=None, with_queries: bool = False):
    """``merge_segments`` with the N x H x W masks produced ``chunk`` queries at a time
    (``mask_probs(i0, i1)``): memory is a chunk plus a few H x W planes, not N x H x W
    (250 queries at 3840 x 2160 would be 8 GB). With more than one chunk each chunk is
    produced twice: once for the per-pixel owner and the queries' own areas, once to
    cut the segments. The owner is the first query of the largest score * mask, as
    ``argmax`` over all queries at once gives, so the result does not depend on ``chunk``.
    ``with_queries``: as in ``merge_segments``.
    """
    h, w = shape
    n = int(scores.shape[0])
    panoptic = torch.zeros((h, w), dtype=torch.int32, device=device)
    queries: Dict[int, List[int]] = {}
    if n == 0:
        return (panoptic.cpu().numpy(), [], queries) if with_queries else \
            (panoptic.cpu().numpy(), [])
    ranges = [(i, min(n, i + chunk)) for i in range(0, n, chunk)]
    cached = mask_probs(0, n) if len(ranges) == 1 else None

    def probs(i0: int, i1: int) -> torch.Tensor:
        return cached if cached is not None else mask_probs(i0, i1)

    best = owner = None
    for i0, i1 in ranges:
        weighted = scores[i0:i1].view(-1, 1, 1) * probs(i0, i1)
        index = weighted.argmax(0)                # the first maximum, as documented
        value = weighted.gather(0, index[None])[0]
        index += i0
        del weighted
        if best is None:
            best, owner = value, index
        else:
            better = value > best        # strict: an earlier query keeps a tie, as argmax
            best = torch.where(better, value, best)
            owner = torch.where(better, index, owner)
    segs = []                      # [id, class, is_thing, score]
    stuff_ids = {}
    for i0, i1 in ranges:
        m = probs(i0, i1)
        for j in range(i1 - i0):
            k = i0 + j
            cls = int(labels[k])
            thing = bool(is_thing[cls])
            won = owner == k
            own = m[j] >= 0.5
            mask_area = int(won.sum())
            original_area = int(own.sum())
            mask = won & own
            if mask_area == 0 or original_area == 0 or not bool(mask.any()):
                continue
            if mask_area / original_area < overlap_threshold:
                continue
            score = float(scores[k])
            if not thing and cls in stuff_ids:
                seg = segs[stuff_ids[cls]]
                panoptic[mask] = seg[0]
                seg[3] = max(seg[3], score)
                queries[seg[0]].append(k)
                continue
            seg_id = len(segs) + 1
            if not thing:
                stuff_ids[cls] = len(segs)
            panoptic[mask] = seg_id
            queries[seg_id] = [k]
            segs.append([seg_id, cls, thing, score])
    pan = panoptic.cpu().numpy()
    areas = np.bincount(pan.ravel(), minlength=len(segs) + 1)
    segments = []
    for seg_id, cls, thing, score in segs:
        segments.append(Segment(id=seg_id, class_id=cls, is_thing=thing, score=score,
                                area=int(areas[seg_id]), bbox=_bbox(pan == seg_id)))
    return (pan, segments, queries) if with_queries else (pan, segments)


def panoptic_inference(mask_cls: torch.Tensor, mask_pred: torch.Tensor,
                       is_thing: Sequence[bool], object_mask_threshold: float = 0.0,
                       overlap_threshold: float = 0.8) -> Tuple[np.ndarray, List[Segment]]:
    """Q x (K+1) logits, Q x H x W mask logits -> (H x W int32 ids, segments)."""
    if len(is_thing) != mask_cls.shape[-1] - 1:
        raise ValueError(f"is_thing has {len(is_thing)} entries for {mask_cls.shape[-1] - 1} "
                         "classes")
    keep, scores, labels = select_queries(mask_cls, object_mask_threshold)
    return merge_segments(scores[keep], labels[keep], mask_pred[keep].sigmoid(), is_thing,
                          overlap_threshold)


__all__ = ["semantic_inference", "panoptic_inference", "select_queries", "merge_segments",
           "merge_segments_chunked"]
