"""Pinhole back-projection, the labelled point cloud and per-segment 3D statistics.

Coordinates are the colour camera's optical frame (x right, y down, z forward, metres):
``X = (u - cx) Z / fx``, ``Y = (v - cy) Z / fy`` with fx, fy, cx, cy from P of the
camera_info (``core/depth.py:Intrinsics``). Everything is vectorised over pixels; the
per-segment statistics take one sort of the valid pixels by segment id.

The labelled cloud (``CLOUD_DTYPE``, point_step 32) keeps PCL's PointXYZRGB layout
(what depth_image_proc's point_cloud_xyzrgb publishes, so RViz and PCL read it as usual)
and puts our fields in its padding:

    offset  field     type     meaning
     0      x         float32  metres, NaN when the pixel has no valid depth
     4      y         float32
     8      z         float32
    16      rgb       float32  bit pattern of the uint32 0x00RRGGBB (PCL convention)
    20      label     uint16   class id of ``semantic`` (65535 = unlabelled)
    24      instance  int32    segment id of ``panoptic`` (0 = no segment)

Organised (H x W, is_dense false, NaN points kept) or dense (valid points only), with a
pixel ``stride`` to thin either.
"""
from __future__ import annotations

from functools import lru_cache
from typing import List, Optional, Tuple

import numpy as np

from .depth import Intrinsics

#: the cloud's fields (name, offset, numpy type, PointField datatype)
CLOUD_FIELDS = (("x", 0, "<f4", 7), ("y", 4, "<f4", 7), ("z", 8, "<f4", 7),
                ("rgb", 16, "<f4", 7), ("label", 20, "<u2", 4), ("instance", 24, "<i4", 5))
CLOUD_DTYPE = np.dtype({"names": [f[0] for f in CLOUD_FIELDS],
                        "formats": [f[2] for f in CLOUD_FIELDS],
                        "offsets": [f[1] for f in CLOUD_FIELDS], "itemsize": 32})
#: erosion of each segment's mask before its centroid is taken (pixels of a square kernel)
ERODE_PX = 3
#: an eroded mask with fewer valid points than this falls back to the full mask
MIN_ERODED_POINTS = 20
#: quantiles of segments with more points come from their pixels on every second row and
#: column (a grid on the surface, not a random draw: at most half a pixel of bias)
STATS_MAX_POINTS = 4096


@lru_cache(maxsize=8)
def _rays(intr: Intrinsics) -> Tuple[np.ndarray, np.ndarray]:
    """(u - cx) / fx per column and (v - cy) / fy per row, for one camera (cached)."""
    u = (np.arange(intr.width, dtype=np.float64) - intr.cx) / intr.fx
    v = (np.arange(intr.height, dtype=np.float64) - intr.cy) / intr.fy
    u, v = u.astype(np.float32), v.astype(np.float32)
    u.setflags(write=False)
    v.setflags(write=False)
    return u, v


def backproject(metres: np.ndarray, intr: Intrinsics) -> np.ndarray:
    """H x W depth in metres (NaN invalid) -> H x W x 3 float32 points (NaN where invalid)."""
    z = np.asarray(metres, np.float32)
    if z.shape != (intr.height, intr.width):
        raise ValueError(f"depth is {z.shape[1]}x{z.shape[0]} but the intrinsics are for "
                         f"{intr.width}x{intr.height}")
    ru, rv = _rays(intr)
    out = np.empty(z.shape + (3,), np.float32)
    np.multiply(z, ru[None, :], out=out[..., 0])
    np.multiply(z, rv[:, None], out=out[..., 1])
    out[..., 2] = z
    return out


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 -> H x W float32 holding the uint32 0x00RRGGBB bit pattern."""
    import cv2

    # little-endian 0x00RRGGBB is the bytes B, G, R, 0: OpenCV's RGB -> BGRA with alpha 0
    bgra = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGRA)
    bgra[..., 3] = 0
    return bgra.view("<u4")[..., 0].view(np.float32)


def labelled_cloud(metres: np.ndarray, intr: Intrinsics, rgb: np.ndarray, semantic: np.ndarray,
                   panoptic: np.ndarray, *, organised: bool = True, stride: int = 1,
                   xyz: Optional[np.ndarray] = None) -> np.ndarray:
    """The labelled cloud as a CLOUD_DTYPE array: H x W (organised, NaN points kept) or N
    (dense: valid points only, row-major pixel order). ``stride`` keeps every stride-th row
    and column; ``xyz`` is ``backproject``'s result when the caller already has it."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if xyz is None:
        xyz = backproject(metres, intr)
    sl = (slice(None, None, stride), slice(None, None, stride))
    xyz = xyz[sl]
    h, w = xyz.shape[:2]
    # one H x W x 8 block of 4-byte words (the 32-byte point), filled column by column
    block = np.zeros((h, w, 8), np.float32)
    block[..., :3] = xyz
    block[..., 4] = pack_rgb(np.asarray(rgb)[sl])
    words = block.view(np.uint32)
    words[..., 5] = np.asarray(semantic)[sl]          # label: uint16 at 20, zero pad at 22
    words[..., 6] = np.asarray(panoptic, np.int32)[sl].view(np.uint32)
    cloud = block.view(CLOUD_DTYPE)[..., 0]
    if organised:
        return cloud
    return cloud[np.isfinite(xyz[..., 2])]


