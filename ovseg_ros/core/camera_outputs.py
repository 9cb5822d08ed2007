"""One camera's output path, ROS-free: a prediction in, the frame's products out.

The node's worker, bag->bag inference and ``ovseg-segment`` hold one
``CameraOutputs`` per camera (or image topic), so they publish and record the
same products. Per-camera state lives here: the tracker that relabels panoptic
ids with track ids (``tracking.enabled``; ``core/tracking.py``) and the latest
frame, kept for ``locate`` (``locate_frame``).

With tracking and a depth frame, the per-segment 3D statistics are computed once,
before the tracker (it uses the centroids), and reused for the 3D products under
the published ids: relabelling a segment changes none of its pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Collection, Dict, List, Optional

import numpy as np

from . import geometry
from .locate import LocateFrame
from .outputs import PRODUCT_KEYS, check_keys
from .products import FrameProducts, build_products, resize_labels
from .products_3d import SEGMENT_3D_KEYS
from .tracking import Tracker, TrackerSettings, TrackUpdate, apply_tracks
from .types import Prediction


@dataclass
class LatestFrame:
    stamp: Any                 # the input's stamp (header stamp or bag time), as given
    products: FrameProducts
    prediction: Prediction     # with the published (track) ids when tracking is on
    frame_id: str = ""
    #: published segment id -> 3D centroid [m] in frame_id, when depth came with the frame
    centroids: Optional[Dict[int, List[float]]] = None


def stamp_seconds(stamp) -> float:
    """Seconds of a ROS stamp (rclpy or rosbags ``Time``: sec, nanosec) or of a number."""
    if hasattr(stamp, "sec") and hasattr(stamp, "nanosec"):
        return float(stamp.sec) + float(stamp.nanosec) * 1e-9
    try:
        return float(stamp)
    except (TypeError, ValueError):
        raise ValueError(f"tracking needs a time stamp (seconds or sec/nanosec), got "
                         f"{stamp!r}") from None


class CameraOutputs:
    def __init__(self, name: str, *, overlay_alpha: float, cloud_stride: int = 1,
                 tracking=None):
        """``tracking``: None (off), a ``TrackerSettings`` or a config with the
        ``tracking.*`` group (``from_config`` reads ``tracking.enabled``)."""
        self.name = name
        #: read for every frame, so a runtime change applies from the next frame on
        self.overlay_alpha = float(overlay_alpha)
        #: keep every n-th row and column of the labelled cloud (its bandwidth)
        self.cloud_stride = int(cloud_stride)
        self.latest: Optional[LatestFrame] = None
        self.tracker: Optional[Tracker] = None if tracking is None else Tracker(tracking)
        #: track resets over this camera's life (stall, restart, stamp jump), for diagnostics
        self.track_resets = 0
        # a reset asked for by another thread (the node's stall timer), applied by the
        # thread that processes frames before its next frame: the tracker is not thread-safe
        self._reset_reason: Optional[str] = None

    @classmethod
    def from_config(cls, name: str, cfg, *, overlay_alpha: float,
                    cloud_stride: int = 1) -> "CameraOutputs":
        """With a tracker when ``tracking.enabled`` (the node and bag inference)."""
        tracking = TrackerSettings.from_config(cfg) if cfg["tracking.enabled"] else None
        return cls(name, overlay_alpha=overlay_alpha, cloud_stride=cloud_stride,
                   tracking=tracking)

    @property
    def live_tracks(self) -> int:
        return len(self.tracker.tracks) if self.tracker is not None else 0

    def reset_tracks(self, reason: str) -> None:
        """Forget the tracks (camera stalled or restarted): new objects get new ids."""
        if self.tracker is not None:
            if self.live_tracks:          # counted when it forgot something (not at start)
                self.track_resets += 1
            self.tracker.reset(reason)

    def request_reset(self, reason: str) -> None:
        """``reset_tracks`` before the next frame (safe from another thread)."""
        if self.tracker is not None:
            self._reset_reason = reason

    def process(self, pred: Prediction, rgb: np.ndarray, stamp, *,
                wanted: Optional[Collection[str]] = None, depth=None,
                frame_id: str = "") -> FrameProducts:
        """The products of one frame (``core/products.build_products``; ``wanted``: keys of
        the outputs table, None for all), with track ids when tracking is on, remembered
        as ``latest``."""
        wanted = PRODUCT_KEYS if wanted is None else check_keys(wanted)
        stats = None
        reason, self._reset_reason = self._reset_reason, None
        if reason is not None:
            self.reset_tracks(reason)
        if self.tracker is not None:
            if depth is not None:
                stats = self._segment_stats(pred, rgb, depth)
            update = self._track(pred, stamp, stats)
            pred = apply_tracks(pred, update)
            if stats is not None:
                stats = _relabel_stats(stats, update)
        elif depth is not None and (wanted & SEGMENT_3D_KEYS or pred.embeddings is not None):
            # the 3D segments, or the centroids that locate answers with
            stats = self._segment_stats(pred, rgb, depth)
        products = build_products(pred, rgb, pred.vocabulary, wanted=wanted,
                                  overlay_alpha=self.overlay_alpha,
                                  random_weights=pred.random_weights, depth=depth,
                                  cloud_stride=self.cloud_stride, stats_3d=stats)
        done = stats if stats is not None else products.segments_3d
        centroids = None if done is None else {s["id"]: s["centroid"] for s in done}
        self.latest = LatestFrame(stamp, products, pred, frame_id=frame_id,
                                  centroids=centroids)
        return products

    def _segment_stats(self, pred: Prediction, rgb: np.ndarray, depth) -> Optional[list]:
        """Per-segment 3D statistics under the prediction's segment ids, at the image size
        (the depth is registered to it); None when the depth does not fit (build_3d then
        refuses it with its reason)."""
        size = np.asarray(rgb).shape[:2]
        if tuple(depth.size) != tuple(size):
            return None
        pan = resize_labels(np.asarray(pred.panoptic, np.int32), size)
        # bit for bit segment_stats(backproject(...)), without the xyz image
        return geometry.segment_stats_depth(depth.metres, depth.intrinsics, pan)

    def _track(self, pred: Prediction, stamp, stats: Optional[list]) -> TrackUpdate:
        before = self.tracker.last_reset
        centroids = None if stats is None else {s["id"]: s["centroid"] for s in stats}
        update = self.tracker.update(pred.panoptic, pred.segments, stamp_seconds(stamp),
                                     centroids=centroids, embeddings=pred.embeddings,
                                     vocabulary=pred.vocabulary)
        if self.tracker.last_reset != before:      # the tracker saw a stamp jump
            self.track_resets += 1
        return update

    def locate_frame(self, latest: Optional[LatestFrame] = None) -> Optional[LocateFrame]:
        """What ``Segmenter.locate`` searches of this camera: the latest frame (None before
        the first one); ``latest``: a ``LatestFrame`` the caller took already (so that it
        answers with that frame's header even if a newer one arrives meanwhile)."""
        latest = self.latest if latest is None else latest
        if latest is None:
            return None
        pred = latest.prediction
        return LocateFrame(camera=self.name, stamp=stamp_seconds(latest.stamp),
                           segments=latest.products.segments, embeddings=pred.embeddings,
                           vocabulary=pred.vocabulary, centroids=latest.centroids)


def _relabel_stats(stats: list, update: TrackUpdate) -> Optional[list]:
    """The statistics under the published ids, or None when two segments share one id
    (two stuff segments of a class both become class id + 1: their union needs its own
    statistics, which build_3d then computes)."""
    new = [update.ids.get(s["id"], 0) for s in stats]
    kept = [n for n in new if n]
    if len(set(kept)) != len(kept):
        return None
    out = [dict(s, id=n) for s, n in zip(stats, new) if n]
    return sorted(out, key=lambda s: s["id"])


__all__ = ["CameraOutputs", "LatestFrame", "stamp_seconds"]
