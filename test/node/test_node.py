"""Acceptance tests of ovseg_node: a real node process with the tiny random-weight
ProxyCLIP engine, driven over DDS from this process (random ROS_DOMAIN_ID,
Fast DDS default transports, bounded waits)."""
from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("ovseg_ros.msg")

import cv2  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.msg import ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile,  # noqa: E402
                       ReliabilityPolicy)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402
from std_srvs.srv import SetBool  # noqa: E402

from node_harness import (TINY_PARAMS, Client, NodeUnderTest, diag_values,  # noqa: E402
                          stamp_key)
from ovseg_ros.core.types import UNLABELED  # noqa: E402
from ovseg_ros.msg import Segments, Vocabulary  # noqa: E402
from ovseg_ros.ros.image_conv import (image_to_array, rgb_to_compressed,  # noqa: E402
                                      rgb_to_image)
from ovseg_ros.srv import SetVocabulary  # noqa: E402

NS = "/t"
H, W = 90, 130          # camera size != the engine's working size (short side 112)
OUTPUTS = {"semantic": Image, "panoptic": Image, "colored": Image, "confidence": Image,
           "segments": Segments, "camera_info_out": CameraInfo}
_stamps = itertools.count(1)


def _photo(h=H, w=W):
    import skimage.data

    return cv2.resize(skimage.data.astronaut(), (w, h), interpolation=cv2.INTER_AREA)


class System:
    """The node process plus this process's publishers and recorders."""

    def __init__(self, tmp):
        self.node = NodeUnderTest(tmp, TINY_PARAMS, namespace=NS)
        try:
            self.client = c = Client(NS)
            pub_qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                                 reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.VOLATILE)
            self.pub_image = c.node.create_publisher(Image, "image", pub_qos)
            self.pub_comp = c.node.create_publisher(CompressedImage, "image/compressed", pub_qos)
            self.pub_info = c.node.create_publisher(CameraInfo, "camera_info", pub_qos)
            for topic, typ in OUTPUTS.items():
                c.record(typ, topic)
            c.record(DiagnosticArray, "/diagnostics", qos=10)
            self.vocab_srv = c.node.create_client(SetVocabulary, "set_vocabulary")
            self.enable_srv = c.node.create_client(SetBool, "enable")
            self.param_srv = c.node.create_client(SetParameters, "ovseg_node/set_parameters")
            c.wait_for(lambda: self.pub_image.get_subscription_count() > 0
                       and all(c.node.count_publishers(f"{NS}/{t}") > 0 for t in OUTPUTS),
                       timeout=120, node=self.node, what="the node to configure and subscribe")
        except BaseException:
            self.node.stop()       # never leave a node process behind a failed start
            raise

    def header(self, frame_id):
        from std_msgs.msg import Header

        h = Header(frame_id=frame_id)
        h.stamp.sec, h.stamp.nanosec = 1000 + next(_stamps), 123
        return h

    def send_until(self, msg, kind="image", topics=("semantic",), timeout=60.0):
        """Publish ``msg`` (again every 0.5 s: the input is best effort) until every
        topic in ``topics`` has an output with its stamp; returns {topic: output}."""
        pub = self.pub_comp if kind == "compressed" else self.pub_image
        key = stamp_key(msg.header)
        found = {}
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            pub.publish(msg)
            t_next = time.monotonic() + 0.5
            while time.monotonic() < t_next:
                for t in topics:
                    if t not in found:
                        for m in self.client.msgs(t):
                            if stamp_key(m.header) == key:
                                found[t] = m
                                break
                if len(found) == len(topics):
                    return found
                assert self.node.alive(), self.node.log()[-3000:]
                time.sleep(0.02)
        raise AssertionError(f"no {set(topics) - set(found)} output for stamp {key} within "
                             f"{timeout} s\n{self.node.log()[-3000:]}")

    def good_frame(self, frame_id="cam_good"):
        return rgb_to_image(_photo(), "rgb8", self.header(frame_id))

    def close(self):
        self.client.close()
        return self.node.stop()


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    s = System(tmp_path_factory.mktemp("node"))
    yield s
    code = s.close()
    assert code == 0, f"node exit code {code}:\n{s.node.log()[-3000:]}"


def _camera_info(header, w=W, h=H):
    info = CameraInfo(header=header, width=w, height=h, distortion_model="plumb_bob")
    info.k = [100.0, 0.0, w / 2, 0.0, 100.0, h / 2, 0.0, 0.0, 1.0]
    return info


