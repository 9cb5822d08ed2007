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

import array
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


def cloud_buffer(shape: Tuple[int, ...]) -> np.ndarray:
    """A CLOUD_DTYPE array of ``shape`` whose memory is an ``array.array('B')``: the
    PointCloud2 ``data`` field of rclpy messages is such an array, so the cloud written here
    becomes the message payload without a copy (``cloud_storage`` gives the array back).
    Its bytes are zero (one memset), every point is then written whole."""
    n = int(np.prod(shape, dtype=np.int64)) * CLOUD_DTYPE.itemsize
    store = array.array("B", b"\0") * n
    if n == 0:
        return np.zeros(shape, CLOUD_DTYPE)
    return np.frombuffer(store, CLOUD_DTYPE).reshape(shape)


def cloud_storage(cloud: np.ndarray) -> Optional[array.array]:
    """The ``array.array('B')`` that holds exactly the bytes of ``cloud`` (a ``cloud_buffer``
    result), or None for an array with other storage (a slice, a copy)."""
    obj = cloud
    while obj is not None and not isinstance(obj, array.array):
        obj = getattr(obj, "base", None) if isinstance(obj, np.ndarray) else \
            getattr(obj, "obj", None)                   # a memoryview: its exporter
    if obj is None or not cloud.flags.c_contiguous:
        return None
    addr, n = obj.buffer_info()
    return obj if (addr, n) == (cloud.ctypes.data, cloud.nbytes) else None


def _fill_points(words: np.ndarray, z: np.ndarray, ru: np.ndarray, rv: np.ndarray,
                 rgb_words: np.ndarray, label: np.ndarray, instance: np.ndarray) -> None:
    """Write whole 32-byte points (``words``: ... x 8 uint32 view of the cloud): x = z ru,
    y = z rv (float32, the products ``backproject`` makes), z, rgb, label, instance and
    zeros in the padding, so no byte is left unwritten."""
    f = words.view(np.float32)
    np.multiply(z, ru, out=f[..., 0])
    np.multiply(z, rv, out=f[..., 1])
    f[..., 2] = z
    words[..., 3] = 0
    words[..., 4] = rgb_words
    words[..., 5] = label                       # uint16 at 20, zero pad at 22
    words[..., 6] = instance.view(np.uint32)
    words[..., 7] = 0


