"""Image preparation shared by the engines: short-side resize, sliding windows, padding."""
from __future__ import annotations

import math
from typing import List, Tuple

import cv2
import numpy as np
import torch

Window = Tuple[int, int, int, int]   # y1, y2, x1, x2 (half-open)


def short_side_size(h: int, w: int, short_side: int) -> Tuple[int, int]:
    """(new_h, new_w) with the short side equal to ``short_side`` (0 keeps the size).
    Rounded like mmcv's rescale (int(x * scale + 0.5)) so sizes match the benchmarks'."""
    if short_side <= 0:
        return h, w
    scale = short_side / min(h, w)
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


def resize_rgb(rgb: np.ndarray, size_hw: Tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an HxWx3 uint8 image (OpenCV, as the mmseg pipelines do)."""
    h, w = size_hw
    if rgb.shape[:2] == (h, w):
        return rgb
    return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 3xHxW float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().div_(255.0)


def window_grid(h: int, w: int, crop: int, stride: int) -> Tuple[int, int]:
    """(rows, columns) of ``sliding_windows(h, w, crop, stride)``, without listing them."""
    return (max(h - crop + stride - 1, 0) // stride + 1,
            max(w - crop + stride - 1, 0) // stride + 1)


def sliding_windows(h: int, w: int, crop: int, stride: int) -> List[Window]:
    """Windows covering an h x w image: a grid with the given stride whose last row and
    column are shifted back inside the image; every window is min(crop, h) x min(crop, w)."""
    rows, cols = window_grid(h, w, crop, stride)
    out = []
    for r in range(rows):
        for c in range(cols):
            y2 = min(r * stride + crop, h)
            x2 = min(c * stride + crop, w)
            out.append((max(y2 - crop, 0), y2, max(x2 - crop, 0), x2))
    return out


def centred_padding(h: int, w: int, multiple: int) -> Tuple[int, int, int, int]:
    """(left, right, top, bottom) padding bringing h and w to multiples of ``multiple``,
    split evenly with the extra pixel at the right/bottom."""
    def split(n: int) -> Tuple[int, int]:
        extra = (-n) % multiple
        return extra // 2, extra - extra // 2
    left, right = split(w)
    top, bottom = split(h)
    return left, right, top, bottom


def pad_with_colour(x: torch.Tensor, pad: Tuple[int, int, int, int],
                    colour: torch.Tensor) -> torch.Tensor:
    """Pad a B x 3 x H x W batch with a per-channel constant (e.g. the normalisation mean,
    which is zero after normalisation)."""
    if not any(pad):
        return x
    c = colour.view(1, -1, 1, 1).to(x)
    return torch.nn.functional.pad(x - c, pad) + c


def lcm(a: int, b: int) -> int:
    return a * b // math.gcd(a, b)
