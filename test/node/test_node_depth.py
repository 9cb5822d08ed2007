"""Depth and the 3D outputs of ovseg_node over DDS: one real node process (tiny random-weight
ProxyCLIP, depth_enabled), this process plays an RGB-D camera (the synthetic scene of
ovseg_ros/testing/rgbd_scene.py at 128x96) and runs the scenarios in sequence.

Random weights make the labels meaningless, so the 3D outputs are checked against what the
geometry core gives for the published frame: the cloud's xyz against the back-projection of
the depth that was sent, the segments_3d centroids against ``segment_stats`` of the
published panoptic image (within 1 cm), the markers against segments_3d. Bad depth
(a colour encoding, a wrong size, no valid value, metres in 16UC1, another frame_id, a
camera_info with zeros, NaN or distortion, none at all) must be refused with its reason in
the camera's diagnostics while every 2D output still comes for that frame; a depth stream
that stops leaves colour frames unpaired (counted, with the reason), and a depth stream at
5x the colour rate pairs each colour frame with its own depth image; a vocabulary change
clears the camera's markers (DELETEALL) before its new boxes.
"""
from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("ovseg_ros.msg")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile,  # noqa: E402
                       ReliabilityPolicy)
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from std_msgs.msg import Header  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from node_harness import TINY_PARAMS, Client, NodeUnderTest, diag_values  # noqa: E402
from ovseg_ros.core import geometry  # noqa: E402
from ovseg_ros.core.depth import Intrinsics  # noqa: E402
from ovseg_ros.core.markers import TEXT_ID_OFFSET  # noqa: E402
from ovseg_ros.eval.bags_3d import cloud_from_msg  # noqa: E402
from ovseg_ros.msg import Segments, Segments3D  # noqa: E402
from ovseg_ros.ros.image_conv import array_to_image, image_to_array, rgb_to_image  # noqa: E402
from ovseg_ros.srv import SetVocabulary  # noqa: E402
from ovseg_ros.testing import rgbd_scene as scene  # noqa: E402

NS = "/rgbd"
SCALE = 0.2
W, H = int(scene.WIDTH * SCALE), int(scene.HEIGHT * SCALE)     # 128 x 96
FX, FY = scene.FX * SCALE, scene.FY * SCALE
CX, CY = (scene.CX + 0.5) * SCALE - 0.5, (scene.CY + 0.5) * SCALE - 0.5
FRAME = "rgbd_optical"
LIFETIME = 1.5
PARAMS = dict(TINY_PARAMS, depth_enabled=True, depth_slop=0.01, subscribe_compressed=False,
              marker_lifetime=LIFETIME)
OUTPUTS_2D = {"segments": Segments, "panoptic": Image, "semantic": Image}
OUTPUTS_3D = {"points": PointCloud2, "segments_3d": Segments3D, "markers": MarkerArray}
CAMERA_DIAG = "ovseg_node: camera (unnamed)"
_secs = itertools.count(5000)


def _scene():
    rgb, mm, _, _, _ = scene.render(0, W, H, FX, FY, CX, CY)
    return rgb, mm


