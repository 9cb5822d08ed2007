"""Evaluation items from a bag: images paired by header stamp with ground-truth topics.

Ground truth on a bag is any of

* a semantic label topic: ``sensor_msgs/Image`` of class ids (16UC1 / mono16 /
  mono8 / 8UC1 / 32SC1);
* a panoptic label topic: ``sensor_msgs/Image`` of segment ids, ``32SC1`` (or
  16UC1 / mono16; 0 = void), or the COCO panoptic colour encoding in ``rgb8`` /
  ``bgr8`` (id = R + 256 G + 256^2 B), together with a segments topic
  (``ovseg_ros/msg/Segments``: segment id -> class id, as the node publishes
  it) of the same stamp. ``Segments`` has no crowd flag, so bags carry no
  crowd regions; void (id 0, or ids without a segment entry is an error) is
  not evaluated.

Without a semantic topic the semantic ground truth comes from the panoptic one
(void ignored), so one panoptic recording gives mIoU and PQ.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Tuple

import numpy as np

from .bags import (BagError, Frame, LABEL_ENCODINGS, image_to_numpy,
                   label_to_classes, stamp_ns)
from .datasets import Target, rgb_to_panoptic_id
from .metrics import semantic_from_panoptic

SEGMENTS_TYPE = "ovseg_ros/msg/Segments"
PANOPTIC_ID_ENCODINGS = ("32SC1", "16UC1", "mono16")
PANOPTIC_RGB_ENCODINGS = ("rgb8", "bgr8")


@dataclass
class BagTopics:
    image: str
    label: Optional[str] = None
    panoptic: Optional[str] = None
    segments: Optional[str] = None

    def roles(self) -> Dict[str, str]:
        return {r: t for r, t in (("label", self.label), ("panoptic", self.panoptic),
                                  ("segments", self.segments)) if t is not None}


def iter_synced(reader, topics: BagTopics, stats: dict) -> Iterator[Tuple[Frame, dict]]:
    """Image messages in bag order, each with the messages of every ground-truth role of the
    same header stamp; images lacking one are skipped and counted (``unmatched_images``)."""
    roles = topics.roles()
    primary = "label" if "label" in roles else "panoptic"     # what "labels" counts
    by_conn: Dict[int, str] = {}
    for c in reader.connections:
        if c.topic == topics.image:
            by_conn[c.id] = "image"
        for role, t in roles.items():
            if c.topic == t:
                by_conn[c.id] = role
    conns = [c for c in reader.connections if c.id in by_conn]
    stats.update(images=0, labels=0, unmatched_images=0, unmatched_labels=0)
    seen: Dict[int, int] = {}
    frames: Dict[int, Frame] = {}                 # image stamp -> frame waiting for its truth
    truth: Dict[int, dict] = {}                   # stamp -> {role: msg}
    index = 0

    def ready(s):
        return s in frames and len(truth.get(s, {})) == len(roles)

    for conn, t, raw in reader.messages(connections=conns):
        role = by_conn[conn.id]
        msg = reader.deserialize(raw, conn.msgtype)
        s = stamp_ns(msg.header)
        if role == "image":
            n = seen.get(s, 0)
            seen[s] = n + 1
            frames[s] = Frame(index=index, key=f"{s:020d}" + (f"_{n}" if n else ""),
                              timestamp=t, msg=msg)
            index += 1
            stats["images"] += 1
        else:
            truth.setdefault(s, {})[role] = msg
            if role == primary:
                stats["labels"] += 1
        if ready(s):
            frame = frames.pop(s)
            got = truth.pop(s)
            frame.label = got.get("label")
            yield frame, got
    stats["unmatched_images"] = len(frames)
    stats["unmatched_labels"] = len(truth)


def panoptic_ids(msg, what: str) -> np.ndarray:
    arr = image_to_numpy(msg, what)
    if msg.encoding in PANOPTIC_RGB_ENCODINGS:
        rgb = arr if msg.encoding == "rgb8" else arr[..., ::-1]
        return rgb_to_panoptic_id(rgb)
    if msg.encoding not in PANOPTIC_ID_ENCODINGS:
        raise BagError(f"{what}: encoding {msg.encoding!r} is not a panoptic id image; expected "
                       f"one of {list(PANOPTIC_ID_ENCODINGS + PANOPTIC_RGB_ENCODINGS)}")
    return arr.astype(np.int64)


def segments_of(msg) -> Dict[int, Tuple[int, bool]]:
    """Segments message -> {segment id: (class id, iscrowd=False)}, in message order."""
    return {int(s.id): (int(s.class_id), False) for s in msg.segments}


def bag_targets(frame: Frame, got: dict, ignore: Optional[int]) -> Target:
    """The Target of one frame from its ground-truth messages."""
    semantic = None
    if "label" in got:
        lab = got["label"]
        semantic = label_to_classes(image_to_numpy(lab, f"label at stamp {frame.key}"),
                                    lab.encoding, ignore)
    if "panoptic" not in got:
        return Target(semantic=semantic)
    pan = panoptic_ids(got["panoptic"], f"panoptic label at stamp {frame.key}")
    segs = segments_of(got["segments"])
    if semantic is None:
        semantic = semantic_from_panoptic(pan, segs)
    return Target(semantic=semantic, panoptic=pan, segments=segs)


def check_encodings(got: dict, topics: BagTopics) -> None:
    """The first pair's encodings (cheap to check before the engine sees any frame)."""
    if "label" in got and got["label"].encoding not in LABEL_ENCODINGS:
        raise BagError(f"label topic {topics.label!r}: encoding {got['label'].encoding!r} is "
                       f"not a class-id image; expected one of {list(LABEL_ENCODINGS)}")
    if "panoptic" in got:
        enc = got["panoptic"].encoding
        if enc not in PANOPTIC_ID_ENCODINGS + PANOPTIC_RGB_ENCODINGS:
            raise BagError(f"panoptic topic {topics.panoptic!r}: encoding {enc!r} is not a "
                           f"panoptic id image; expected one of "
                           f"{list(PANOPTIC_ID_ENCODINGS + PANOPTIC_RGB_ENCODINGS)}")


__all__ = ["BagTopics", "iter_synced", "bag_targets", "panoptic_ids", "segments_of",
           "check_encodings", "SEGMENTS_TYPE"]
