"""ovseg_node with `engine: fcclip` (and `maftplus`): a real node process running the
tiny random-weight FC-CLIP of test/engines/test_fcclip.py publishes the engine's own panoptic
segments. The same config is loaded in this process (random init is seeded) and its
Prediction is what the node's `panoptic` / `segments` must carry, at camera size."""
from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("ovseg_ros.msg")

import cv2  # noqa: E402
import torch  # noqa: E402
from rcl_interfaces.msg import Parameter as ParameterMsg  # noqa: E402
from rcl_interfaces.msg import ParameterType, ParameterValue  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile,  # noqa: E402
                       ReliabilityPolicy)
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from node_harness import Client, NodeUnderTest, stamp_key  # noqa: E402
from ovseg_ros.msg import Segments, Vocabulary  # noqa: E402
from ovseg_ros.ros.image_conv import image_to_array, rgb_to_image  # noqa: E402
from ovseg_ros.srv import SetVocabulary  # noqa: E402

torch.set_num_threads(1)

H, W = 60, 80      # camera size; FC-CLIP works at short side 64 (64 x 85) and resizes back
VOCAB = ["person", "sky", "floor", "sofa,couch"]
OUTPUTS = {"semantic": Image, "panoptic": Image, "segments": Segments}
_stamps = itertools.count(1)

# test/engines/test_fcclip.py's tiny config; overlap_threshold 0 keeps the random masks as segments
FCCLIP_PARAMS = {
    "engine": "fcclip", "random_init": True, "num_threads": 1, "precision": "fp32",
    "fcclip.clip_model": "ovseg-tiny-ConvNeXt", "fcclip.short_side": 64, "fcclip.max_size": 128,
    "fcclip.overlap_threshold": 0.0, "vocabulary": VOCAB, "diagnostics_period": 0.5,
}
MAFT_PARAMS = {
    "engine": "maftplus", "random_init": True, "num_threads": 1, "precision": "fp32",
    "maftplus.clip_model": "ovseg-tiny-ConvNeXt", "maftplus.short_side": 64,
    "maftplus.max_size": 96, "maftplus.object_mask_threshold": 0.0,
    "maftplus.overlap_threshold": 0.0, "vocabulary": VOCAB, "diagnostics_period": 0.5,
}


def _photo():
    import skimage.data

    return cv2.resize(skimage.data.astronaut(), (W, H), interpolation=cv2.INTER_AREA)


class System:
    """One node process plus this process's image publisher and output recorders."""

    def __init__(self, tmp, params, ns):
        self.node = NodeUnderTest(tmp, params, namespace=ns)
        try:
            self.client = c = Client(ns)
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)
            self.pub = c.node.create_publisher(Image, "image", qos)
            for topic, typ in OUTPUTS.items():
                c.record(typ, topic)
            self.vocab_srv = c.node.create_client(SetVocabulary, "set_vocabulary")
            self.param_srv = c.node.create_client(SetParameters, "ovseg_node/set_parameters")
            c.wait_for(lambda: self.pub.get_subscription_count() > 0
                       and all(c.node.count_publishers(f"{ns}/{t}") > 0 for t in OUTPUTS),
                       timeout=120, node=self.node, what="the node to configure and subscribe")
        except BaseException:
            try:   # an rclpy context left open aborts the interpreter at exit
                if getattr(self, "client", None) is not None:
                    self.client.close()
            finally:
                self.node.stop()   # never leave a node process behind a failed start
            raise

    def frame(self, rgb):
        h = Header(frame_id="fc_cam")
        h.stamp.sec, h.stamp.nanosec = 5000 + next(_stamps), 7
        return rgb_to_image(rgb, "rgb8", h)

    def send(self, msg, timeout=60.0):
        """Publish until semantic, panoptic and segments with msg's stamp are back."""
        key = stamp_key(msg.header)
        found = {}
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.pub.publish(msg)
            t_next = time.monotonic() + 0.5
            while time.monotonic() < t_next:
                for t in OUTPUTS:
                    found.setdefault(t, next((m for m in self.client.msgs(t)
                                              if stamp_key(m.header) == key), None))
                    if found[t] is None:
                        del found[t]
                if len(found) == len(OUTPUTS):
                    return found
                assert self.node.alive(), self.node.log()[-3000:]
                time.sleep(0.02)
        raise AssertionError(f"no {set(OUTPUTS) - set(found)} for stamp {key} within "
                             f"{timeout} s\n{self.node.log()[-3000:]}")

    def vocabulary(self) -> Vocabulary:
        return self.client.latched(Vocabulary, "vocabulary", self.node)

    def close(self) -> int:
        # node first: Fast DDS 3.2.2 can deadlock deleting a participant (here: the client's)
        # while a TCP channel to a live peer is idle; a stopped peer's channels are closed
        try:
            code = self.node.stop()
        finally:
            self.client.close()
        return code


