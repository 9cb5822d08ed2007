"""RViz box-and-label markers for the 3D segments, without ROS.

One ``MarkerPlanner`` per camera (``ns`` = the camera's name) turns each frame's
``segments_3d`` into marker data: per segment a box (centre = centroid, size = the
5-95 % extent, at least ``min_size`` per axis so flat segments stay visible), its class
colour (``core/palette.py``, the overlay's colour) and a text (class name and score),
with the stable id = segment id (the track id when tracking is on), so RViz updates a
marker in place instead of adding one per frame.

Rules for what is deleted:
* the vocabulary version changed: DELETEALL first (ids and colours now mean other
  classes, and markers of the old vocabulary must not linger);
* a segment id present in the previous frame but not in this one: a DELETE of its box
  and text (ids are per frame unless tracked; stale boxes would pile up in RViz).

The ROS message building (visualization_msgs/MarkerArray) is in the ROS layer and in
``ovseg_ros/eval/bags.py``; both take this plan.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence

from . import palette

#: the text marker of segment id i has id i + TEXT_ID_OFFSET (box: id i)
TEXT_ID_OFFSET = 1 << 30
#: boxes thinner than this (metres) are drawn this thick
MIN_SIZE_M = 0.01
#: box opacity
BOX_ALPHA = 0.5
#: text markers float this far above their box (metres, optical y points down)
TEXT_LIFT_M = 0.05
#: height of the text markers (metres)
TEXT_HEIGHT_M = 0.08


def text_position(box: "MarkerBox") -> List[float]:
    """Where a box's label goes: above its top face (optical frame: y points down)."""
    return [box.centre[0], box.centre[1] - box.size[1] / 2 - TEXT_LIFT_M, box.centre[2]]


@dataclass
class MarkerBox:
    id: int
    centre: List[float]
    size: List[float]
    rgba: List[float]       # 0..1
    text: str


@dataclass
class MarkerPlan:
    ns: str
    delete_all: bool = False
    delete_ids: List[int] = field(default_factory=list)     # segment ids to remove
    boxes: List[MarkerBox] = field(default_factory=list)


def marker_boxes(segments_3d: Sequence[dict], *, min_size: float = MIN_SIZE_M,
                 alpha: float = BOX_ALPHA) -> List[MarkerBox]:
    """One box per 3D segment (stateless)."""
    out = []
    for s in segments_3d:
        r, g, b = palette.class_color(int(s["class_id"]))
        text = f"{s['class_name']} {float(s['score']):.2f}" if s["class_name"] else \
            f"class {s['class_id']} {float(s['score']):.2f}"
        out.append(MarkerBox(id=int(s["id"]), centre=[float(v) for v in s["centroid"]],
                             size=[max(float(v), min_size) for v in s["size"]],
                             rgba=[r / 255.0, g / 255.0, b / 255.0, alpha], text=text))
    return out


class MarkerPlanner:
    """Per-camera state of the markers published so far (ids and vocabulary version)."""

    def __init__(self, ns: str):
        self.ns = ns
        self._ids: set = set()
        self._version: Optional[int] = None

    def plan(self, segments_3d: Sequence[dict], vocabulary_version: int) -> MarkerPlan:
        boxes = marker_boxes(segments_3d)
        ids = {b.id for b in boxes}
        changed = self._version is not None and vocabulary_version != self._version
        plan = MarkerPlan(ns=self.ns, delete_all=changed, boxes=boxes,
                          delete_ids=[] if changed else sorted(self._ids - ids))
        self._ids, self._version = ids, int(vocabulary_version)
        return plan


__all__ = ["MarkerBox", "MarkerPlan", "MarkerPlanner", "marker_boxes", "text_position",
           "TEXT_ID_OFFSET", "TEXT_LIFT_M", "TEXT_HEIGHT_M"]
