"""The 3D products of a frame: the labelled cloud and the segments located in 3D.

``build_products`` (core/products.py) calls ``build_3d`` when it is given a
``DepthFrame``; the node, bag-to-bag inference and ``ovseg-segment`` thus publish the same
clouds and 3D segments. Lazy like the 2D outputs: the cloud is built only when ``points``
is wanted, the 3D segments only when ``segments_3d`` or ``markers`` is (markers are drawn
from the 3D segments, ``core/markers.py``).
"""
from __future__ import annotations

from typing import Collection, Optional

import numpy as np

from . import geometry
from .depth import DepthError, DepthFrame

#: output keys (core/outputs.py) that need the cloud / the 3D segments
CLOUD_KEYS = frozenset({"points"})
SEGMENT_3D_KEYS = frozenset({"segments_3d", "markers"})


def build_3d(products, depth: Optional[DepthFrame], wanted: Optional[Collection[str]], *,
             rgb: np.ndarray, organised: bool = True, stride: int = 1,
             stats: Optional[list] = None) -> None:
    """Fill ``products.cloud`` and ``products.segments_3d`` (in place) from ``depth``.

    ``wanted``: the output keys to build (None = all). Without depth both stay None. The
    depth must be registered to the products' image (same size): refused otherwise.
    ``stats``: ``geometry.segment_stats`` of ``products.panoptic``, when already computed."""
    products.cloud = None
    products.segments_3d = None
    if depth is None:
        return
    keys = set(CLOUD_KEYS | SEGMENT_3D_KEYS) if wanted is None else set(wanted)
    want_cloud, want_segs = bool(keys & CLOUD_KEYS), bool(keys & SEGMENT_3D_KEYS)
    if not (want_cloud or want_segs):
        return
    if tuple(depth.size) != tuple(products.size):
        h, w = products.size
        raise DepthError(f"depth is {depth.size[1]}x{depth.size[0]} but the image is {w}x{h}: "
                         "the depth is not registered to the colour image", code="size")
    # no xyz image: the cloud is back-projected into its message buffer, the statistics
    # back-project only the points their quantiles take
    if want_cloud:
        products.cloud = geometry.labelled_cloud(depth.metres, depth.intrinsics, rgb,
                                                 products.semantic, products.panoptic,
                                                 organised=organised, stride=stride)
    if want_segs:
        info = {s["id"]: s for s in products.segments}
        out = []
        if stats is None:
            stats = geometry.segment_stats_depth(depth.metres, depth.intrinsics,
                                                 products.panoptic)
        for st in stats:
            s = info.get(st["id"])
            if s is None:
                continue
            out.append({"id": st["id"], "class_id": s["class_id"], "class_name": s["class_name"],
                        "is_thing": s["is_thing"], "score": s["score"],
                        "centroid": st["centroid"], "size": st["size"],
                        "valid_points": st["valid_points"], "depth_min": st["depth_min"],
                        "depth_max": st["depth_max"]})
        products.segments_3d = out


__all__ = ["build_3d", "CLOUD_KEYS", "SEGMENT_3D_KEYS"]