def _current_vocab(system):
    return system.client.latched(Vocabulary, "vocabulary", system.node)


# --- outputs ------------------------------------------------------------------------------------
ENCODINGS = ["rgb8", "bgr8", "rgba8", "bgra8", "compressed_png", "mono8"]


def test_all_encodings_give_all_outputs_with_input_header_and_size(system):
    rgb = _photo()
    semantic_by_enc = {}
    n_classes = _current_vocab(system).classes.__len__()
    for enc in ENCODINGS:
        header = system.header(f"cam_{enc}")
        system.pub_info.publish(_camera_info(header))
        if enc == "compressed_png":
            msg, kind = rgb_to_compressed(rgb, "png", header), "compressed"
        else:
            msg, kind = rgb_to_image(rgb, enc, header), "image"
        time.sleep(0.1)   # camera_info first, as drivers do
        out = system.send_until(msg, kind, topics=tuple(OUTPUTS))
        for topic, m in out.items():
            assert m.header.frame_id == header.frame_id, topic
            assert (m.header.stamp.sec, m.header.stamp.nanosec) == \
                (header.stamp.sec, header.stamp.nanosec), topic
            if isinstance(m, (Image, CameraInfo)):
                assert (m.width, m.height) == (W, H), f"{topic} for {enc}"
        assert out["semantic"].encoding == "16UC1"
        assert out["panoptic"].encoding == "32SC1"
        assert out["colored"].encoding == "rgb8"
        assert out["confidence"].encoding == "32FC1"
        assert list(out["camera_info_out"].k) == list(_camera_info(header).k)
        sem = image_to_array(out["semantic"])
        ids = set(np.unique(sem).tolist())
        assert ids <= set(range(n_classes)) | {UNLABELED}, ids
        assert ids - {UNLABELED}, "every pixel unlabelled"
        pan = image_to_array(out["panoptic"])
        segs = out["segments"].segments
        assert {s.id for s in segs} == set(np.unique(pan).tolist()) - {0}
        for s in segs:
            assert 0 <= s.class_id < n_classes and 0.0 <= s.score <= 1.0
            assert s.area == int((pan == s.id).sum())
            # a segment's pixels carry its class in the semantic image
            assert (sem[pan == s.id] == s.class_id).all()
        conf = image_to_array(out["confidence"])
        assert np.isfinite(conf).all() and (conf >= 0).all() and (conf <= 1.0 + 1e-5).all()
        colored = image_to_array(out["colored"])
        assert colored.shape == (H, W, 3)
        seen = rgb if enc != "mono8" else np.repeat(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
                                                    [..., None], 3, axis=2)
        assert (colored[20:] != seen[20:]).mean() > 0.5      # class colours blended in
        semantic_by_enc[enc] = sem
    # the same photo in every colour encoding is the same RGB frame: identical labels
    for enc in ("bgr8", "rgba8", "bgra8", "compressed_png"):
        np.testing.assert_array_equal(semantic_by_enc[enc], semantic_by_enc["rgb8"], err_msg=enc)


def test_overlay_says_random_weights(system):
    out = system.send_until(system.good_frame("cam_banner"), topics=("colored",))
    colored = image_to_array(out["colored"])
    rgb = _photo()
    # the banner is drawn over the top rows: dark background with red text
    assert (colored[:8] != rgb[:8]).any()
    assert (colored[:8].reshape(-1, 3) == 0).all(axis=1).mean() > 0.3


# --- vocabulary ---------------------------------------------------------------------------------
def test_set_vocabulary_applies_from_next_frame_and_is_latched(system):
    before = _current_vocab(system)
    assert before.random_weights and before.engine == "proxyclip"
    resp = system.client.call(system.vocab_srv,
                              SetVocabulary.Request(classes=["person", "sofa,couch", "floor"]))
    assert resp.success, resp.message
    assert resp.version > before.version
    assert [(c.id, c.name, list(c.synonyms)) for c in resp.classes] == \
        [(0, "person", ["person"]), (1, "sofa", ["sofa", "couch"]), (2, "floor", ["floor"])]
    assert "3 classes" in resp.message
    out = system.send_until(system.good_frame("cam_vocab"), topics=("semantic", "segments"))
    assert out["segments"].vocabulary_version == resp.version
    ids = set(np.unique(image_to_array(out["semantic"])).tolist()) - {UNLABELED}
    assert ids <= {0, 1, 2}
    assert all(s.class_name in ("person", "sofa", "floor") for s in out["segments"].segments)
    late = _current_vocab(system)        # a subscriber joining now gets the new map
    assert late.version == resp.version and [c.name for c in late.classes] == \
        ["person", "sofa", "floor"]
    assert late.classes[2].is_thing is False and late.classes[0].is_thing is True


