"""rosbags messages of the 3D outputs: PointCloud2, ovseg_ros/Segments3D, MarkerArray.

The rosbags typestore (``bags.make_typestore``) holds sensor_msgs and
visualization_msgs; our Segments3D is registered from ``msg/`` like Segments. The
fields mirror what the node publishes (core/geometry.py for the cloud layout,
core/markers.py for the marker plan), so a bag written here replays like the node.
"""
from __future__ import annotations

import numpy as np

from ..core.geometry import CLOUD_DTYPE, CLOUD_FIELDS
from ..core.markers import TEXT_HEIGHT_M, TEXT_ID_OFFSET, MarkerPlan, text_position

POINTCLOUD2_TYPE = "sensor_msgs/msg/PointCloud2"
SEGMENTS_3D_TYPE = "ovseg_ros/msg/Segments3D"
MARKER_ARRAY_TYPE = "visualization_msgs/msg/MarkerArray"
#: the 3D output topics (under the prefix) and their types
OUTPUT_TYPES_3D = {"points": POINTCLOUD2_TYPE, "segments_3d": SEGMENTS_3D_TYPE,
                   "markers": MARKER_ARRAY_TYPE}
OUTPUT_TOPICS_3D = tuple(OUTPUT_TYPES_3D)


def _time(store, ns: int):
    return store.types["builtin_interfaces/msg/Time"](sec=int(ns) // 1_000_000_000,
                                                      nanosec=int(ns) % 1_000_000_000)


def pointcloud2_msg(store, cloud: np.ndarray, header):
    """sensor_msgs/PointCloud2 of a CLOUD_DTYPE array: H x W organised (is_dense false, NaN
    points kept, as depth_image_proc) or N dense (height 1, is_dense true)."""
    T = store.types
    if cloud.dtype != CLOUD_DTYPE:
        raise ValueError(f"cloud must have the CLOUD_DTYPE layout, got {cloud.dtype}")
    organised = cloud.ndim == 2
    h, w = cloud.shape if organised else (1, cloud.shape[0])
    field = T["sensor_msgs/msg/PointField"]
    fields = [field(name=n, offset=o, datatype=dt, count=1) for n, o, _, dt in CLOUD_FIELDS]
    data = np.ascontiguousarray(cloud).view(np.uint8).reshape(-1)
    return T[POINTCLOUD2_TYPE](header=header, height=h, width=w, fields=fields, is_bigendian=False,
                               point_step=CLOUD_DTYPE.itemsize,
                               row_step=CLOUD_DTYPE.itemsize * w, data=data,
                               is_dense=not organised)


def segments3d_msg(store, segments_3d, header, depth_stamp_ns: int, vocabulary_version: int):
    """ovseg_ros/Segments3D from ``FrameProducts.segments_3d``."""
    T = store.types
    point, vec = T["geometry_msgs/msg/Point"], T["geometry_msgs/msg/Vector3"]
    segs = [T["ovseg_ros/msg/Segment3D"](
        id=s["id"], class_id=s["class_id"], class_name=s["class_name"], is_thing=s["is_thing"],
        score=s["score"], centroid=point(x=s["centroid"][0], y=s["centroid"][1],
                                         z=s["centroid"][2]),
        size=vec(x=s["size"][0], y=s["size"][1], z=s["size"][2]),
        valid_points=s["valid_points"], depth_min=s["depth_min"], depth_max=s["depth_max"])
        for s in segments_3d]
    return T[SEGMENTS_3D_TYPE](header=header, depth_stamp=_time(store, depth_stamp_ns),
                               vocabulary_version=int(vocabulary_version), segments=segs)


