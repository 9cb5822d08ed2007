"""Stable class colours and overlays for label images (node, CLIs, reports).

Colour of class id i is fixed forever, independent of the vocabulary size: the
PASCAL VOC colour-map construction (bits of i+1 spread over R, G, B from the
most significant bit down), so neighbouring ids get very different colours and
class 0 is not black. Unlabeled pixels are black.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .types import UNLABELED


def class_color(i: int) -> tuple:
    """(r, g, b) uint8 colour of class id ``i`` (i >= 0)."""
    if i < 0:
        raise ValueError(f"class id must be >= 0, got {i}")
    c = i + 1
    r = g = b = 0
    for shift in range(7, -1, -1):
        r |= (c & 1) << shift
        g |= ((c >> 1) & 1) << shift
        b |= ((c >> 2) & 1) << shift
        c >>= 3
        if c == 0:
            break
    return r, g, b


@lru_cache(maxsize=8)
def _palette(n: int) -> np.ndarray:
    pal = np.array([class_color(i) for i in range(n)], np.uint8).reshape(n, 3)
    pal.setflags(write=False)
    return pal


def _num_ids(labels: np.ndarray, num_classes: int) -> int:
    """Colours needed: num_classes, or more if labels hold larger ids (UNLABELED excluded)."""
    valid = labels[(labels >= 0) & (labels < UNLABELED)]
    return max(int(num_classes), int(valid.max()) + 1 if valid.size else 0)


def palette(n: int) -> np.ndarray:
    """n x 3 uint8 colours of class ids 0..n-1."""
    return _palette(max(int(n), 0))


def colorize(labels: np.ndarray, num_classes: int = 0) -> np.ndarray:
    """HxW integer labels -> HxWx3 uint8 colours; ids outside [0, n) (e.g. UNLABELED) are black."""
    labels = np.asarray(labels)
    n = _num_ids(labels, num_classes)
    pal = np.concatenate([palette(n), np.zeros((1, 3), np.uint8)])
    idx = np.where((labels >= 0) & (labels < n), labels, n)
    return pal[idx]


def overlay(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.5,
            num_classes: int = 0) -> np.ndarray:
    """Blend class colours over an HxWx3 uint8 image; unlabeled pixels keep the image."""
    if rgb.shape[:2] != labels.shape:
        raise ValueError(f"image {rgb.shape[:2]} and labels {labels.shape} differ in size")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colours = colorize(labels, num_classes).astype(np.float32)
    out = rgb.astype(np.float32)
    n = _num_ids(labels, num_classes)
    valid = ((labels >= 0) & (labels < n))[..., None]
    blended = (1.0 - alpha) * out + alpha * colours
    return np.where(valid, blended, out).round().clip(0, 255).astype(np.uint8)


__all__ = ["class_color", "palette", "colorize", "overlay"]
