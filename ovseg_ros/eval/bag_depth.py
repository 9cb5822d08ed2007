"""The registered depth of a bag's image topic, paired by stamp, for bag-to-bag inference.

The depth topic (``<ns>/depth`` beside the image topic ``<ns>/<image>``, or given) and
its camera_info (``<ns>/camera_info``) are read through a second reader of the same bag,
advanced alongside the images: depth up to ``depth_slop`` past each image's stamp is read
and paired with ``runtime/depth_pairing.py`` (exact stamps, else the nearest within the
slop), so memory stays a few depth frames however long the bag. A frame whose depth is
missing or refused (``core/depth.py``: size, frame_id, units ...) gets no 3D products;
``summary()`` counts them by reason.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

from ..core.depth import DepthError, DepthFrame, depth_frame_from_msg
from ..runtime.depth_pairing import DepthPairing
from .bags import IMAGE_TYPE, BagError, check_topic, open_reader, stamp_ns

CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"


def camera_namespace(image_topic: str) -> str:
    """/cam/image_raw -> /cam (a trailing /compressed is the transport, not the image)."""
    t = image_topic[:-len("/compressed")] if image_topic.endswith("/compressed") else image_topic
    return t.rsplit("/", 1)[0]


class BagDepth:
    def __init__(self, reader, depth_topic: str, info_topic: str, depth_slop: float):
        self.reader = reader
        self.depth_topic, self.info_topic = depth_topic, info_topic
        dconns = check_topic(reader, depth_topic, (IMAGE_TYPE,), "depth")
        iconns = check_topic(reader, info_topic, (CAMERA_INFO_TYPE,), "camera_info")
        self._depth_ids = {c.id for c in dconns}
        self._it = reader.messages(connections=dconns + iconns)
        self.pairing = DepthPairing(depth_slop=depth_slop, max_pending=64)
        self._read_until: Optional[int] = None
        self._done = False
        self.info = None
        self.errors: Dict[str, int] = {}
        self.first_error: Dict[str, str] = {}

    @classmethod
    def open(cls, bag: Path, reader, image_topic: str, depth_topic: Optional[str] = None,
             info_topic: Optional[str] = None, depth_slop: float = 0.02) -> "BagDepth | None":
        """The depth source of ``image_topic``, or None when the bag has no depth topic for
        it (and none was named; a named one that is missing is an error)."""
        ns = camera_namespace(image_topic)
        topics = {c.topic for c in reader.connections}
        if depth_topic is None:
            if f"{ns}/depth" not in topics:
                return None
            depth_topic = f"{ns}/depth"
        info_topic = info_topic or f"{ns}/camera_info"
        if info_topic not in topics:
            raise BagError(f"depth topic {depth_topic!r} has no camera_info: {info_topic!r} is "
                           "not in the bag (3D needs the colour camera's intrinsics)")
        return cls(open_reader(bag), depth_topic, info_topic, depth_slop)

    def _advance(self, t: int) -> None:
        horizon = t + self.pairing.slop_ns
        while not self._done and (self._read_until is None or self._read_until <= horizon):
            try:
                conn, _, raw = next(self._it)
            except StopIteration:
                self._done = True
                break
            msg = self.reader.deserialize(raw, conn.msgtype)
            s = stamp_ns(msg.header)
            if conn.id in self._depth_ids:
                self.pairing.add_depth(s, msg)
                self._read_until = s
            elif self.info is None or s <= horizon:
                self.info = msg

    def frame_for(self, header, colour_shape) -> Optional[DepthFrame]:
        """The DepthFrame paired with the image of ``header``, or None (counted)."""
        t = stamp_ns(header)
        self._advance(t)
        msg = self.pairing.match(t)
        if msg is None:
            return None
        try:
            return depth_frame_from_msg(msg, colour_size=colour_shape[:2],
                                        colour_frame_id=header.frame_id, camera_info=self.info)
        except DepthError as exc:
            self.errors[exc.code] = self.errors.get(exc.code, 0) + 1
            self.first_error.setdefault(exc.code, str(exc))
            return None

    def summary(self) -> dict:
        return {"depth_topic": self.depth_topic, "camera_info_topic": self.info_topic,
                **self.pairing.counts.as_dict(), "refused": dict(self.errors),
                "refused_first": dict(self.first_error), "last_miss": self.pairing.last_miss}

    def close(self) -> None:
        self.reader.close()


__all__ = ["BagDepth", "camera_namespace"]
