"""`make demo` end to end, with a small frame limit: sample bag -> node process ->
recorded output bag, overlay PNGs and summary."""
from __future__ import annotations

import json
import subprocess
import sys

import cv2
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("ovseg_ros.msg")

from node_harness import ROOT, node_env, run_tool  # noqa: E402


def _demo_env():
    """The environment a user's `make demo` has: the demo's camera-sized frames (up to
    1280x720, 2.7 MB) need the Fast DDS profile config/fastdds_camera.xml, which the demo
    sets unless the caller chose transports itself (the node tests choose the default ones)."""
    env = node_env()
    env.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
    return env


def test_sample_bag_has_real_photos_in_several_encodings(tmp_path):
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    out = tmp_path / "bag"
    r = subprocess.run([sys.executable, "scripts/make_sample_bag.py", "--out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    again = subprocess.run([sys.executable, "scripts/make_sample_bag.py", "--out", str(out)],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "up to date" in again.stdout          # cached: not rewritten
    ts = get_typestore(Stores.ROS2_KILTED)
    seen = {}
    with Reader(out) as reader:
        assert reader.connections[0].msgtype  # opened
        for conn, _, raw in reader.messages():
            msg = ts.deserialize_cdr(raw, conn.msgtype)
            if conn.msgtype == "sensor_msgs/msg/Image":
                seen.setdefault(conn.topic, set()).add((msg.encoding, msg.width, msg.height))
                assert msg.step * msg.height == len(msg.data)
                assert msg.data.std() > 10           # a photograph, not a flat test pattern
            elif conn.msgtype == "sensor_msgs/msg/CompressedImage":
                seen.setdefault(conn.topic, set()).add(("jpeg", len(msg.data) > 1000))
            else:
                seen.setdefault(conn.topic, set()).add(conn.msgtype)
    assert seen["/cam_vga/image_raw"] == {("rgb8", 640, 480)}
    assert seen["/cam_hd/image_raw"] == {("bgr8", 1280, 720)}
    assert seen["/cam_mono/image_raw"] == {("mono8", 640, 480)}
    assert seen["/cam_vga/image_raw/compressed"] == {("jpeg", True)}
    assert seen["/cam_hd/camera_info"] == {"sensor_msgs/msg/CameraInfo"}


def test_demo_leaves_bag_pngs_and_summary(tmp_path):
    subprocess.run([sys.executable, "scripts/make_sample_bag.py"], cwd=ROOT, check=True,
                   timeout=120, capture_output=True)
    out = tmp_path / "demo"
    r = run_tool([sys.executable, "-m", "ovseg_ros.tools.demo", "--out", str(out),
                  "--max-frames", "6", "--rate", "0"], cwd=ROOT, env=_demo_env(), timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert not r.left_children, "the demo left its node process running"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_sent"] == 6 and summary["frames_processed"] == 6
    assert summary["outputs_per_topic"]["semantic"] == 6
    assert summary["outputs_per_topic"]["segments"] == 6
    assert summary["fps"] > 0 and summary["latency_ms"]["mean"] > 0
    assert summary["set_vocabulary"]["success"] is True
    assert summary["vocabulary_final"] != summary["vocabulary_initial"]
    md = (out / "summary.md").read_text()
    # the RGB-D phase: the same node with depth, the 3D outputs of every frame, the
    # top-down plot of the labelled cloud and the 3D segment table
    rgbd = summary["rgbd"]
    assert rgbd["frames_sent"] == 6 and rgbd["set_vocabulary"] is True
    # every colour frame gets its 2D outputs; a frame whose depth was still in flight on a
    # loaded machine gets no 3D ones (the colour path never waits), so 3D on most, not all
    out3d = rgbd["outputs"]
    assert out3d["semantic"] == 6 and 1 <= out3d["points"] <= 6, out3d
    assert out3d["segments_3d"] == out3d["markers"] == out3d["points"], out3d
    plot = cv2.imread(str(out / rgbd["plot"]))
    assert plot is not None and plot.std() > 10
    assert "## 3D outputs" in md and f"![top-down view of the labelled cloud]({rgbd['plot']})" in md
    for seg in rgbd["segments_3d"]:
        assert seg["valid_points"] > 0 and 0.5 < seg["centroid"][2] < 10.0   # the scene's depths
        assert f"| {seg['id']} | {seg['class']} |" in md
    pngs = sorted(out.glob("overlay_*.png"))
    assert len(pngs) == 6 + 6
    sizes = {cv2.imread(str(p)).shape[:2] for p in pngs}
    assert (480, 640) in sizes and (720, 1280) in sizes     # camera resolutions kept
    if summary["weights"] == "RANDOM WEIGHTS":
        # said in the console, the summary and on the images (dark banner, top left)
        assert "RANDOM WEIGHTS" in r.stdout and "RANDOM WEIGHTS" in md
        for p in pngs:
            top = cv2.imread(str(p))[2:20, 2:200]
            assert (top.max(axis=2) < 30).mean() > 0.3, p
    from rosbags.rosbag2 import Reader

    with Reader(out / "output_bag") as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts["/demo/semantic"] == 6 + 6 and counts["/demo/colored"] == 6 + 6
    assert counts["/demo/points"] == counts["/demo/segments_3d"] == counts["/demo/markers"] == 6
    assert counts["/demo/vocabulary"] >= 2
    assert counts["/diagnostics"] >= 1
