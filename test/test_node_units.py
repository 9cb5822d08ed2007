"""The node's building blocks without DDS: frame hand-over, parameter descriptors
from the schema, output message builders, diagnostics throttling."""
import threading
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
from rcl_interfaces.msg import ParameterType  # noqa: E402
from sensor_msgs.msg import CameraInfo  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from ovseg_ros.config import SCHEMA, SCHEMA_LIST  # noqa: E402
from ovseg_ros.core.types import UNLABELED, Prediction, Segment  # noqa: E402
from ovseg_ros.ros.diagnostics import ProblemLog  # noqa: E402
from ovseg_ros.runtime.frames import FrameQueues  # noqa: E402
from ovseg_ros.ros.params import descriptor  # noqa: E402
from ovseg_ros.runtime.stats import RateStats  # noqa: E402


# --- FrameQueues: hand-over and scheduling across cameras ---------------------------------------
def test_latest_frame_mode_keeps_only_newest_and_counts_drops():
    fq = FrameQueues([""])
    for i in range(5):
        fq.put("", i)
    assert fq.get_batch(timeout=0.1) == [("", 4)]
    assert fq.received == {"": 5} and fq.dropped == {"": 4}
    assert fq.get_batch(timeout=0.05) == []


def test_queue_mode_is_fifo_and_bounded():
    fq = FrameQueues(["a"], capacity=3)
    for i in range(5):
        fq.put("a", i)
    assert fq.waiting("a") == 3 and fq.dropped["a"] == 2
    assert [fq.get_batch(0.1) for _ in range(3)] == [[("a", 2)], [("a", 3)], [("a", 4)]]


def test_get_wakes_on_put_and_close():
    fq = FrameQueues(["a", "b"])
    got = []
    t = threading.Thread(target=lambda: got.append(fq.get_batch(timeout=5.0)))
    t.start()
    time.sleep(0.05)
    fq.put("b", "x")
    t.join(2.0)
    assert got == [[("b", "x")]]
    t = threading.Thread(target=lambda: got.append(fq.get_batch(timeout=5.0)))
    t.start()
    fq.close()
    t.join(2.0)
    assert not t.is_alive() and got[-1] == []


def test_batches_take_one_frame_per_camera_and_drops_are_per_camera():
    fq = FrameQueues(["front", "left", "rear"])
    for i in range(3):
        fq.put("front", ("f", i))
    fq.put("left", ("l", 0))
    batch = fq.get_batch(0.1)
    assert sorted(batch) == [("front", ("f", 2)), ("left", ("l", 0))]
    assert fq.dropped == {"front": 2, "left": 0, "rear": 0}
    assert fq.received == {"front": 3, "left": 1, "rear": 0}
    assert fq.total_dropped == 2 and fq.total_received == 4


def test_round_robin_serves_every_camera_when_the_model_is_slower():
    # queue mode, one camera flooding: the other still gets a frame in every batch
    fq = FrameQueues(["a", "b"], capacity=100)
    for i in range(50):
        fq.put("a", i)
    served = {"a": 0, "b": 0}
    firsts = []
    for k in range(10):
        fq.put("b", k)
        batch = fq.get_batch(0.1)
        firsts.append(batch[0][0])
        for cam, _ in batch:
            served[cam] += 1
    assert served == {"a": 10, "b": 10}
    assert firsts == ["a", "b"] * 5           # the batch order rotates


def test_unknown_camera_and_bad_names_are_errors():
    fq = FrameQueues(["a"])
    with pytest.raises(KeyError):
        fq.put("b", 1)
    with pytest.raises(ValueError):
        FrameQueues(["a", "a"])
    with pytest.raises(ValueError):
        FrameQueues([])


def test_camera_names_are_validated():
    from ovseg_ros.runtime.cameras import CameraConfigError, validate_camera_names

    assert validate_camera_names(["front", "left_2"]) == ["front", "left_2"]
    assert validate_camera_names([""]) == [""]
    for bad, needle in [([], "empty"), (["a", "a"], "twice"), (["front/x"], "letters"),
                        (["2cam"], "letters"), (["proxyclip"], "clashes")]:
        with pytest.raises(CameraConfigError, match=needle):
            validate_camera_names(bad, reserved={"proxyclip"})