@pytest.mark.parametrize("classes,is_thing,needle", [
    ([], [], "empty"),
    (["cat", "Cat"], [], "duplicates"),
    (["x" * 41], [], "max_class_name_length=40"),
    ([f"c{i}" for i in range(17)], [], "max_classes=16"),
    (["cat", " , "], [], "class 1 is empty"),
    (["cat", "dog"], [True], "is_thing has 1 entries"),
])
def test_invalid_vocabulary_is_refused_and_changes_nothing(system, classes, is_thing, needle):
    before = _current_vocab(system)
    resp = system.client.call(system.vocab_srv,
                              SetVocabulary.Request(classes=classes, is_thing=is_thing))
    assert not resp.success
    assert needle in resp.message and "nothing changed" in resp.message, resp.message
    assert resp.version == before.version
    assert [c.name for c in resp.classes] == [c.name for c in before.classes]
    assert _current_vocab(system).version == before.version
    out = system.send_until(system.good_frame("cam_after_bad_vocab"), topics=("segments",))
    assert out["segments"].vocabulary_version == before.version


# --- hostile input --------------------------------------------------------------------------------
def _hostile(system):
    hdr = system.header
    good = rgb_to_image(_photo(), "rgb8")
    return [
        ("image", Image(header=hdr("bad"), height=H, width=W, encoding="yuv422", step=W * 2,
                        data=bytes(H * W * 2)), "unsupported image encoding"),
        ("image", Image(header=hdr("bad"), height=0, width=0, encoding="rgb8", step=0,
                        data=b""), "image is empty"),
        ("image", Image(header=hdr("bad"), height=H, width=W, encoding="rgb8", step=W,
                        data=bytes(H * W)), "is smaller than width*bytes_per_pixel"),
        ("image", Image(header=hdr("bad"), height=H, width=W, encoding="rgb8", step=W * 3,
                        data=bytes(good.data)[:-7]), "but step*height"),
        ("image", Image(header=hdr("bad"), height=400, width=400, encoding="mono8", step=400,
                        data=bytes(160000)), "above max_input_pixels"),
        ("image", Image(header=hdr("bad"), height=100000, width=100000, encoding="mono8",
                        step=100000, data=b"abc"), "above max_input_pixels"),
        ("compressed", CompressedImage(header=hdr("bad"), format="jpeg",
                                       data=b"\xff\xd8\xff\xe0" + bytes(500)),
         "could not be decoded"),
        ("compressed", CompressedImage(header=hdr("bad"), format="jpeg", data=b""), "no data"),
        ("compressed", CompressedImage(header=hdr("bad"), format="h264", data=b"\x00\x01"),
         "not supported"),
    ]


def test_hostile_inputs_never_stop_the_node(system):
    for kind, bad, needle in _hostile(system):
        pub = system.pub_comp if kind == "compressed" else system.pub_image
        for _ in range(3):
            pub.publish(bad)
            time.sleep(0.05)
        system.send_until(system.good_frame(), topics=("semantic",))
        assert needle in system.node.log(), f"no log line about: {needle}"
    assert system.node.alive()
    # diagnostics count the bad inputs and name the last one
    c = system.client
    c.clear("/diagnostics")

    def diag_values():
        for arr in reversed(c.msgs("/diagnostics")):
            for st in arr.status:
                if st.name.startswith("ovseg_node"):
                    return {kv.key: kv.value for kv in st.values}, st
        return None
    c.wait_for(lambda: diag_values() is not None, 10, system.node, "diagnostics")
    values, st = diag_values()
    assert int(values["bad_inputs"]) >= 9
    assert values["weights"] == "RANDOM WEIGHTS" and "RANDOM WEIGHTS" in st.message
    assert values["engine"] == "proxyclip" and values["device"] == "cpu"
    assert "text=fp32" in values["stage_precision"]      # which stage ran in which precision
    assert int(values["frames_processed"]) > 0
    # a good frame was processed just now (inside the 5 s window): its latency is measured
    # and contains its inference time
    lat, lat_max, inf = (float(values[k]) for k in ("latency_ms", "latency_max_ms",
                                                     "inference_ms"))
    assert 0 < inf <= lat <= lat_max
    assert st.level != b"\x00"          # WARN at least (random weights, recent problems)


