"""One camera's output path, ROS-free: a prediction in, the frame's products out.

The node's worker, bag->bag inference and ``ovseg-segment`` hold one
``CameraOutputs`` per camera (or image topic), so they publish and record the
same products. Per-camera state lives here: the latest frame (kept for
``locate``) today, the tracker that relabels panoptic ids with track ids next.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Collection, Optional

import numpy as np

from .products import FrameProducts, build_products
from .types import Prediction


@dataclass
class LatestFrame:
    stamp: Any                 # the input's stamp (header stamp or bag time), as given
    products: FrameProducts
    prediction: Prediction


class CameraOutputs:
    def __init__(self, name: str, *, overlay_alpha: float, cloud_stride: int = 1):
        self.name = name
        #: read for every frame, so a runtime change applies from the next frame on
        self.overlay_alpha = float(overlay_alpha)
        #: keep every n-th row and column of the labelled cloud (its bandwidth)
        self.cloud_stride = int(cloud_stride)
        self.latest: Optional[LatestFrame] = None

    def process(self, pred: Prediction, rgb: np.ndarray, stamp, *,
                wanted: Optional[Collection[str]] = None, depth=None) -> FrameProducts:
        """The products of one frame (``core/products.build_products``; ``wanted``: keys of
        the outputs table, None for all), remembered as ``latest``."""
        products = build_products(pred, rgb, pred.vocabulary, wanted=wanted,
                                  overlay_alpha=self.overlay_alpha,
                                  random_weights=pred.random_weights, depth=depth,
                                  cloud_stride=self.cloud_stride)
        self.latest = LatestFrame(stamp, products, pred)
        return products


__all__ = ["CameraOutputs", "LatestFrame"]
