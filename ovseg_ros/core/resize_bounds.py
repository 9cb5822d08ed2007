"""Bounded resizes: what an engine's resize may produce, whatever the input's shape.

An engine's nominal resize (short side to N, optionally the long side capped) keeps
the cost of ordinary frames where the model was tuned, but an elongated frame can
still explode it: ProxyCLIP scales a 3 x 1000 frame's short side to 112 and gets a
112 x 37333 image (666 sliding windows), detectron2's long-side cap rounds a
2 x 4000 frame's short side to 0 pixels. The helpers here clamp instead of refusing,
the way FC-CLIP's own long-side cap does: the resized frame keeps the input's aspect
ratio and is scaled down until it fits the engine's limit, and no side goes below
``min_side``. A clamp is reported as a note naming the setting, the limit and the
shapes, which the engine puts on the Prediction (``Prediction.notes``).

Torch-free, so the limits can be checked (and tested) without a model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Tuple

Size = Tuple[int, int]   # (height, width)


@dataclass(frozen=True)
class BoundedSize:
    """The size a frame is resized to and, when a limit changed it, why."""

    size: Size
    notes: Tuple[str, ...] = ()


def _shape(size: Size) -> str:
    return f"{size[0]}x{size[1]}"


def shortest_edge(h: int, w: int, short: int, max_size: int, *, setting: str,
                  min_side: int = 1) -> BoundedSize:
    """detectron2's ResizeShortestEdge size (short side -> ``short``, long side capped at
    ``max_size``, rounded half up) with no side below ``min_side``.

    The long-side cap is the reference's own resize and is not reported; a side raised
    to ``min_side`` (the cap rounded it below, e.g. 2 x 4000 at max_size 256 gives
    0.128 x 256) changes the aspect ratio and is reported, naming ``setting``
    (the engine's max_size key)."""
    scale = short / min(h, w)
    nh, nw = h * scale, w * scale
    if max(nh, nw) > max_size:
        scale = max_size / max(nh, nw)
        nh, nw = nh * scale, nw * scale
    size = (int(nh + 0.5), int(nw + 0.5))
    if min(size) >= min_side:
        return BoundedSize(size)
    raised = (max(size[0], min_side), max(size[1], min_side))
    return BoundedSize(raised, (
        f"clamped by {setting}={max_size}: {_shape((h, w))} frame resized to "
        f"{_shape(raised)} (short side {min(nh, nw):.3g} px raised to {min_side} px; "
        "aspect ratio changed)",))


def fit_long_side(size: Size, fits: Callable[[int, int], bool], min_side: int = 1) -> Size:
    """The largest size with ``size``'s aspect ratio (sides rounded half up, none below
    ``min_side``) whose long side is at most ``size``'s and for which ``fits(h, w)``.

    ``fits`` must be monotone (a size that fits keeps fitting when shrunk) and true for
    ``(min_side, min_side)``; a binary search over the long side finds the answer in
    log2(long side) calls."""
    h, w = size
    if fits(h, w):
        return size
    long_side, short_side = max(h, w), min(h, w)

    def at(length: int) -> Size:
        other = max(min_side, int(short_side * length / long_side + 0.5))
        return (other, length) if w >= h else (length, other)

    lo, hi = min_side, long_side - 1          # at(lo) fits (checked below), at(hi + 1) not
    if not fits(*at(lo)):
        raise ValueError(f"no size of aspect {_shape(size)} fits, not even {_shape(at(lo))}")
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(*at(mid)):
            lo = mid
        else:
            hi = mid - 1
    return at(lo)


def capped(frame: Size, nominal: Size, fits: Callable[[int, int], bool], *, setting: str,
           limit: int, cost: Callable[[int, int], int], unit: str,
           min_side: int = 1) -> BoundedSize:
    """``nominal`` (the engine's usual resize of ``frame``) scaled down until
    ``fits``; a note names ``setting``, its ``limit`` and the ``cost`` in ``unit``
    of both sizes when the nominal size did not fit."""
    size = fit_long_side(nominal, fits, min_side)
    if size == nominal:
        return BoundedSize(size)
    return BoundedSize(size, (
        f"clamped by {setting}={limit}: {_shape(frame)} frame resized to {_shape(size)} "
        f"({cost(*size)} {unit}) instead of {_shape(nominal)} ({cost(*nominal)} {unit})",))


def bounded_resize(cfg, group: str, h: int, w: int) -> BoundedSize:
    """The resize of an h x w frame under ``<group>.short_side`` / ``<group>.max_size``
    (the detectron2-style engines: FC-CLIP, MAFT+, OVSeg): at most short_side x max_size
    pixels whatever the shape, and a note when a side had to be raised to 1 pixel."""
    return shortest_edge(h, w, cfg[f"{group}.short_side"], cfg[f"{group}.max_size"],
                         setting=f"{group}.max_size")


__all__ = ["BoundedSize", "shortest_edge", "fit_long_side", "capped", "bounded_resize"]