def labelled_cloud(metres: np.ndarray, intr: Intrinsics, rgb: np.ndarray, semantic: np.ndarray,
                   panoptic: np.ndarray, *, organised: bool = True,
                   stride: int = 1) -> np.ndarray:
    """The labelled cloud as a CLOUD_DTYPE array: H x W (organised, NaN points kept) or N
    (dense: valid points only, row-major pixel order). ``stride`` keeps every stride-th row
    and column. Back-projected straight into a ``cloud_buffer`` (the message payload): no
    xyz image in between."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    z = np.asarray(metres, np.float32)
    if z.shape != (intr.height, intr.width):
        raise ValueError(f"depth is {z.shape[1]}x{z.shape[0]} but the intrinsics are for "
                         f"{intr.width}x{intr.height}")
    sl = (slice(None, None, stride), slice(None, None, stride))
    z = z[sl]
    ru, rv = _rays(intr)
    ru, rv = ru[::stride][None, :], rv[::stride][:, None]
    fields = (pack_rgb(np.asarray(rgb)[sl]).view(np.uint32), np.asarray(semantic)[sl],
              np.asarray(panoptic, np.int32)[sl])
    if organised:
        cloud = cloud_buffer(z.shape)
        _fill_points(cloud.view(np.uint32).reshape(z.shape + (8,)), z, ru, rv, *fields)
        return cloud
    keep = np.isfinite(z)
    cloud = cloud_buffer((int(np.count_nonzero(keep)),))
    _fill_points(cloud.view(np.uint32).reshape(-1, 8), z[keep],
                 np.broadcast_to(ru, z.shape)[keep], np.broadcast_to(rv, z.shape)[keep],
                 *(f[keep] for f in fields))
    return cloud


def _interior(seg: np.ndarray, px: int) -> np.ndarray:
    """Pixels whose (2 px + 1)^2 neighbourhood lies in their own segment: every segment's
    mask eroded at once (min and max filters of the id image agree only inside a segment).
    ``seg``: uint8 or uint16 (as is) or any integer id image (as float32, exact below
    2**24)."""
    import cv2

    ids = seg if seg.dtype in (np.uint8, np.uint16) else seg.astype(np.float32)
    k = np.ones((2 * px + 1, 2 * px + 1), np.uint8)
    lo = cv2.erode(ids, k, borderType=cv2.BORDER_REPLICATE)
    hi = cv2.dilate(ids, k, borderType=cv2.BORDER_REPLICATE)
    return lo == hi


def _dense_ids(pan: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """(the segment image with ids 1..k and 0 for no segment, the id of each rank or None
    when the ids are kept). Small ids are kept; larger ones (track ids > 65535) are
    renumbered, so the keys of ``segment_stats`` stay uint16 (a radix sort)."""
    top = int(pan.max())
    if 4 * top + 4 <= 1 << 16:
        return np.maximum(pan, 0).astype(_key_type(top)), None
    pos = np.maximum(pan, 0)
    if top < 1 << 20:                 # a table over the id range (one counting pass)
        ids = np.flatnonzero(np.bincount(pos.reshape(-1), minlength=top + 1)[1:]) + 1
        table = np.zeros(top + 1, np.int64)
        table[ids] = np.arange(1, ids.size + 1)
        ranks = table[pos]
    else:
        uniq, inv = np.unique(pos, return_inverse=True)
        ids = uniq[uniq > 0]
        ranks = inv.reshape(pos.shape) + (0 if uniq[0] == 0 else 1)
    return ranks.astype(_key_type(ids.size)), ids


def _key_type(top: int):
    """The smallest type of the keys 0 .. 4 top + 3: uint8 (up to 63 segments) sorts in one
    radix pass, uint16 in two, int64 by comparisons."""
    return np.uint8 if 4 * top + 4 <= 1 << 8 else np.uint16 if 4 * top + 4 <= 1 << 16 \
        else np.int64


def _depth_coords(metres: np.ndarray, intr: Intrinsics):
    """Points of flat pixel indices from the depth image: x = z ru[u], y = z rv[v], the same
    float32 products as ``backproject`` (so no xyz image is made for the statistics)."""
    z = np.asarray(metres, np.float32).reshape(-1)
    ru, rv = _rays(intr)
    w = intr.width

    def coords(idx: np.ndarray) -> np.ndarray:
        v, u = np.divmod(idx, w)
        out = np.empty((3, idx.size), np.float32)
        np.take(z, idx, out=out[2])
        np.multiply(out[2], ru[u], out=out[0])
        np.multiply(out[2], rv[v], out=out[1])
        return out
    return coords


def _xyz_coords(xyz: np.ndarray):
    axes = [xyz[..., a].reshape(-1) for a in range(3)]

    def coords(idx: np.ndarray) -> np.ndarray:
        out = np.empty((3, idx.size), np.float32)
        for a in range(3):
            np.take(axes[a], idx, out=out[a])
        return out
    return coords


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
    point set (the eroded or the full mask) of more than STATS_MAX_POINTS points use its
    pixels on every second row and column (a quarter of the partition work, at most half a
    pixel of bias). ``segment_stats_depth`` gives the same from the depth image."""
    z = np.asarray(xyz[..., 2])
    return _segment_stats(z, _xyz_coords(xyz), panoptic, erode_px, min_eroded)


def segment_stats_depth(metres: np.ndarray, intr: Intrinsics, panoptic: np.ndarray, *,
                        erode_px: int = ERODE_PX,
                        min_eroded: int = MIN_ERODED_POINTS) -> List[dict]:
    """``segment_stats`` of ``backproject(metres, intr)``, equal to it bit for bit, without
    the xyz image: only the points that enter a quantile are back-projected."""
    z = np.asarray(metres, np.float32)
    if z.shape != (intr.height, intr.width):
        raise ValueError(f"depth is {z.shape[1]}x{z.shape[0]} but the intrinsics are for "
                         f"{intr.width}x{intr.height}")
    return _segment_stats(z, _depth_coords(z, intr), panoptic, erode_px, min_eroded)


