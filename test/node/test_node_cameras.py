"""Several cameras in one ovseg_node process (one loaded model), over DDS.

One node serves two cameras of different resolutions (front 130x90 rgb8 with its
own QoS settings, left 80x60 bgr8 without compressed input); this process plays
both cameras and calls the node's services from several DDS participants at once.
Checked: each camera's outputs carry its own headers and resolution, batches of
both cameras give the same labels as one frame at a time, a vocabulary change
while both stream leaves every output consistent with one version that never
goes back, bursts of concurrent service calls are all answered, hostile frames on
one camera leave the other alone, and a stopped camera is reported stalled once
and cleared when it returns.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("ovseg_ros.msg")

import cv2  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_srvs.srv import SetBool  # noqa: E402

from node_harness import (TINY_PARAMS, CameraStream, Client, NodeUnderTest,  # noqa: E402
                          diag_values, stamp_key)
from ovseg_ros.core.products import build_products  # noqa: E402
from ovseg_ros.core.types import UNLABELED  # noqa: E402
from ovseg_ros.msg import Segments, Vocabulary  # noqa: E402
from ovseg_ros.ros.image_conv import image_to_array  # noqa: E402
from ovseg_ros.srv import SetVocabulary  # noqa: E402

NS = "/mc"
SIZES = {"front": (90, 130), "left": (60, 80)}          # (h, w): different on purpose
ENCODING = {"front": "rgb8", "left": "bgr8"}
SEC_BASE = {"front": 100000, "left": 200000}             # stamps never collide
OUTPUTS = {"semantic": Image, "panoptic": Image, "colored": Image, "confidence": Image,
           "segments": Segments}
INPUT_TIMEOUT = 1.0
PER_PARTICIPANT = 4          # set_vocabulary clients in each of 3 test participants
PARAMS = dict(TINY_PARAMS, cameras=["front", "left"], input_timeout=INPUT_TIMEOUT, **{
    "front.image_reliability": "reliable", "front.image_depth": 3,
    "left.subscribe_compressed": False})


def _photo(cam):
    import skimage.data

    h, w = SIZES[cam]
    img = skimage.data.astronaut() if cam == "front" else skimage.data.chelsea()
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


class MultiCam:
    def __init__(self, tmp):
        self.node = NodeUnderTest(tmp, PARAMS, namespace=NS)
        try:
            self.client = c = Client(NS)
            self.streams = {}
            for cam in SIZES:
                self.streams[cam] = CameraStream(c, f"{cam}/image", f"{cam}_optical", _photo(cam),
                                                 SEC_BASE[cam], rate=15.0,
                                                 encoding=ENCODING[cam])
                for topic, typ in OUTPUTS.items():
                    c.record(typ, f"{cam}/{topic}")
            c.record(DiagnosticArray, "/diagnostics", qos=10)
            self.vocab_srv = c.node.create_client(SetVocabulary, "set_vocabulary")
            c.wait_for(lambda: all(s.pub.get_subscription_count() > 0
                                   for s in self.streams.values())
                       and all(c.node.count_publishers(f"{NS}/{cam}/{t}") > 0
                               for cam in SIZES for t in OUTPUTS),
                       timeout=120, node=self.node, what="the node to serve both cameras")
        except BaseException:
            self.node.stop()
            raise

    def outputs(self, cam, topic="semantic"):
        return self.client.msgs(f"{cam}/{topic}")

    def camera_diag(self, cam):
        return diag_values(self.client, f"ovseg_node: camera {cam}")

    def node_diag(self):
        return diag_values(self.client, "ovseg_node: segmentation")

    def wait_outputs(self, cam, n, topics=("semantic",), timeout=60.0):
        self.client.wait_for(lambda: all(len(self.outputs(cam, t)) >= n for t in topics),
                             timeout, self.node, f"{n} outputs of camera {cam}")

    def stop_streams(self):
        for s in self.streams.values():
            s.stop()

    def close(self):
        self.stop_streams()
        self.client.close()
        return self.node.stop()


@pytest.fixture(scope="module")
def mc(tmp_path_factory):
    s = MultiCam(tmp_path_factory.mktemp("multicam"))
    yield s
    code = s.close()
    assert code == 0, f"node exit code {code}:\n{s.node.log()[-3000:]}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same model in this process (random init is seeded)."""
    from ovseg_ros import load_segmenter

    cfg = {k: v for k, v in TINY_PARAMS.items()
           if k not in ("diagnostics_period", "subscribe_compressed")}
    return load_segmenter(dict(cfg, text_cache_dir=str(tmp_path_factory.mktemp("ref_text"))))