def marker_array_msg(store, plan: MarkerPlan, header):
    """visualization_msgs/MarkerArray of a marker plan: DELETEALL first when the vocabulary
    changed, DELETE of vanished ids, then a CUBE and a TEXT_VIEW_FACING per segment."""
    T = store.types
    M = T["visualization_msgs/msg/Marker"]
    pose, pt, quat = T["geometry_msgs/msg/Pose"], T["geometry_msgs/msg/Point"], \
        T["geometry_msgs/msg/Quaternion"]
    vec, rgba = T["geometry_msgs/msg/Vector3"], T["std_msgs/msg/ColorRGBA"]
    zero_t = T["builtin_interfaces/msg/Duration"](sec=0, nanosec=0)
    empty_mesh = T["visualization_msgs/msg/MeshFile"](filename="", data=np.zeros(0, np.uint8))
    compressed = T["sensor_msgs/msg/CompressedImage"](header=header, format="",
                                                      data=np.zeros(0, np.uint8))

    def marker(mid, mtype, action, centre=(0.0, 0.0, 0.0), size=(0.0, 0.0, 0.0),
               colour=(0.0, 0.0, 0.0, 0.0), text=""):
        return M(header=header, ns=plan.ns, id=int(mid), type=mtype, action=action,
                 pose=pose(position=pt(x=centre[0], y=centre[1], z=centre[2]),
                           orientation=quat(x=0.0, y=0.0, z=0.0, w=1.0)),
                 scale=vec(x=size[0], y=size[1], z=size[2]),
                 color=rgba(r=colour[0], g=colour[1], b=colour[2], a=colour[3]),
                 lifetime=zero_t, frame_locked=False, points=[], colors=[],
                 texture_resource="", texture=compressed, uv_coordinates=[], text=text,
                 mesh_resource="", mesh_file=empty_mesh, mesh_use_embedded_materials=False)

    out = []
    if plan.delete_all:
        out.append(marker(0, M.CUBE, M.DELETEALL))
    for sid in plan.delete_ids:
        out.append(marker(sid, M.CUBE, M.DELETE))
        out.append(marker(sid + TEXT_ID_OFFSET, M.TEXT_VIEW_FACING, M.DELETE))
    for b in plan.boxes:
        out.append(marker(b.id, M.CUBE, M.ADD, b.centre, b.size, b.rgba))
        out.append(marker(b.id + TEXT_ID_OFFSET, M.TEXT_VIEW_FACING, M.ADD, text_position(b),
                          (0.0, 0.0, TEXT_HEIGHT_M), (1.0, 1.0, 1.0, 1.0), b.text))
    return T[MARKER_ARRAY_TYPE](markers=out)


def messages_3d(store, products, header, depth_stamp_ns: int, planner):
    """(output key, type, message) of a frame's 3D products; ``planner``: the camera's
    MarkerPlanner (its state: the ids and vocabulary of the markers sent before)."""
    out = []
    if products.cloud is not None:
        out.append(("points", POINTCLOUD2_TYPE, pointcloud2_msg(store, products.cloud, header)))
    if products.segments_3d is not None:
        out.append(("segments_3d", SEGMENTS_3D_TYPE,
                    segments3d_msg(store, products.segments_3d, header, depth_stamp_ns,
                                   products.vocabulary_version)))
        plan = planner.plan(products.segments_3d, products.vocabulary_version)
        out.append(("markers", MARKER_ARRAY_TYPE, marker_array_msg(store, plan, header)))
    return out


def cloud_from_msg(msg) -> np.ndarray:
    """A PointCloud2 with the CLOUD_DTYPE layout back to its array (H x W, or N if height 1)."""
    names = [(f.name, int(f.offset)) for f in msg.fields]
    want = [(n, o) for n, o, _, _ in CLOUD_FIELDS]
    if names != want or int(msg.point_step) != CLOUD_DTYPE.itemsize:
        raise ValueError(f"cloud fields {names} (point_step {msg.point_step}) are not the "
                         f"labelled cloud layout {want} (point_step {CLOUD_DTYPE.itemsize})")
    arr = np.frombuffer(np.asarray(msg.data, np.uint8).tobytes(), CLOUD_DTYPE)
    return arr if int(msg.height) == 1 else arr.reshape(int(msg.height), int(msg.width))


__all__ = ["messages_3d", "OUTPUT_TOPICS_3D", "OUTPUT_TYPES_3D",
           "pointcloud2_msg", "segments3d_msg", "marker_array_msg", "cloud_from_msg",
           "POINTCLOUD2_TYPE", "SEGMENTS_3D_TYPE", "MARKER_ARRAY_TYPE"]