def _info(header, *, k=None, p=None, d=None):
    info = CameraInfo(header=header, width=W, height=H, distortion_model="plumb_bob")
    kk = np.array([[FX, 0, CX], [0, FY, CY], [0, 0, 1.0]]) if k is None else np.asarray(k)
    info.k = [float(v) for v in kk.reshape(-1)]
    pp = np.concatenate([kk, np.zeros((3, 1))], axis=1) if p is None else np.asarray(p)
    info.p = [float(v) for v in pp.reshape(-1)]
    info.d = [0.0] * 5 if d is None else [float(v) for v in d]
    info.r = [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
    return info


def _header(sec, nanosec=0, frame_id=FRAME):
    h = Header(frame_id=frame_id)
    h.stamp.sec, h.stamp.nanosec = int(sec), int(nanosec)
    return h


def _key(header):
    return (header.stamp.sec, header.stamp.nanosec)


class RGBD:
    """The node process, this process's camera publishers and the output recorders."""

    def __init__(self, tmp):
        self.node = NodeUnderTest(tmp, PARAMS, namespace=NS)
        try:
            self.client = c = Client(NS)
            q = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                           reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.VOLATILE)
            self.pub_image = c.node.create_publisher(Image, "image", q)
            self.pub_depth = c.node.create_publisher(Image, "depth", q)
            self.pub_info = c.node.create_publisher(CameraInfo, "camera_info", q)
            self.pub_depth_info = c.node.create_publisher(CameraInfo, "depth/camera_info", q)
            for topic, typ in {**OUTPUTS_2D, **OUTPUTS_3D}.items():
                c.record(typ, topic)
            c.record(DiagnosticArray, "/diagnostics", qos=10)
            c.wait_for(lambda: self.pub_image.get_subscription_count() > 0
                       and self.pub_depth.get_subscription_count() > 0
                       and self.pub_depth_info.get_subscription_count() > 0
                       and all(c.node.count_publishers(f"{NS}/{t}") > 0
                               for t in {**OUTPUTS_2D, **OUTPUTS_3D}),
                       timeout=120, node=self.node, what="the node's depth topics")
        except BaseException:
            self.node.stop()
            raise

    def found(self, topic, key):
        def header(m):     # a MarkerArray has no header: its markers carry the frame's
            return m.markers[-1].header if isinstance(m, MarkerArray) else m.header
        return next((m for m in self.client.msgs(topic)
                     if (not isinstance(m, MarkerArray) or m.markers)
                     and _key(header(m)) == key), None)

    def frame(self, rgb, depth_msgs=(), *, info=True, depth_info=None, want=OUTPUTS_3D,
              sec=None, timeout=60.0):
        """Publish (camera_info,) the depth messages, then the colour frame, again every
        0.5 s (best-effort input) until the 2D outputs and ``want`` of its stamp arrived;
        returns {topic: message} of that stamp."""
        sec = next(_secs) if sec is None else sec
        header = _header(sec)
        key = _key(header)
        topics = list(OUTPUTS_2D) + list(want)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if info:
                self.pub_info.publish(_info(header))
            if depth_info is not None:
                depth_info.header = header
                self.pub_depth_info.publish(depth_info)
            for d in depth_msgs:
                self.pub_depth.publish(d(header) if callable(d) else d)
            time.sleep(0.05)       # the depth goes first, as an aligned driver sends it
            self.pub_image.publish(rgb_to_image(rgb, "rgb8", header))
            t_next = time.monotonic() + 0.5
            while time.monotonic() < t_next:
                got = {t: self.found(t, key) for t in topics}
                if all(v is not None for v in got.values()):
                    return got
                assert self.node.alive(), self.node.log()[-3000:]
                time.sleep(0.02)
        raise AssertionError(f"no {topics} for stamp {key} within {timeout} s\n"
                             f"{self.node.log()[-3000:]}")

    def no_3d(self, sec, settle=0.5):
        """No 3D output came for this stamp (after ``settle`` s more)."""
        time.sleep(settle)
        key = (sec, 0)
        return all(self.found(t, key) is None for t in OUTPUTS_3D)

    def camera_diag(self, pred, what, timeout=10.0):
        """The newest camera diagnostics values once ``pred(values, status)`` holds."""
        out = {}

        def ok():
            got = diag_values(self.client, CAMERA_DIAG)
            if got is not None and pred(*got):
                out["v"] = got
                return True
            return False
        self.client.wait_for(ok, timeout, self.node, what)
        return out["v"]

    def close(self):
        self.client.close()
        return self.node.stop()


@pytest.fixture(scope="module")
def rgbd(tmp_path_factory):
    s = RGBD(tmp_path_factory.mktemp("rgbd"))
    yield s
    code = s.close()
    assert code == 0, f"node exit code {code}:\n{s.node.log()[-3000:]}"


def _depth_16(mm):
    return lambda h: array_to_image(mm, "16UC1", h)


def _depth_32(m):
    return lambda h: array_to_image(m.astype(np.float32), "32FC1", h)