def _clear(mc):
    for cam in SIZES:
        for topic in OUTPUTS:
            mc.client.clear(f"{cam}/{topic}")


def _vocab(mc):
    return mc.client.latched(Vocabulary, "vocabulary", mc.node)


# --- topics, headers, resolutions ---------------------------------------------------------------
def test_each_camera_has_its_topics_and_settings(mc):
    c = mc.client.node
    # discovery of the node's other endpoints may trail the ones the fixture waited for
    mc.client.wait_for(lambda: c.count_subscribers(f"{NS}/front/image/compressed") == 1
                       and c.count_services(f"{NS}/set_vocabulary") == 1, 20, mc.node,
                       "front's compressed subscription and set_vocabulary")
    assert c.count_subscribers(f"{NS}/left/image/compressed") == 0   # per-camera override
    assert c.count_subscribers(f"{NS}/image") == 0       # no unnamed camera
    names = [n for n, _ in c.get_service_names_and_types()]
    assert f"{NS}/front/set_vocabulary" not in names and f"{NS}/left/set_vocabulary" not in names
    mc.client.wait_for(lambda: mc.camera_diag("front") and mc.camera_diag("left"), 20, mc.node,
                       "one diagnostics status per camera")
    front, _ = mc.camera_diag("front")
    left, _ = mc.camera_diag("left")
    assert (front["image_reliability"], front["image_depth"], front["subscribe_compressed"]) \
        == ("reliable", "3", "True")
    assert (left["image_reliability"], left["image_depth"], left["subscribe_compressed"]) \
        == ("best_effort", "1", "False")
    assert front["topic"] == f"{NS}/front/image" and left["topic"] == f"{NS}/left/image"


def test_two_cameras_at_once_each_output_has_its_own_header_and_size(mc, reference):
    _clear(mc)
    mc.client.clear("/diagnostics")
    for s in mc.streams.values():
        s.start()
    try:
        for cam in SIZES:
            mc.wait_outputs(cam, 8, topics=tuple(OUTPUTS))
        mc.client.wait_for(lambda: mc.node_diag() and
                           int(mc.node_diag()[0]["frames_batched"]) > 0, 30, mc.node,
                           "frames of both cameras to share a predict_batch call")
    finally:
        mc.stop_streams()
    vocab = _vocab(mc)
    reference.set_vocabulary([",".join(ci.synonyms) for ci in vocab.classes],
                             [ci.is_thing for ci in vocab.classes])
    for cam, (h, w) in SIZES.items():
        sent = mc.streams[cam].sent
        for topic in OUTPUTS:
            msgs = mc.outputs(cam, topic)
            assert msgs
            for m in msgs:
                # none crosses over: the stamp and frame_id are this camera's own
                assert stamp_key(m.header) in sent, (cam, topic, stamp_key(m.header))
                assert m.header.frame_id == f"{cam}_optical"
                if isinstance(m, Image):
                    assert (m.height, m.width) == (h, w), (cam, topic)
        # batched or not, every output has the labels of the one-frame-at-a-time reference
        expect = reference.predict(_photo(cam))
        ref_sem = build_products(expect, _photo(cam), expect.vocabulary, overlay_alpha=0.5,
                                 random_weights=True).semantic
        for m in mc.outputs(cam, "semantic"):
            np.testing.assert_array_equal(image_to_array(m), ref_sem, err_msg=cam)
    values, _ = mc.node_diag()
    assert int(values["cameras"]) == 2


# --- vocabulary -----------------------------------------------------------------------------------
def _check_consistent(mc, versions):
    """Every output of every camera belongs to exactly one known vocabulary version (its
    segments name that version's classes, its label ids are inside it), and per camera the
    version never goes back."""
    for cam in SIZES:
        sems = {stamp_key(m.header): m for m in mc.outputs(cam, "semantic")}
        seen = []
        for seg in mc.outputs(cam, "segments"):
            v = seg.vocabulary_version
            assert v in versions, f"camera {cam}: unknown vocabulary version {v}"
            names = versions[v]
            seen.append(v)
            for s in seg.segments:
                assert 0 <= s.class_id < len(names) and s.class_name == names[s.class_id], \
                    (cam, v, s.class_id, s.class_name, names)
            sem = sems.get(stamp_key(seg.header))
            if sem is not None:
                ids = set(np.unique(image_to_array(sem)).tolist()) - {UNLABELED}
                assert ids <= set(range(len(names))), (cam, v, ids, names)
        assert seen == sorted(seen), f"camera {cam}: vocabulary version went back: {seen}"


