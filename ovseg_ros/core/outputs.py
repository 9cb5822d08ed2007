"""The outputs table: every per-camera output of the node, listed once.

The node creates one publisher per row whose needs are met, bag->bag inference
writes one topic per such row, ``ros/messages.py:product_messages`` builds the
rows' messages, and the docs' output table is checked against it
(test/core/test_outputs.py). ``topic`` is relative to the camera's prefix (the
unnamed camera uses the bare name, so a namespace moves them all); ``msg_type``
is the ROS type name, which rclpy and rosbags both resolve; ``needs`` says what
must be on for the row to exist: ``""`` always, ``"camera_info"`` when a
camera_info input arrives, ``"depth"`` when the camera has a depth topic,
``"embeddings"`` when ``embeddings.enabled``.

Outputs are lazy: only the wanted keys (those with subscribers, or every row of
a bag) are built.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Dict, FrozenSet, Tuple

IMAGE = "sensor_msgs/msg/Image"


@dataclass(frozen=True)
class OutputSpec:
    key: str            # FrameProducts / product_messages key
    topic: str          # relative to the camera's prefix
    msg_type: str       # ROS type name, e.g. sensor_msgs/msg/Image
    encoding: str       # image encoding, or "" for other messages
    needs: str          # "" (always), "camera_info", "depth" or "embeddings"
    description: str


OUTPUTS: Tuple[OutputSpec, ...] = (
    OutputSpec("semantic", "semantic", IMAGE, "16UC1", "",
               "class id per pixel (index into the vocabulary); `65535` = unlabelled "
               "(`ClassInfo.UNLABELED`)"),
    OutputSpec("panoptic", "panoptic", IMAGE, "32SC1", "",
               "segment id per pixel, `0` = no segment; ids are those of `segments`"),
    OutputSpec("confidence", "confidence", IMAGE, "32FC1", "",
               "probability of the chosen class; off with `publish_confidence: false`"),
    OutputSpec("colored", "colored", IMAGE, "rgb8", "",
               "the camera image with class colours blended in (stable palette per class id, "
               "`ovseg_ros.core.palette`); with random weights a `RANDOM WEIGHTS` banner is "
               "drawn on it"),
    OutputSpec("segments", "segments", "ovseg_ros/msg/Segments", "", "",
               "per segment: id, class_id, class_name, is_thing, score (fcclip / maftplus: "
               "the query's class probability; proxyclip / ovseg: the mean class probability "
               "over its pixels), area, bbox; `vocabulary_version`"),
    OutputSpec("camera_info", "camera_info_out", "sensor_msgs/msg/CameraInfo", "",
               "camera_info",
               "the latest `camera_info` with the same `frame_id` as the image, re-stamped "
               "with the result's header (for back-projecting labels). Named "
               "`camera_info_out` because `camera_info` is the input"),
    OutputSpec("points", "points", "sensor_msgs/msg/PointCloud2", "", "depth",
               "labelled cloud in the colour optical frame: x, y, z (m, NaN without depth), "
               "rgb, label (class id), instance (segment id); organised, every "
               "`cloud_stride`-th row and column"),
    OutputSpec("segments_3d", "segments_3d", "ovseg_ros/msg/Segments3D", "", "depth",
               "per segment with valid depth: centroid, 5-95 % size, valid points, depth "
               "range; `depth_stamp` of the paired depth image"),
    OutputSpec("markers", "markers", "visualization_msgs/msg/MarkerArray", "", "depth",
               "a CUBE and a TEXT_VIEW_FACING per segment (class colour, ns = camera, id = "
               "segment id, `marker_lifetime`; DELETE of vanished ids, DELETEALL on a "
               "vocabulary change)"),
    OutputSpec("embeddings", "segment_embeddings", "ovseg_ros/msg/SegmentEmbeddings", "",
               "embeddings", "one L2-normalised vector per segment of `segments` (same ids), "
               "float16 rows; `space` names the CLIP text space (`embeddings.enabled`)"),
)

#: key -> row
BY_KEY: Dict[str, OutputSpec] = {o.key: o for o in OUTPUTS}
NEEDS = ("", "camera_info", "depth", "embeddings")
#: outputs built from a frame's prediction (camera_info is a re-stamped input instead)
PRODUCT_KEYS = tuple(o.key for o in OUTPUTS if o.needs not in ("camera_info",))


def outputs_for(depth: bool = False, embeddings: bool = False,
                camera_info: bool = True) -> Tuple[OutputSpec, ...]:
    """The rows whose needs are met, in table order."""
    met = {"": True, "camera_info": camera_info, "depth": depth, "embeddings": embeddings}
    return tuple(o for o in OUTPUTS if met[o.needs])


def keys_for(depth: bool = False, embeddings: bool = False,
             camera_info: bool = True) -> Tuple[str, ...]:
    return tuple(o.key for o in outputs_for(depth, embeddings, camera_info))


def check_keys(keys: Collection[str]) -> FrozenSet[str]:
    """``keys`` as a set, or a ValueError naming the keys that are not rows of the table."""
    keys = frozenset(keys)
    unknown = sorted(keys - BY_KEY.keys())
    if unknown:
        raise ValueError(f"unknown output keys {unknown}; the outputs are {sorted(BY_KEY)}")
    return keys


def markdown_table() -> str:
    """The docs' per-camera output table (docs/node.md; scripts/node_param_table.py
    --update rewrites it there)."""
    lines = ["| topic | key | type | needs | content |", "|---|---|---|---|---|"]
    for o in OUTPUTS:
        typ = o.msg_type.replace("/msg/", "/") + (f" `{o.encoding}`" if o.encoding else "")
        needs = {"": "", "camera_info": "a `camera_info` input"}.get(o.needs, f"{o.needs}")
        lines.append(f"| `{o.topic}` | `{o.key}` | {typ} | {needs} | {o.description} |")
    return "\n".join(lines)


__all__ = ["OutputSpec", "OUTPUTS", "BY_KEY", "NEEDS", "PRODUCT_KEYS", "outputs_for",
           "keys_for", "check_keys", "markdown_table"]
