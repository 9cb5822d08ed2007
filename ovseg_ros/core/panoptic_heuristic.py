"""Semantic -> panoptic conversion for semantic-only engines (ProxyCLIP).

A HEURISTIC, not a panoptic model: ProxyCLIP predicts a class per pixel and
knows nothing about instances. Here every stuff class present becomes one
segment, and every thing class is split into its 8-connected components
(OpenCV); components smaller than ``min_thing_area`` pixels get no segment
(panoptic id 0). Two touching objects of one class therefore merge into one
instance, and one object cut in two by an occluder becomes two. Use FC-CLIP
when instance quality matters.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .types import Segment


def _bbox(mask: np.ndarray) -> Tuple[int, int, int, int]:
    x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
    return int(x), int(y), int(w), int(h)


def semantic_to_panoptic(semantic: np.ndarray, confidence: Optional[np.ndarray],
                         is_thing: Sequence[bool], min_thing_area: int = 0
                         ) -> Tuple[np.ndarray, List[Segment]]:
    """(panoptic HxW int32 with 0 = no segment, segments) from class ids and confidences.

    A segment's score is the mean confidence of its pixels; NaN when ``confidence`` is
    None (not computed: ``predict(..., confidence=False)``). Ids start at 1 and
    follow class order, then component order (OpenCV's raster order).
    """
    if confidence is not None and semantic.shape != confidence.shape:
        raise ValueError(f"semantic {semantic.shape} and confidence {confidence.shape} differ")
    panoptic = np.zeros(semantic.shape, np.int32)
    segments: List[Segment] = []
    classes = np.unique(semantic)
    next_id = 1
    for c in classes.tolist():
        if c < 0 or c >= len(is_thing):
            continue   # unlabeled pixels (UNLABELED or any id outside the vocabulary)
        mask = semantic == c
        if not is_thing[c]:
            parts = [mask]
        else:
            n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8),
                                                                   connectivity=8)
            parts = [labels == k for k in range(1, n)
                     if stats[k, cv2.CC_STAT_AREA] >= max(min_thing_area, 1)]
        for part in parts:
            area = int(part.sum())
            panoptic[part] = next_id
            segments.append(Segment(id=next_id, class_id=int(c), is_thing=bool(is_thing[c]),
                                    score=(float(confidence[part].mean())
                                           if confidence is not None else float("nan")),
                                    area=area,
                                    bbox=_bbox(part)))
            next_id += 1
    return panoptic, segments


__all__ = ["semantic_to_panoptic"]