def test_vocabulary_burst_from_several_clients_while_both_cameras_stream(mc):
    """Several DDS participants call set_vocabulary (and enable) at the same moment while
    both cameras stream: every call is answered, frames keep flowing meanwhile, the
    vocabulary topic ends on the last applied change, every output matches one version."""
    before = _vocab(mc)
    versions = {before.version: [c.name for c in before.classes]}
    clients = [Client(NS) for _ in range(3)]
    try:
        # more requests than the default service queue (keep last 10) holds
        vocab_clients = [cl.node.create_client(SetVocabulary, "set_vocabulary")
                         for cl in clients for _ in range(PER_PARTICIPANT)]
        enable_clients = [cl.node.create_client(SetBool, "enable") for cl in clients]
        for cl in vocab_clients + enable_clients:
            assert cl.wait_for_service(timeout_sec=30.0), cl.srv_name
        requests = []
        for i in range(len(vocab_clients)):
            # fresh names (never in the text cache): each one is a real text encoding
            classes = [f"burst{i}_class{k}" for k in range(6 + i % 3)]
            requests.append(SetVocabulary.Request(classes=classes))
        requests[-1] = SetVocabulary.Request(classes=["cat", "Cat"])    # refused, with reason
        _clear(mc)
        for s in mc.streams.values():
            s.start()
        mc.wait_outputs("front", 2)
        mc.wait_outputs("left", 2)
        go = threading.Barrier(len(vocab_clients) + len(enable_clients))
        results = {}

        def call(key, owner, cl, req):
            go.wait()
            fut = cl.call_async(req)
            end = time.monotonic() + 120
            while not fut.done() and time.monotonic() < end:
                time.sleep(0.01)
            results[key] = fut.result() if fut.done() else None

        threads = [threading.Thread(target=call, args=(("v", i), clients[i // PER_PARTICIPANT],
                                                       cl, req))
                   for i, (cl, req) in enumerate(zip(vocab_clients, requests))]
        threads += [threading.Thread(target=call, args=(("e", i), clients[i], cl,
                                                         SetBool.Request(data=True)))
                    for i, cl in enumerate(enable_clients)]
        counts_before = {cam: len(mc.outputs(cam)) for cam in SIZES}
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=150)
        counts_during = {cam: len(mc.outputs(cam)) - counts_before[cam] for cam in SIZES}
        # outputs with the newest version for both cameras, then stop
        unanswered = [k for k, r in results.items() if r is None]
        assert not unanswered and len(results) == len(threads), \
            f"no answer for {unanswered}\n{mc.node.log()[-3000:]}"
        ok = {k: r for k, r in results.items() if k[0] == "v" and r.success}
        refused = [r for k, r in results.items() if k[0] == "v" and not r.success]
        assert len(ok) == len(vocab_clients) - 1
        assert len(refused) == 1 and "duplicates" in refused[0].message
        for k, r in results.items():
            if k[0] == "e":
                assert r.success and "enabled" in r.message
        for r in ok.values():
            assert " s (text encoding " in r.message, r.message     # says how long it took
            versions[r.version] = [c.name for c in r.classes]
        got = sorted(r.version for r in ok.values())
        assert got == list(range(before.version + 1, before.version + 1 + len(ok))), got
        last = max(ok.values(), key=lambda r: r.version)
        for cam in SIZES:
            mc.client.wait_for(lambda cam=cam: any(
                s.vocabulary_version == last.version for s in mc.outputs(cam, "segments")),
                60, mc.node, f"camera {cam} outputs with v{last.version}")
    finally:
        mc.stop_streams()
        for cl in clients:
            cl.close()
    latched = _vocab(mc)
    assert latched.version == last.version
    assert [c.name for c in latched.classes] == [c.name for c in last.classes]
    _check_consistent(mc, versions)
    # encoding ran beside the frames, not in their way: both cameras had outputs meanwhile
    assert all(n >= 2 for n in counts_during.values()), counts_during


