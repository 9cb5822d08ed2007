"""Bag-to-bag inference with registered depth: the 3D topics of the SYNTHETIC RGB-D sample
(scripts/make_sample_bag.py --rgbd-only), written and read back with rosbags."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ovseg_ros.core import geometry as G
from ovseg_ros.core.depth import Intrinsics
from ovseg_ros.eval import bags as B
from ovseg_ros.eval.bags_3d import cloud_from_msg
from ovseg_ros.testing import rgbd_scene as S

ROOT = Path(__file__).resolve().parents[2]
FRAMES = 2


@pytest.fixture(scope="module")
def rgbd_bag(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "sample" / "sample_bag"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_sample_bag.py"), "--out",
                    str(out), "--rgbd-only"], check=True, capture_output=True, cwd=ROOT)
    return out.parent / "rgbd_bag"


@pytest.fixture(scope="module")
def segmenter():
    import yaml

    from ovseg_ros import load_segmenter

    cfg = yaml.safe_load((ROOT / "test" / "configs" / "tiny_proxyclip.yaml").read_text())
    return load_segmenter(dict(cfg, vocabulary=list(S.CLASSES)))


def read_topics(path, names):
    store = B.make_typestore()
    reader = B.open_reader(path)
    out = {n: [] for n in names}
    try:
        for conn, _, raw in reader.messages():
            name = conn.topic.rsplit("/", 1)[-1]
            if conn.topic.startswith("/ovseg/") and name in out:
                out[name].append(store.deserialize_cdr(raw, conn.msgtype))
    finally:
        reader.close()
    return out


def test_sample_truth_file(rgbd_bag):
    truth = json.loads((rgbd_bag.parent / "rgbd_bag_truth.json").read_text())
    assert truth["camera"]["fx"] == S.FX and len(truth["frames"]) == 6
    assert truth["frames"][0][0]["centre"] == [-0.6, 0.05, 2.0]


def test_infer_bag_writes_points_segments_3d_and_markers(rgbd_bag, segmenter, tmp_path):
    from ovseg_ros.eval.bag_infer import infer_bag

    res = infer_bag(segmenter, rgbd_bag, tmp_path / "out", "/rgbd/image_raw", limit=FRAMES,
                    progress=False, cloud_stride=4)
    assert res["depth"]["paired_exact"] == FRAMES and res["depth"]["refused"] == {}
    assert res["topics"]["/ovseg/points"] == FRAMES
    got = read_topics(tmp_path / "out", ("points", "segments_3d", "markers", "semantic",
                                         "panoptic", "segments"))
    intr = Intrinsics(S.FX, S.FY, S.CX, S.CY, S.WIDTH, S.HEIGHT)
    for k in range(FRAMES):
        _, mm, _, _, _ = S.render(k)
        xyz = G.backproject(mm.astype(np.float32) / np.float32(1000), intr)[::4, ::4]
        cloud = cloud_from_msg(got["points"][k])
        assert cloud.shape == (S.HEIGHT // 4, S.WIDTH // 4)
        assert got["points"][k].header.frame_id == "rgbd_color_optical"
        for a, name in enumerate("xyz"):
            np.testing.assert_allclose(cloud[name], xyz[..., a], atol=1e-5, rtol=0)
        sem = B.image_to_numpy(got["semantic"][k])
        pan = B.image_to_numpy(got["panoptic"][k])
        assert (cloud["label"] == sem[::4, ::4]).all()
        assert (cloud["instance"] == pan[::4, ::4]).all()
        s3 = got["segments_3d"][k]
        assert (s3.depth_stamp.sec, s3.depth_stamp.nanosec) == (s3.header.stamp.sec,
                                                                 s3.header.stamp.nanosec)
        ids2d = {s.id for s in got["segments"][k].segments}
        assert s3.segments and {s.id for s in s3.segments} <= ids2d
        for s in s3.segments:
            assert s.depth_min <= s.centroid.z <= s.depth_max and s.valid_points > 0
        marks = got["markers"][k].markers
        assert all(m.ns == "ovseg" for m in marks)
        assert sorted(m.id for m in marks if m.type == 1 and m.action == 0) == \
            [s.id for s in s3.segments]


def test_32fc1_depth_gives_the_same_cloud(rgbd_bag, segmenter, tmp_path):
    from ovseg_ros.eval.bag_infer import infer_bag

    for topic, out in (("/rgbd/depth", "a"), ("/rgbd/depth_32f", "b")):
        infer_bag(segmenter, rgbd_bag, tmp_path / out, "/rgbd/image_raw", limit=1,
                  progress=False, cloud_stride=8, depth_topic=topic)
    a = read_topics(tmp_path / "a", ("points",))["points"][0]
    b = read_topics(tmp_path / "b", ("points",))["points"][0]
    assert bytes(a.data) == bytes(b.data)


def test_a_refused_depth_is_counted_with_its_reason(rgbd_bag, segmenter, tmp_path):
    from ovseg_ros.eval.bag_infer import infer_bag

    # class ids 0..2 in 16UC1 read as millimetres: the units check refuses them
    res = infer_bag(segmenter, rgbd_bag, tmp_path / "out", "/rgbd/image_raw", limit=1,
                    progress=False, depth_topic="/rgbd/labels")
    assert res["depth"]["refused"] == {"units": 1}
    assert "look like metres" in res["depth"]["refused_first"]["units"]
    assert res["topics"]["/ovseg/points"] == 0


def test_a_depth_topic_without_camera_info_is_an_error(rgbd_bag, segmenter, tmp_path):
    from ovseg_ros.eval.bag_infer import infer_bag

    with pytest.raises(B.BagError, match="camera_info.*not in the bag"):
        infer_bag(segmenter, rgbd_bag, tmp_path / "out", "/rgbd/image_raw", limit=1,
                  progress=False, camera_info_topic="/nope/camera_info")
