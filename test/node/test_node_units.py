"""The node's building blocks without DDS: parameter descriptors from the schema,
output message builders, diagnostics throttling. (Frame hand-over, camera names,
stall watch and rate figures are ROS-free: test/core/test_runtime.py.)"""
import numpy as np
import pytest

pytest.importorskip("rclpy")
from rcl_interfaces.msg import ParameterType  # noqa: E402
from sensor_msgs.msg import CameraInfo  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from ovseg_ros.config import SCHEMA, SCHEMA_LIST  # noqa: E402
from ovseg_ros.core.types import UNLABELED, Prediction, Segment  # noqa: E402
from ovseg_ros.runtime.problems import ProblemLog  # noqa: E402
from ovseg_ros.ros.params import descriptor  # noqa: E402


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