def test_stall_watch_says_once_and_clears_when_frames_return():
    from ovseg_ros.runtime.cameras import StallWatch

    w = StallWatch(timeout=1.0)
    assert w.check(100.0) is None                  # never had a frame: not a stall
    assert w.frame(100.0) is None
    assert w.check(100.9) is None and not w.stalled
    assert w.check(101.2) == pytest.approx(1.2) and w.stalled
    assert w.check(105.0) is None                  # said once only
    assert w.frame(106.0) == pytest.approx(6.0) and not w.stalled
    assert w.check(106.5) is None
    w.reset()
    assert w.check(200.0) is None
    assert StallWatch(0.0).check(1e9) is None      # 0 disables


# --- parameters from the schema -------------------------------------------------------------
def test_every_schema_setting_gets_a_descriptor():
    for spec in SCHEMA_LIST:
        d = descriptor(spec)
        assert d.description == spec.description
        assert d.read_only == (not spec.runtime), spec.name


def test_ranges_and_types_follow_the_schema():
    d = descriptor(SCHEMA["prob_thd"])
    assert d.type == ParameterType.PARAMETER_DOUBLE and not d.read_only
    assert d.floating_point_range[0].from_value == 0.0
    assert d.floating_point_range[0].to_value == 1.0
    d = descriptor(SCHEMA["image_depth"])
    assert d.type == ParameterType.PARAMETER_INTEGER and d.read_only
    assert (d.integer_range[0].from_value, d.integer_range[0].to_value) == (1, 100)
    d = descriptor(SCHEMA["engine"])
    assert "proxyclip" in d.additional_constraints and "fcclip" in d.additional_constraints
    assert descriptor(SCHEMA["vocabulary"]).type == ParameterType.PARAMETER_STRING_ARRAY


def test_node_declares_schema_parameters_and_rejects_bad_file_values(tmp_path):
    import rclpy
    from rclpy.node import Node

    from ovseg_ros.ros.params import (ParameterSetupError, declare_schema_parameters,
                                      read_schema_parameters)

    ctx = rclpy.Context()
    rclpy.init(context=ctx, args=["--ros-args", "-p", "proxyclip.crop_size:=224",
                                  "-p", "vocabulary:=[a, b]"])
    try:
        node = Node("params_probe", context=ctx)
        declare_schema_parameters(node)
        values = read_schema_parameters(node)
        assert values["proxyclip.crop_size"] == 224
        assert values["vocabulary"] == ["a", "b"]
        assert values["vocabulary_is_thing"] == []
        assert set(values) == set(SCHEMA)
        node.destroy_node()
        bad = Node("params_probe2", context=ctx,
                   parameter_overrides=[rclpy.parameter.Parameter("prob_thd", value=3)])
        with pytest.raises(ParameterSetupError, match="prob_thd"):
            declare_schema_parameters(bad)
        bad.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


# --- message builders ----------------------------------------------------------------------------
def _prediction(h=6, w=8, classes=("person", "sofa, couch", "floor")):
    sem = np.zeros((h, w), np.int32)
    sem[:, 4:] = 1
    sem[0, 0] = -1                      # outside the vocabulary -> UNLABELED
    pan = np.zeros((h, w), np.int32)
    pan[:, 4:] = 3
    pan[2:4, 0:2] = 5
    scores = np.full((len(classes), h, w), 0.2, np.float32)
    segs = [Segment(id=3, class_id=1, is_thing=False, score=0.7, area=int((pan == 3).sum())),
            Segment(id=5, class_id=0, is_thing=True, score=0.9, area=4, bbox=(0, 2, 2, 2))]
    return Prediction(semantic=sem, scores=scores, panoptic=pan, segments=segs,
                      vocabulary=tuple(classes), vocabulary_version=4, random_weights=True,
                      engine="proxyclip")