def _refused(rgbd, code, rgb, depth_msgs, **kw):
    """A frame whose depth is refused with ``code``: every 2D output comes, no 3D; the
    camera diagnostics count the reason and name it in depth_last_error."""
    before = rgbd.camera_diag(lambda v, s: True, "camera diagnostics")[0]
    got = rgbd.frame(rgb, depth_msgs, want={}, **kw)
    sec = got["segments"].header.stamp.sec
    assert rgbd.no_3d(sec), f"3D outputs for a frame whose depth is refused ({code})"

    def counted(v, s):
        n = dict(x.split(":") for x in v["depth_refused_by_reason"].split(",") if x)
        m = dict(x.split(":") for x in before["depth_refused_by_reason"].split(",") if x)
        return int(n.get(code, 0)) > int(m.get(code, 0)) and f"({code})" in v["depth_last_error"]
    values, status = rgbd.camera_diag(counted, f"depth refused ({code}) in the diagnostics")
    assert f"refused ({code})" in rgbd.node.log()
    return values, status


def _check_3d(got, metres):
    """The cloud, segments_3d and markers of a frame against the geometry core."""
    intr = Intrinsics(FX, FY, CX, CY, W, H)
    cloud = cloud_from_msg(got["points"])
    assert cloud.shape == (H, W) and got["points"].header.frame_id == FRAME
    xyz = geometry.backproject(metres, intr)
    for i, axis in enumerate("xyz"):
        np.testing.assert_allclose(cloud[axis], xyz[..., i], rtol=0, atol=1e-5,
                                   equal_nan=True, err_msg=axis)
    pan = image_to_array(got["panoptic"])
    assert np.array_equal(cloud["instance"], pan)
    assert np.array_equal(cloud["label"], image_to_array(got["semantic"]))
    truth = {s["id"]: s for s in geometry.segment_stats(xyz, pan)}
    segs = got["segments_3d"].segments
    assert segs and {s.id for s in segs} == set(truth)
    assert got["segments_3d"].depth_stamp == got["points"].header.stamp
    for s in segs:
        c = (s.centroid.x, s.centroid.y, s.centroid.z)
        assert np.linalg.norm(np.subtract(c, truth[s.id]["centroid"])) < 0.01, s.id
        assert s.valid_points == truth[s.id]["valid_points"]
    cubes = {m.id: m for m in got["markers"].markers
             if m.type == Marker.CUBE and m.action == Marker.ADD}
    texts = {m.id - TEXT_ID_OFFSET for m in got["markers"].markers
             if m.type == Marker.TEXT_VIEW_FACING and m.action == Marker.ADD}
    assert set(cubes) == texts == {s.id for s in segs}
    for s in segs:
        m = cubes[s.id]
        assert m.ns == "(unnamed)" and m.header.frame_id == FRAME
        assert (m.pose.position.x, m.pose.position.z) == pytest.approx(
            (s.centroid.x, s.centroid.z), abs=1e-6)
        assert m.lifetime.sec + m.lifetime.nanosec / 1e9 == pytest.approx(LIFETIME)
    return cloud


