"""ovseg_node with tracking and segment embeddings on (one node process, real DDS): track
ids persist over a steady scene in panoptic and segments, segment_embeddings carries fp16
unit rows for the segments' ids, `locate` answers with segments of the latest frame and
refuses every bad request with a message while frames keep flowing; a stall resets the
tracks; diagnostics count tracks, resets and locate calls."""
from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("ovseg_ros.msg")

import cv2  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from node_harness import (TINY_PARAMS, CameraStream, Client, NodeUnderTest,  # noqa: E402
                          diag_values, stamp_key)
from ovseg_ros.core.tracking import STUFF_ID_LIMIT  # noqa: E402
from ovseg_ros.msg import SegmentEmbeddings, Segments  # noqa: E402
from ovseg_ros.ros.image_conv import image_to_array  # noqa: E402
from ovseg_ros.srv import Locate  # noqa: E402

NS = "/trk"
H, W = 90, 130
PARAMS = {**TINY_PARAMS, "tracking.enabled": True, "embeddings.enabled": True,
          # stamps of the test stream advance 1 s per frame and the node may skip frames:
          # only a stall (input_timeout) resets the tracks here
          "tracking.reset_gap": 1000.0, "input_timeout": 1.5}
CAMERA_DIAG = "ovseg_node: camera (unnamed)"
NODE_DIAG = "ovseg_node: segmentation"