def test_bad_input_logging_is_rate_limited(system):
    n_before = system.node.log().count("unsupported image encoding")
    bad = Image(header=system.header("bad"), height=2, width=2, encoding="yuv422", step=4,
                data=bytes(8))
    for _ in range(30):
        system.pub_image.publish(bad)
        time.sleep(0.02)
    system.send_until(system.good_frame(), topics=("semantic",))
    # 30 bad frames within ~1 s: at most one new line (throttle period 5 s)
    assert system.node.log().count("unsupported image encoding") - n_before <= 1


# --- parameters and enable -----------------------------------------------------------------------
def _set_param(system, name, value):
    v = ParameterValue()
    if isinstance(value, float):
        v.type, v.double_value = ParameterType.PARAMETER_DOUBLE, value
    elif isinstance(value, int):
        v.type, v.integer_value = ParameterType.PARAMETER_INTEGER, value
    resp = system.client.call(system.param_srv,
                              SetParameters.Request(parameters=[ParameterMsg(name=name, value=v)]))
    return resp.results[0]


def test_runtime_parameters_validated(system):
    ok = _set_param(system, "proxyclip.min_thing_area", 10)
    assert ok.successful, ok.reason
    assert _set_param(system, "overlay_alpha", 0.3).successful
    bad = _set_param(system, "prob_thd", 2.0)
    assert not bad.successful and bad.reason
    bad = _set_param(system, "proxyclip.crop_size", 64)
    assert not bad.successful
    assert "read-only" in bad.reason.lower() or "read only" in bad.reason.lower(), bad.reason
    system.send_until(system.good_frame(), topics=("semantic",))
    assert "runtime settings applied" in system.node.log()


def test_enable_service_pauses_and_resumes(system):
    r = system.client.call(system.enable_srv, SetBool.Request(data=False))
    assert r.success and "paused" in r.message
    msg = system.good_frame("cam_paused")
    system.client.clear("semantic")
    for _ in range(6):
        system.pub_image.publish(msg)
        time.sleep(0.25)
    assert not [m for m in system.client.msgs("semantic") if m.header.frame_id == "cam_paused"]
    r = system.client.call(system.enable_srv, SetBool.Request(data=True))
    assert r.success and "enabled" in r.message
    system.send_until(system.good_frame("cam_resumed"), topics=("semantic",))


def test_locate_is_refused_while_embeddings_are_off(system):
    from ovseg_ros.srv import Locate

    system.send_until(system.good_frame("cam_locate_off"), topics=("semantic",))
    r = system.client.call(system.client.node.create_client(Locate, "locate"),
                           Locate.Request(query="person", top_k=3))
    assert not r.success and not r.matches
    assert "segment embeddings are off" in r.message and "embeddings.enabled" in r.message
    assert system.node.alive()


def test_outputs_without_subscribers_are_not_built(system):
    """Lazy outputs (runs last: it changes this module's subscriptions): with nobody on
    colored and confidence the node builds and publishes only the rest, and a subscriber
    that comes back gets the overlay from the next frame."""
    c = system.client
    for sub in [s for s in c.node.subscriptions
                if s.topic_name in (f"{NS}/colored", f"{NS}/confidence")]:
        c.node.destroy_subscription(sub)
    c.wait_for(lambda: c.node.count_subscribers(f"{NS}/colored") == 0
               and c.node.count_subscribers(f"{NS}/confidence") == 0, 30, system.node,
               "the overlay subscriptions to go")
    name = "ovseg_node: camera (unnamed)"

    def published():
        got = diag_values(c, name)
        return got[0].get("outputs_published") if got else None
    system.send_until(system.good_frame("cam_lazy"), topics=("semantic", "segments"))
    c.clear("/diagnostics")
    c.wait_for(lambda: published() not in (None, ""), 15, system.node, "camera diagnostics")
    assert published() == "panoptic,segments,semantic"
    c.record(Image, "colored", key="colored_again")
    c.wait_for(lambda: c.node.count_subscribers(f"{NS}/colored") == 1, 30, system.node,
               "the overlay subscription")
    out = system.send_until(system.good_frame("cam_lazy2"), topics=("colored_again",))
    assert out["colored_again"].encoding == "rgb8"
    c.clear("/diagnostics")
    c.wait_for(lambda: published() == "colored,panoptic,segments,semantic", 15, system.node,
               "the overlay back in the camera diagnostics")
