"""The node's 3D output messages (rclpy, no DDS needed): PointCloud2, Segments3D, MarkerArray.

The rosbags twins are in ``ovseg_ros/eval/bags_3d.py``; both take the same products
(``core/products_3d.py``) and the same marker plan (``core/markers.py``), so a bag
written offline replays like the node. Every message carries the colour image's header:
the depth is registered to it, so its frame is the colour optical frame.
"""
from __future__ import annotations

import array
from typing import Collection, Dict, Optional

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Point, Vector3
from sensor_msgs.msg import PointCloud2, PointField
from visualization_msgs.msg import Marker, MarkerArray

from ..core.geometry import CLOUD_DTYPE, CLOUD_FIELDS, cloud_storage
from ..core.markers import TEXT_HEIGHT_M, TEXT_ID_OFFSET, MarkerPlan, MarkerPlanner, text_position

#: the output keys of this module (rows of core/outputs.py that need depth)
KEYS_3D = ("points", "segments_3d", "markers")


def pointcloud2(cloud: np.ndarray, header) -> PointCloud2:
    """PointCloud2 of a CLOUD_DTYPE array: H x W organised (is_dense false, NaN points kept,
    as depth_image_proc) or N dense (height 1)."""
    if cloud.dtype != CLOUD_DTYPE:
        raise ValueError(f"cloud must have the CLOUD_DTYPE layout, got {cloud.dtype}")
    organised = cloud.ndim == 2
    h, w = cloud.shape if organised else (1, cloud.shape[0])
    # check_fields=True: the generated ``data`` setter then keeps an array.array('B') as is;
    # without it the setter copies every array (array.array('B', value)). The cloud of
    # core/geometry.py lives in such an array (cloud_buffer), so the 9.8 MB of a 640 x 480
    # cloud reach rclpy without a copy; rclpy's own conversion to the C message and the
    # serialisation are the copies left
    msg = PointCloud2(header=header, height=h, width=w, is_bigendian=False,
                      point_step=CLOUD_DTYPE.itemsize, row_step=CLOUD_DTYPE.itemsize * w,
                      is_dense=not organised, check_fields=True)
    msg.fields = [PointField(name=n, offset=o, datatype=dt, count=1)
                  for n, o, _, dt in CLOUD_FIELDS]
    data = cloud_storage(cloud)
    if data is None:               # a cloud made elsewhere: one copy into an array.array
        data = array.array("B")
        data.frombytes(memoryview(np.ascontiguousarray(cloud).view(np.uint8).reshape(-1)))
    msg.data = data
    return msg


def segments3d(segments_3d, header, depth_stamp_ns: int, vocabulary_version: int):
    from ovseg_ros.msg import Segment3D, Segments3D

    msg = Segments3D(header=header, vocabulary_version=int(vocabulary_version))
    msg.depth_stamp = Time(sec=int(depth_stamp_ns) // 1_000_000_000,
                           nanosec=int(depth_stamp_ns) % 1_000_000_000)
    msg.segments = [Segment3D(
        id=int(s["id"]), class_id=int(s["class_id"]), class_name=str(s["class_name"]),
        is_thing=bool(s["is_thing"]), score=float(s["score"]),
        centroid=Point(x=float(s["centroid"][0]), y=float(s["centroid"][1]),
                       z=float(s["centroid"][2])),
        size=Vector3(x=float(s["size"][0]), y=float(s["size"][1]), z=float(s["size"][2])),
        valid_points=int(s["valid_points"]), depth_min=float(s["depth_min"]),
        depth_max=float(s["depth_max"])) for s in segments_3d]
    return msg


def marker_array(plan: MarkerPlan, header, lifetime_s: float) -> MarkerArray:
    """DELETEALL first when the vocabulary changed, a DELETE of each vanished id, then a
    CUBE and a TEXT_VIEW_FACING per segment. ``lifetime_s`` (0 = forever) makes RViz drop
    the markers of a camera that stopped."""
    life = Duration(sec=int(lifetime_s), nanosec=int(round((lifetime_s % 1) * 1e9)) % 10**9)

    def marker(mid: int, mtype: int, action: int) -> Marker:
        m = Marker(header=header, ns=plan.ns, id=int(mid), type=mtype, action=action)
        m.pose.orientation.w = 1.0
        return m

    out = []
    if plan.delete_all:
        out.append(marker(0, Marker.CUBE, Marker.DELETEALL))
    for sid in plan.delete_ids:
        out.append(marker(sid, Marker.CUBE, Marker.DELETE))
        out.append(marker(sid + TEXT_ID_OFFSET, Marker.TEXT_VIEW_FACING, Marker.DELETE))
    for b in plan.boxes:
        box = marker(b.id, Marker.CUBE, Marker.ADD)
        # fields set in place: the bare Marker already made these sub-messages
        pos, scale = box.pose.position, box.scale
        pos.x, pos.y, pos.z = b.centre
        scale.x, scale.y, scale.z = b.size
        box.color.r, box.color.g, box.color.b, box.color.a = (float(v) for v in b.rgba)
        box.lifetime = life
        text = marker(b.id + TEXT_ID_OFFSET, Marker.TEXT_VIEW_FACING, Marker.ADD)
        x, y, z = text_position(b)
        pos = text.pose.position
        pos.x, pos.y, pos.z = x, y, z
        text.scale.z = TEXT_HEIGHT_M
        text.color.r = text.color.g = text.color.b = text.color.a = 1.0
        text.text = b.text
        text.lifetime = life
        out += [box, text]
    return MarkerArray(markers=out)


def messages_3d(products, header, keys: Collection[str], planner: Optional[MarkerPlanner],
                depth_stamp_ns: int, marker_lifetime: float) -> Dict[str, object]:
    """The 3D messages of one frame that the products hold, only those in ``keys``;
    ``planner``: the camera's MarkerPlanner (the ids and vocabulary sent before)."""
    out: Dict[str, object] = {}
    if "points" in keys and products.cloud is not None:
        out["points"] = pointcloud2(products.cloud, header)
    segs = products.segments_3d
    if segs is None:
        return out
    if "segments_3d" in keys:
        out["segments_3d"] = segments3d(segs, header, depth_stamp_ns,
                                        products.vocabulary_version)
    if "markers" in keys and planner is not None:
        plan = planner.plan(segs, products.vocabulary_version)
        out["markers"] = marker_array(plan, header, marker_lifetime)
    return out


__all__ = ["KEYS_3D", "pointcloud2", "segments3d", "marker_array", "messages_3d"]