def _photo():
    import skimage.data

    return cv2.resize(skimage.data.astronaut(), (W, H), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    node = NodeUnderTest(tmp_path_factory.mktemp("node"), PARAMS, namespace=NS)
    client = None
    try:
        client = Client(NS)
        for key, typ in (("panoptic", Image), ("segments", Segments),
                         ("segment_embeddings", SegmentEmbeddings)):
            client.record(typ, key)
        client.record(DiagnosticArray, "/diagnostics", qos=10)
        locate = client.node.create_client(Locate, "locate")
        client.wait_for(lambda: client.node.count_publishers(f"{NS}/segment_embeddings") > 0
                        and locate.service_is_ready(), 120, node, "the node to configure")
        stream = CameraStream(client, "image", "cam_trk", _photo(), sec_base=5000, rate=5.0)
        yield node, client, locate, stream
        stream.stop()
    finally:
        if client is not None:
            client.close()
        code = node.stop()
    assert code == 0, f"node exit code {code}:\n{node.log()[-3000:]}"


def _ask(client, locate, query="person", top_k=3, camera=""):
    return client.call(locate, Locate.Request(query=query, top_k=top_k, camera=camera))


def _frames(client, n, node, since=0.0):
    """The newest ``n`` (panoptic, segments, embeddings) triples with one stamp each,
    received after ``since`` (monotonic)."""
    def triples():
        by = {}
        for key in ("panoptic", "segments", "segment_embeddings"):
            for t, m in client.timed(key):
                if t >= since:
                    by.setdefault(stamp_key(m.header), {})[key] = m
        return [v for _, v in sorted(by.items()) if len(v) == 3]
    client.wait_for(lambda: len(triples()) >= n, 90, node, f"{n} complete frames")
    return triples()[-n:]


def test_locate_before_any_frame_is_refused(system):
    node, client, locate, _ = system
    r = _ask(client, locate)
    assert not r.success and "no frame yet" in r.message and not r.matches


def test_ids_persist_over_a_steady_scene_and_embeddings_match(system):
    node, client, locate, stream = system
    stream.start()
    frames = _frames(client, 4, node)
    ids = []
    for f in frames:
        seg_ids = [s.id for s in f["segments"].segments]
        pan_ids = set(np.unique(image_to_array(f["panoptic"])).tolist()) - {0}
        assert pan_ids == set(seg_ids)
        ids.append(sorted(seg_ids))
        emb = f["segment_embeddings"]
        assert list(emb.ids) == sorted(seg_ids) and emb.dtype == "float16"
        assert emb.space.startswith("open_clip:") and emb.dim > 0
        assert emb.vocabulary_version == f["segments"].vocabulary_version
        rows = np.frombuffer(bytes(emb.data), "<f2").reshape(len(emb.ids), emb.dim)
        np.testing.assert_allclose(np.linalg.norm(rows.astype(np.float32), axis=1), 1.0,
                                   atol=2e-3)
    assert all(i == ids[0] for i in ids), f"ids changed over a steady scene: {ids}"
    assert any(i > STUFF_ID_LIMIT for i in ids[0]), "thing segments carry track ids"


def test_locate_answers_with_segments_of_the_latest_frame(system):
    node, client, locate, _ = system
    latest = _frames(client, 1, node)[0]["segments"]
    r = _ask(client, locate, "a person in a space suit", top_k=3)
    assert r.success, r.message
    assert 1 <= len(r.matches) <= 3 and "searched camera (unnamed)" in r.message
    scores = [m.score for m in r.matches]
    assert scores == sorted(scores, reverse=True)
    by_id = {s.id: s for s in latest.segments}
    for m in r.matches:
        assert m.camera == "" and m.header.frame_id == "cam_trk"
        assert m.id in by_id and m.class_id == by_id[m.id].class_id
        assert not m.has_3d                       # no depth: no centroid
        assert -1.0 <= m.score <= 1.0
    warm = _ask(client, locate, "a person in a space suit", top_k=1)
    assert warm.success and len(warm.matches) == 1


@pytest.mark.parametrize("query,top_k,camera,needle", [
    ("", 3, "", "query is empty"),
    ("   ", 3, "", "query is empty"),
    ("x" * 1_000_000, 3, "", "1000000 characters, more than the limit of 200"),
    ("\x01\x02\x7f binary", 3, "", "non-printable"),
    ("person", 0, "", "top_k must be in 1..100, got 0"),
    ("person", 10 ** 6, "", "top_k must be in 1..100, got 1000000"),
    ("person", 3, "nope", "camera 'nope' does not exist"),
])
def test_bad_locate_requests_are_refused_and_frames_keep_flowing(system, query, top_k,
                                                                  camera, needle):
    node, client, locate, _ = system
    r = _ask(client, locate, query, top_k, camera)
    assert not r.success and needle in r.message and not r.matches
    _frames(client, 1, node, since=time.monotonic())      # the next frame still comes
    assert node.alive()


def test_diagnostics_count_tracks_and_locate_calls(system):
    node, client, _, _ = system
    client.clear("/diagnostics")
    client.wait_for(lambda: diag_values(client, NODE_DIAG) and diag_values(client, CAMERA_DIAG),
                    15, node, "diagnostics")
    cam, _ = diag_values(client, CAMERA_DIAG)
    assert cam["tracking"] == "True" and int(cam["tracks"]) >= 1
    values, _ = diag_values(client, NODE_DIAG)
    assert values["embeddings"] == "True" and values["tracking"] == "True"
    assert int(values["locate_answered"]) >= 2 and int(values["locate_refused"]) >= 8


def test_a_stall_resets_the_tracks(system):
    node, client, _, stream = system
    before = {s.id for s in _frames(client, 1, node)[0]["segments"].segments}

    def resets():
        got = diag_values(client, CAMERA_DIAG)
        return int(got[0].get("track_resets", -1)) if got else -1
    client.clear("/diagnostics")
    client.wait_for(lambda: resets() >= 0, 15, node, "camera diagnostics")
    r0 = resets()       # 0 unless the loaded machine starved the stream for input_timeout
    stream.stop()
    client.wait_for(lambda: diag_values(client, CAMERA_DIAG)
                    and diag_values(client, CAMERA_DIAG)[0]["stalled"] == "True", 15, node,
                    "the stall")
    assert resets() == r0, "reset only when the next frame comes"
    stream.start()
    after = _frames(client, 1, node, since=time.monotonic())[0]["segments"].segments
    things = {s.id for s in after if s.id > STUFF_ID_LIMIT}
    assert things and not things & before, "new track ids after the stall"
    client.clear("/diagnostics")
    client.wait_for(lambda: resets() == r0 + 1, 15, node, "one more track reset in the "
                    "diagnostics")