# --- hostile input on one camera ------------------------------------------------------------------
def test_hostile_frames_on_one_camera_leave_the_other_alone(mc):
    _clear(mc)
    front = mc.streams["front"]
    left = mc.streams["left"]
    h, w = SIZES["front"]
    bad = [Image(height=h, width=w, encoding="yuv422", step=w * 2, data=bytes(h * w * 2)),
           Image(height=h, width=w, encoding="rgb8", step=w, data=bytes(h * w)),
           Image(height=100000, width=100000, encoding="mono8", step=100000, data=b"abc"),
           Image(height=0, width=0, encoding="rgb8", step=0, data=b"")]
    mc.client.wait_for(lambda: mc.camera_diag("front") and mc.camera_diag("left"), 20, mc.node,
                       "camera diagnostics")
    left_before = mc.camera_diag("left")
    left_bad_before = int(left_before[0]["bad_inputs"])
    front_bad_before = int(mc.camera_diag("front")[0]["bad_inputs"])

    def hostile(n):
        msg = bad[n % len(bad)]
        msg.header = front.message().header
        front.pub.publish(msg)
    left.start()
    stop = threading.Event()

    def flood():
        n = 0
        while not stop.is_set():
            hostile(n)
            n += 1
            time.sleep(0.02)
    t = threading.Thread(target=flood, daemon=True)
    t.start()
    try:
        mc.wait_outputs("left", 15, topics=tuple(OUTPUTS))
    finally:
        stop.set()
        t.join(5)
        left.stop()
    mc.client.clear("/diagnostics")
    mc.client.wait_for(lambda: mc.camera_diag("front") and mc.camera_diag("left"), 20, mc.node,
                       "camera diagnostics")
    fv, fst = mc.camera_diag("front")
    lv, lst = mc.camera_diag("left")
    assert int(fv["bad_inputs"]) - front_bad_before >= 4 and fst.level != b"\x00"
    assert int(lv["bad_inputs"]) == left_bad_before and int(lv["errors"]) == 0
    assert "dropped a frame on /mc/front/image" in mc.node.log()
    assert "/mc/left/image" not in fv["last_problem"] and lv["last_problem"] == ""
    for topic in OUTPUTS:
        for m in mc.outputs("left", topic):
            assert stamp_key(m.header) in left.sent and m.header.frame_id == "left_optical"
    assert mc.node.alive()


# --- a camera that stops ------------------------------------------------------------------------
def test_stopped_camera_is_reported_stalled_once_and_cleared_when_it_returns(mc):
    front, left = mc.streams["front"], mc.streams["left"]
    front.start()
    left.start()
    mc.client.clear("left/semantic")
    mc.wait_outputs("left", 1)
    log_before = mc.node.log().count("camera left: input stalled")
    left.stop()                      # left stops; front keeps running
    mc.client.clear("/diagnostics")  # from here on, only statuses after the stop
    try:
        def left_stalled():
            d = mc.camera_diag("left")
            return d is not None and d[0]["stalled"] == "True"
        mc.client.wait_for(left_stalled, 30, mc.node, "camera left reported stalled")
        lv, lst = mc.camera_diag("left")
        assert lst.level == b"\x01" and "input stalled" in lst.message
        nv, nst = mc.node_diag()
        assert nv["stalled_cameras"] == "left" and "input stalled" in nst.message
        assert mc.camera_diag("front")[0]["stalled"] == "False", "front kept streaming"
        # still stalled a few timeouts later, and said once in the log
        n_diag = len(mc.client.msgs("/diagnostics"))
        mc.client.wait_for(lambda: len(mc.client.msgs("/diagnostics")) >= n_diag + 6, 30,
                           mc.node, "more diagnostics")
        assert left_stalled()
        assert mc.node.log().count("camera left: input stalled") == log_before + 1
        left.start()
        mc.client.clear("/diagnostics")
        mc.client.wait_for(lambda: mc.camera_diag("left") and not left_stalled(), 30, mc.node,
                           "the stall to clear")
        mc.client.wait_for(lambda: "camera left: frames on /mc/left/image again" in
                           mc.node.log(), 10, mc.node, "the log line saying frames are back")
    finally:
        mc.stop_streams()


def test_bad_camera_names_stop_the_node_with_the_rule(tmp_path):
    import subprocess
    import sys

    from node_harness import ROOT, node_env

    for cameras, needle in (("[front, front]", "listed twice"),
                            ("[front, proxyclip]", "clashes with the config group")):
        done = subprocess.run([sys.executable, "-m", "ovseg_ros.node", "--ros-args", "-p",
                               f"cameras:={cameras}", "-p", "autostart:=false"],
                              cwd=str(ROOT), env=node_env(), capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 1, done.stderr[-2000:]
        assert needle in done.stderr and "Traceback" not in done.stderr, done.stderr[-2000:]