def test_depth_scenarios_in_sequence(rgbd):
    rgb, mm = _scene()
    metres = mm.astype(np.float32) / np.float32(1000.0)

    # 1. no camera_info at all yet: refused (camera_info), 2D outputs go on
    _refused(rgbd, "camera_info", rgb, [_depth_16(mm)], info=False)

    # 2. 16UC1 millimetres, intrinsics from the colour camera_info: the 3D outputs
    got = rgbd.frame(rgb, [_depth_16(mm)])
    _check_3d(got, metres)

    # 3. 32FC1 metres with its own depth/camera_info; NaN, +-inf, negative and absurd pixels
    #    are no measurement: NaN points, the rest of the frame unchanged
    m = metres.copy()
    m[0, :4] = [np.nan, np.inf, -1.0, 1e6]
    m[1, :2] = [-np.inf, 0.0]
    got = rgbd.frame(rgb, [_depth_32(m)], depth_info=_info(_header(0)))
    expect = metres.copy()
    expect[0, :4] = np.nan
    expect[1, :2] = np.nan
    cloud = _check_3d(got, expect)
    assert np.isnan(cloud["z"][0, :4]).all() and np.isfinite(cloud["z"][2]).all()

    # 4. bad depth: each refused with its reason, the node stays up, the 2D outputs go on
    bad_info = {"intrinsics": _info(_header(0), k=np.zeros((3, 3)), p=np.zeros((3, 4))),
                "distortion": _info(_header(0), d=[0.1, 0.01, 0.0, 0.0, 0.0])}
    nan_k = np.array([[np.nan, 0, CX], [0, FY, CY], [0, 0, 1.0]])
    nan_info = _info(_header(0), k=nan_k, p=np.concatenate([nan_k, np.zeros((3, 1))], 1))
    for code, depth_msgs, kw in [
            ("encoding", [lambda h: rgb_to_image(rgb, "rgb8", h)], {}),
            ("size", [_depth_16(mm[: H // 2, : W // 2].copy())], {}),
            ("no_valid", [_depth_16(np.zeros_like(mm))], {}),
            ("no_valid", [_depth_32(np.tile(np.float32([np.nan, np.inf, -2.0, -np.inf]),
                                            (H, W // 4)))], {}),
            ("units", [_depth_16((mm // 1000).astype(np.uint16))], {}),
            ("frame_id", [lambda h: array_to_image(mm, "16UC1", _header(
                h.stamp.sec, frame_id="other_frame"))], {}),
            ("intrinsics", [_depth_16(mm)], {"depth_info": bad_info["intrinsics"]}),
            ("intrinsics", [_depth_16(mm)], {"depth_info": nan_info}),
            ("distortion", [_depth_16(mm)], {"depth_info": bad_info["distortion"]})]:
        _refused(rgbd, code, rgb, depth_msgs, **kw)
    assert rgbd.node.alive()

    # 5. the depth stream stops: colour frames go on without 3D, counted with the reason
    before = rgbd.camera_diag(lambda v, s: True, "camera diagnostics")[0]
    for _ in range(3):
        got = rgbd.frame(rgb, [], depth_info=_info(_header(0)), want={})
        assert rgbd.no_3d(got["segments"].header.stamp.sec, settle=0.1)
    values, _ = rgbd.camera_diag(
        lambda v, s: int(v["depth_unpaired"]) >= int(before["depth_unpaired"]) + 3
        and "no depth image received" in v["depth_last_miss"], "unpaired colour frames")

    # 6. depth at 5x the colour rate: each colour frame pairs with its own depth image
    #    (same stamp), the four between are dropped, memory stays bounded
    paired0 = int(values["depth_paired"])
    for _ in range(3):
        sec = next(_secs)
        fast = [(lambda h, k=k: array_to_image(mm, "16UC1", _header(
            h.stamp.sec - 1, 200_000_000 * (k + 1)))) for k in range(4)] + [_depth_16(mm)]
        got = rgbd.frame(rgb, fast, depth_info=_info(_header(0)), sec=sec)
        _check_3d(got, metres)
    values, _ = rgbd.camera_diag(lambda v, s: int(v["depth_paired"]) >= paired0 + 3,
                                 "the fast depth stream paired")
    assert int(values["depth_dropped"]) >= 12

    # 7. a vocabulary change: the camera's next markers start with a DELETEALL (ids and
    #    colours now mean other classes), then the new boxes
    srv = rgbd.client.node.create_client(SetVocabulary, "set_vocabulary")
    resp = rgbd.client.call(srv, SetVocabulary.Request(classes=["wall", "floor", "box"]))
    assert resp.success, resp.message
    got = rgbd.frame(rgb, [_depth_16(mm)], depth_info=_info(_header(0)))
    first = got["markers"].markers[0]
    assert (first.action, first.ns) == (Marker.DELETEALL, "(unnamed)")
    assert got["segments_3d"].vocabulary_version == resp.version
    _check_3d(got, metres)
    assert rgbd.node.alive()