def _interior(panoptic: np.ndarray, px: int) -> np.ndarray:
    """Pixels whose (2 px + 1)^2 neighbourhood lies in their own segment: every segment's
    mask eroded at once (min and max filters of the id image agree only inside a segment)."""
    import cv2

    ids = panoptic.astype(np.float32)            # exact for ids below 2**24
    k = np.ones((2 * px + 1, 2 * px + 1), np.uint8)
    lo = cv2.erode(ids, k, borderType=cv2.BORDER_REPLICATE)
    hi = cv2.dilate(ids, k, borderType=cv2.BORDER_REPLICATE)
    return lo == hi


def segment_stats(xyz: np.ndarray, panoptic: np.ndarray, *, erode_px: int = ERODE_PX,
                  min_eroded: int = MIN_ERODED_POINTS) -> List[dict]:
    """Robust 3D statistics of every segment (id > 0) with valid depth, ordered by id:
    ``{"id", "centroid" [x, y, z], "size" [x, y, z], "valid_points", "depth_min",
    "depth_max", "eroded"}``.

    centroid: per-axis median of the valid points of the segment's mask eroded by
    ``erode_px`` (boundary pixels of a mask often see the background behind the object,
    since masks and depth edges never line up exactly); a segment whose eroded mask has
    fewer than ``min_eroded`` valid points (small or thin) uses its full mask
    (``eroded`` false). size: 95th minus 5th percentile per axis of the full mask's valid
    points; valid_points, depth_min and depth_max are of the full mask. Quantiles of a
    segment with more than STATS_MAX_POINTS points use its pixels on every second row and
    column (a quarter of the partition work, at most half a pixel of bias)."""
    pan = np.asarray(panoptic)
    top = int(pan.max()) if pan.size else 0
    if top <= 0:
        return []
    inner = _interior(pan, erode_px) if erode_px > 0 else np.ones(pan.shape, bool)
    # one sort of the key image: 2 id for interior pixels, 2 id + 1 for boundary ones, so
    # each segment is one run of the sorted pixels with its interior first; pixels without
    # depth or segment get key 0 or 1 (segment 0) and are skipped after the sort
    kt = np.uint16 if 2 * top + 1 < (1 << 16) else np.int64   # uint16: a radix sort
    key = np.where(pan > 0, pan, 0).astype(kt) * kt(2) + (~inner).astype(kt)
    key[~np.isfinite(xyz[..., 2])] = 0
    key = key.reshape(-1)
    counts = np.bincount(key, minlength=2 * top + 2)
    skip = int(counts[0] + counts[1])
    if skip == key.size:
        return []
    flat = np.argsort(key, kind="stable")[skip:]
    pts = np.empty((3, flat.size), np.float32)                  # one contiguous row per axis
    for a in range(3):
        np.take(xyz[..., a].reshape(-1), flat, out=pts[a])
    grid = _even_grid(*pan.shape).reshape(-1)[flat]
    counts[:2] = 0
    starts = np.concatenate([[0], np.cumsum(counts)])
    present = np.flatnonzero(counts[0::2] + counts[1::2])
    # depth range of every segment at once (segments are consecutive runs)
    seg_starts = starts[2 * present]
    zmin = np.minimum.reduceat(pts[2], seg_starts)
    zmax = np.maximum.reduceat(pts[2], seg_starts)
    out = []
    for j, sid in enumerate(present.tolist()):
        a, m, b = int(starts[2 * sid]), int(starts[2 * sid + 1]), int(starts[2 * sid + 2])
        eroded = m - a >= min_eroded
        e = m if eroded else b
        (centroid,) = _quantiles(_sample(pts[:, a:e], grid[a:e]), (0.5,))
        lo, hi = _quantiles(_sample(pts[:, a:b], grid[a:b]), (0.05, 0.95))
        out.append({"id": int(sid), "centroid": [float(v) for v in centroid],
                    "size": [float(v) for v in hi - lo], "valid_points": b - a,
                    "depth_min": float(zmin[j]), "depth_max": float(zmax[j]),
                    "eroded": bool(eroded)})
    return out


@lru_cache(maxsize=8)
def _even_grid(height: int, width: int) -> np.ndarray:
    """True on the pixels of every second row and column."""
    g = np.zeros((height, width), bool)
    g[::2, ::2] = True
    g.setflags(write=False)
    return g


def _sample(values: np.ndarray, on_grid: np.ndarray) -> np.ndarray:
    """A segment of more than STATS_MAX_POINTS points thinned to its pixels on every second
    row and column: a regular grid, so the quantiles move by at most half a pixel (a coarser
    grid, or a 1-in-k slice of the raster order, which aliases with the image width, biased
    the centroid of a frame-filling plane at 3 m by 1 to 4 cm)."""
    return values[:, on_grid] if values.shape[1] > STATS_MAX_POINTS else values


def _quantiles(values: np.ndarray, qs) -> List[np.ndarray]:
    """Per-row quantiles of a 3 x n block with numpy's default (linear) interpolation, from
    one partition of all three rows."""
    n = values.shape[1]
    pos = [q * (n - 1) for q in qs]
    kth = sorted({int(np.floor(p)) for p in pos} | {int(np.ceil(p)) for p in pos})
    part = np.partition(values, kth, axis=1)
    out = []
    for p in pos:
        lo, hi = int(np.floor(p)), int(np.ceil(p))
        out.append(part[:, lo] + (part[:, hi] - part[:, lo]) * np.float32(p - lo))
    return out


__all__ = ["CLOUD_DTYPE", "CLOUD_FIELDS", "backproject", "pack_rgb", "labelled_cloud",
           "segment_stats", "ERODE_PX", "MIN_ERODED_POINTS"]