def _segment_stats(z: np.ndarray, coords, panoptic, erode_px: int, min_eroded: int):
    pan = np.asarray(panoptic)
    if not pan.size or int(pan.max()) <= 0:
        return []
    seg, ids = _dense_ids(pan)
    kt = seg.dtype.type
    inner = _interior(seg, erode_px) if erode_px > 0 else np.ones(pan.shape, bool)
    # one radix sort of the key image 4 s + 2 off-grid + boundary: each segment s is one
    # run of the sorted pixels in four parts (on the every-second-row-and-column grid:
    # interior, boundary; off it: interior, boundary), so the subsampled point sets of a
    # large segment (eroded: the first part, full mask: the first two) are prefixes of its
    # run and the others at most two ranges; pixels without depth or segment get keys 0..3
    # (segment 0) and are skipped
    key = seg * kt(4)
    key += _off_grid(*pan.shape) * kt(2)
    key += (~inner).view(np.uint8)
    key[~np.isfinite(z)] = 0
    key = key.reshape(-1)
    order = np.argsort(key, kind="stable")
    top = int(seg.max())
    bounds = np.searchsorted(key[order], np.arange(4 * top + 5), side="left")
    skip = int(bounds[4])
    if skip == key.size:
        return []
    order = order[skip:]
    bounds = bounds - skip
    zs = np.take(z.reshape(-1), order)
    full = bounds[8::4] - bounds[4:-1:4]                    # valid points per segment 1..top
    present = np.flatnonzero(full) + 1
    seg_starts = bounds[4 * present]
    zmin = np.minimum.reduceat(zs, seg_starts)              # consecutive runs
    zmax = np.maximum.reduceat(zs, seg_starts)
    out = []
    for j, s in enumerate(present.tolist()):
        a, gi, g, oi, b = bounds[4 * s: 4 * s + 5].tolist()
        n_inner = (gi - a) + (oi - g)
        eroded = n_inner >= min_eroded
        if b - a > STATS_MAX_POINTS:          # the full mask from the grid: [a, g)
            pts = coords(order[a:g])
            ext = pts
            if not eroded:
                cen = pts
            elif n_inner > STATS_MAX_POINTS:  # the eroded mask from the grid: [a, gi)
                cen = pts[:, :gi - a]
            else:                             # the whole eroded mask: [a, gi) and [g, oi)
                cen = coords(np.concatenate([order[a:gi], order[g:oi]]))
        else:
            ext = coords(order[a:b])
            cen = np.concatenate([ext[:, :gi - a], ext[:, g - a:oi - a]], axis=1) \
                if eroded else ext
        (centroid,) = _quantiles(cen, (0.5,))
        lo, hi = _quantiles(ext, (0.05, 0.95))
        out.append({"id": int(s if ids is None else ids[s - 1]),
                    "centroid": [float(v) for v in centroid],
                    "size": [float(v) for v in hi - lo], "valid_points": b - a,
                    "depth_min": float(zmin[j]), "depth_max": float(zmax[j]),
                    "eroded": bool(eroded)})
    if ids is not None:
        out.sort(key=lambda d: d["id"])
    return out


@lru_cache(maxsize=8)
def _off_grid(height: int, width: int) -> np.ndarray:
    """1 off the pixels of every second row and column (the subsample of large segments: a
    regular grid, so the quantiles move by at most half a pixel; a coarser grid, or a 1-in-k
    slice of the raster order, which aliases with the image width, biased the centroid of a
    frame-filling plane at 3 m by 1 to 4 cm), 0 on them."""
    g = np.ones((height, width), np.uint8)
    g[::2, ::2] = 0
    g.setflags(write=False)
    return g


def _quantiles(values: np.ndarray, qs) -> List[np.ndarray]:
    """Per-row quantiles of a 3 x n block with numpy's default (linear) interpolation, from
    one partition of all three rows."""
    n = values.shape[1]
    pos = [q * (n - 1) for q in qs]
    kth = sorted({int(np.floor(p)) for p in pos} | {int(np.ceil(p)) for p in pos})
    if len(kth) == 1 and n > 1:
        # numpy 2.4 selects one kth three times slower than two (20 vs 60 us for 3 x 3500)
        kth = [kth[0] - 1, kth[0]] if kth[0] else [0, 1]
    part = np.partition(values, kth, axis=1)
    out = []
    for p in pos:
        lo, hi = int(np.floor(p)), int(np.ceil(p))
        out.append(part[:, lo] + (part[:, hi] - part[:, lo]) * np.float32(p - lo))
    return out


__all__ = ["CLOUD_DTYPE", "CLOUD_FIELDS", "backproject", "pack_rgb", "labelled_cloud",
           "cloud_buffer", "cloud_storage", "segment_stats", "segment_stats_depth", "ERODE_PX",
           "MIN_ERODED_POINTS"]