def _start(tmp_path_factory, params, ns):
    s = System(tmp_path_factory.mktemp(ns.strip("/")), params, ns)
    yield s
    code = s.close()
    assert code == 0, f"node exit code {code}:\n{s.node.log()[-3000:]}"


@pytest.fixture(scope="module")
def fc_node(tmp_path_factory):
    yield from _start(tmp_path_factory, FCCLIP_PARAMS, "/fc")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same engine in this process: seeded random init, so the same model."""
    from ovseg_ros import load_segmenter

    cfg = {k: v for k, v in FCCLIP_PARAMS.items() if k != "diagnostics_period"}
    return load_segmenter(dict(cfg, text_cache_dir=str(tmp_path_factory.mktemp("ref_text"))))


def _bbox(mask):
    ys, xs = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)


def check_segments(out, vocab: Vocabulary):
    """The published segments describe the published panoptic image exactly."""
    pan_msg = out["panoptic"]
    assert (pan_msg.width, pan_msg.height, pan_msg.encoding) == (W, H, "32SC1")
    pan = image_to_array(pan_msg)
    segs = out["segments"].segments
    assert out["segments"].vocabulary_version == vocab.version
    ids = [s.id for s in segs]
    assert len(ids) == len(set(ids)) and 0 not in ids
    assert set(ids) == set(np.unique(pan).tolist()) - {0}
    classes = {c.id: c for c in vocab.classes}
    for s in segs:
        assert s.class_id in classes, f"class id {s.class_id} outside the vocabulary"
        assert s.class_name == classes[s.class_id].name
        assert s.is_thing == classes[s.class_id].is_thing
        assert 0.0 <= s.score <= 1.0
        mask = pan == s.id
        assert s.area == int(mask.sum())
        assert (s.bbox.x_offset, s.bbox.y_offset, s.bbox.width, s.bbox.height) == _bbox(mask)
    stuff = [s.class_id for s in segs if not s.is_thing]
    assert len(stuff) == len(set(stuff)), "a stuff class must be one segment"
    return pan, segs


def test_vocabulary_reports_fcclip(fc_node):
    v = fc_node.vocabulary()
    assert v.engine == "fcclip" and v.random_weights
    assert [c.name for c in v.classes] == ["person", "sky", "floor", "sofa"]
    assert list(v.classes[3].synonyms) == ["sofa", "couch"]
    assert [c.is_thing for c in v.classes] == [True, False, False, True]


def test_node_publishes_the_engines_panoptic_segments(fc_node, reference):
    rgb = _photo()
    out = fc_node.send(fc_node.frame(rgb))
    pan, segs = check_segments(out, fc_node.vocabulary())
    assert segs, "the tiny FC-CLIP with overlap_threshold 0 gives segments"
    # the very Prediction of the engine, not a node-side heuristic
    pred = reference.predict(rgb)
    assert pred.panoptic.shape == (H, W)
    np.testing.assert_array_equal(pan, pred.panoptic)
    assert [(s.id, s.class_id, s.is_thing, s.area) for s in segs] == \
        [(s.id, s.class_id, s.is_thing, s.area) for s in sorted(pred.segments, key=lambda s: s.id)]
    np.testing.assert_allclose([s.score for s in segs],
                               [s.score for s in sorted(pred.segments, key=lambda s: s.id)],
                               atol=1e-5)
    # panoptic ids sit on pixels the semantic image labels with a vocabulary class
    sem = image_to_array(out["semantic"])
    assert sem.shape == (H, W) and set(np.unique(sem).tolist()) <= set(range(len(VOCAB)))


def test_thing_stuff_flags_follow_the_vocabulary(fc_node):
    """Marking every class stuff merges all queries of a class into one segment."""
    c = fc_node.client
    resp = c.call(fc_node.vocab_srv, SetVocabulary.Request(
        classes=VOCAB, is_thing=[False] * len(VOCAB)))
    assert resp.success, resp.message
    try:
        out = fc_node.send(fc_node.frame(_photo()))
        assert out["segments"].vocabulary_version == resp.version
        pan, segs = check_segments(out, fc_node.vocabulary())
        assert segs and not any(s.is_thing for s in segs)
        assert len(segs) <= len(VOCAB)
    finally:
        back = c.call(fc_node.vocab_srv, SetVocabulary.Request(classes=VOCAB))
        assert back.success, back.message


def test_runtime_overlap_threshold_reaches_the_engine(fc_node):
    def set_overlap(value):
        v = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
        r = fc_node.client.call(fc_node.param_srv, SetParameters.Request(
            parameters=[ParameterMsg(name="fcclip.overlap_threshold", value=v)]))
        assert r.results[0].successful, r.results[0].reason

    rgb = _photo()
    n_loose = len(fc_node.send(fc_node.frame(rgb))["segments"].segments)
    set_overlap(1.0)     # a segment must keep its whole mask: random masks overlap, so fewer
    try:
        out = fc_node.send(fc_node.frame(rgb))
        check_segments(out, fc_node.vocabulary())
        assert len(out["segments"].segments) < n_loose
    finally:
        set_overlap(0.0)


@pytest.fixture(scope="module")
def maft_node(tmp_path_factory):
    yield from _start(tmp_path_factory, MAFT_PARAMS, "/maft")


def test_maftplus_engine_by_parameter(maft_node):
    v = maft_node.vocabulary()
    assert v.engine == "maftplus" and [c.name for c in v.classes] == \
        ["person", "sky", "floor", "sofa"]
    out = maft_node.send(maft_node.frame(_photo()))
    check_segments(out, v)
    sem = out["semantic"]
    assert (sem.width, sem.height, sem.encoding) == (W, H, "16UC1")


# --- config/fcclip.yaml ----------------------------------------------------------------------
# (test_launch.py::test_params_file_is_valid_for_api_and_node loads it both ways as well)
def test_fcclip_params_file_selects_the_reference_setup():
    from node_harness import ROOT
    from ovseg_ros.config import make_config

    cfg = make_config(ROOT / "config" / "fcclip.yaml")
    assert cfg["engine"] == "fcclip" and not cfg["random_init"]
    assert cfg["fcclip.clip_model"] == "convnext_large_d_320"
    assert cfg["fcclip.clip_pretrained"] == "laion2b_s29b_b131k_ft_soup"
    assert cfg["fcclip.checkpoint"], "the FC-CLIP head checkpoint must be named"
    # FC-CLIP's released inference settings (docs/fcclip.md)
    assert (cfg["fcclip.num_queries"], cfg["fcclip.short_side"], cfg["fcclip.max_size"]) == \
        (250, 800, 1333)
    assert (cfg["fcclip.geometric_alpha"], cfg["fcclip.geometric_beta"]) == (0.4, 0.8)
    assert (cfg["fcclip.object_mask_threshold"], cfg["fcclip.overlap_threshold"]) == (0.0, 0.8)


def test_fcclip_params_file_without_checkpoint_stops_the_node_clearly(tmp_path):
    """Offline, with no checkpoint in weights_dir: configure fails naming the setting,
    and the autostarted node exits 1 (before any CLIP download is tried)."""
    import subprocess
    import sys

    from node_harness import ROOT, node_env

    r = subprocess.run(
        [sys.executable, "-m", "ovseg_ros.node", "--ros-args", "--params-file",
         str(ROOT / "config" / "fcclip.yaml"), "-p", "device:=cpu", "-p",
         "precision:=fp32", "-p",
         f"weights_dir:={tmp_path}", "-p", f"text_cache_dir:={tmp_path}", "-r", "__ns:=/fcbad"],
        cwd=ROOT, env=node_env(), capture_output=True, text=True, timeout=120)
    log = r.stdout + r.stderr
    assert r.returncode == 1, log
    assert "WeightsError" in log and "fcclip.checkpoint" in log, log
    assert str(tmp_path / "fcclip_cocopan.pth") in log, log