def test_outputs_at_camera_resolution_with_header():
    """The node's messages (products -> messages) carry the header and the camera size."""
    pytest.importorskip("ovseg_ros.msg")
    from ovseg_ros.core.products import build_products
    from ovseg_ros.ros import messages as build
    from ovseg_ros.ros.image_conv import image_to_array

    pred = _prediction()
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    rgb = np.full((12, 16, 3), 90, np.uint8)          # engine at half the camera size
    msgs = build.product_messages(build_products(pred, rgb, pred.vocabulary, overlay_alpha=0.5,
                                                 random_weights=True), header)
    sem, pan = msgs["semantic"], msgs["panoptic"]
    assert (sem.width, sem.height, sem.encoding) == (16, 12, "16UC1")
    assert (pan.width, pan.height, pan.encoding) == (16, 12, "32SC1")
    assert (msgs["colored"].width, msgs["colored"].height) == (16, 12)
    assert sem.header.frame_id == "cam" and sem.header.stamp.nanosec == 345
    s = image_to_array(sem)
    assert s[0, 0] == UNLABELED and s[0, 15] == 1 and s[5, 3] == 0
    seg = msgs["segments"]
    assert seg.header.stamp.sec == 12 and seg.vocabulary_version == 4
    assert [x.id for x in seg.segments] == [3, 5]
    p = image_to_array(pan)
    for x in seg.segments:        # area and bbox measured on the published (resized) map
        assert x.area == int((p == x.id).sum())
    s3, s5 = seg.segments
    assert s3.class_name == "sofa" and s3.class_id == 1 and not s3.is_thing
    assert (s5.bbox.x_offset, s5.bbox.y_offset, s5.bbox.width, s5.bbox.height) == (0, 4, 4, 4)
    conf = image_to_array(msgs["confidence"])
    assert conf.shape == (12, 16) and np.allclose(conf, 0.2)
    info = build.camera_info_for(CameraInfo(width=16, height=12, k=[1.0] * 9), header)
    assert info.header.stamp.nanosec == 345 and list(info.k) == [1.0] * 9


def test_vocabulary_message_lists_synonyms():
    pytest.importorskip("ovseg_ros.msg")
    from ovseg_ros.core.types import VocabularyState
    from ovseg_ros.ros import messages as build

    v = VocabularyState(names=("person", "sofa, couch"), synonyms=(("person",), ("sofa", "couch")),
                        is_thing=(True, True), embeddings=None, synonym_class=None, version=7)
    msg = build.vocabulary_msg(v, "proxyclip", True, Header().stamp)
    assert msg.version == 7 and msg.random_weights and msg.engine == "proxyclip"
    assert [(c.id, c.name, list(c.synonyms)) for c in msg.classes] == \
        [(0, "person", ["person"]), (1, "sofa", ["sofa", "couch"])]


# --- diagnostics helpers ---------------------------------------------------------------------
def test_problem_log_throttles_per_kind():
    lines = []
    log = ProblemLog(lines.append, period=60.0)
    assert log.report("encoding", "bad encoding")
    assert not log.report("encoding", "bad encoding again")
    assert log.report("size", "too big")
    assert len(lines) == 2 and log.total() == 3 and log.counts["encoding"] == 2
    assert log.recent(10.0) == ("size", "too big")
    log._last_logged["encoding"] -= 120          # the period has passed
    log.report("encoding", "third")
    assert "1 similar problems suppressed" in lines[-1]


def test_rate_stats():
    st = RateStats(window=10.0)
    for i in range(11):
        st.record(latency=0.2, infer_time=0.1, now=100.0 + i * 0.5)
    snap = st.snapshot(now=105.0)
    assert abs(snap["fps"] - 2.0) < 1e-6 and abs(snap["latency_ms"] - 200) < 1e-6
    assert st.processed == 11
    for t in (104.0, 104.5, 104.9):
        st.record_drop(now=t)
    assert st.snapshot(now=105.0)["drop_rate"] == pytest.approx(3 / 10.0)
    assert st.snapshot(now=120.0)["drop_rate"] == 0.0
