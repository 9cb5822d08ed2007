"""ovseg_node with `engine: ovseg`: a real node process running the tiny random-weight
OVSeg of test/engines/test_ovseg.py publishes the engine's labels and its (heuristic) panoptic
segments over DDS. The same config is loaded in this process (random init is seeded)
and its Prediction is what the node's `semantic` / `panoptic` / `segments` must carry."""
from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("rclpy")
pytest.importorskip("ovseg_ros.msg")

import cv2  # noqa: E402
import torch  # noqa: E402
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile,  # noqa: E402
                       ReliabilityPolicy)
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from node_harness import Client, NodeUnderTest, stamp_key  # noqa: E402
from ovseg_ros.msg import Segments, Vocabulary  # noqa: E402
from ovseg_ros.ros.image_conv import image_to_array, rgb_to_image  # noqa: E402

torch.set_num_threads(1)

H, W = 60, 80      # camera size; OVSeg works at short side 64 (64 x 85) and resizes back
OUTPUTS = {"semantic": Image, "panoptic": Image, "segments": Segments}
_stamps = itertools.count(1)


def _params():
    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "tiny_ovseg.yaml")
                         .read_text())
    flat = {k: v for k, v in cfg.items() if k != "ovseg"}
    flat.update({f"ovseg.{k}": v for k, v in cfg["ovseg"].items()})
    return flat


OVSEG_PARAMS = dict(_params(), diagnostics_period=0.5)
VOCAB = OVSEG_PARAMS["vocabulary"]


def _photo():
    import skimage.data

    return cv2.resize(skimage.data.chelsea(), (W, H), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    ns = "/ovs"
    n = NodeUnderTest(tmp_path_factory.mktemp("ovs"), OVSEG_PARAMS, namespace=ns)
    client = None
    try:
        client = Client(ns)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                         reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
        pub = client.node.create_publisher(Image, "image", qos)
        for topic, typ in OUTPUTS.items():
            client.record(typ, topic)
        client.wait_for(lambda: pub.get_subscription_count() > 0
                        and all(client.node.count_publishers(f"{ns}/{t}") > 0 for t in OUTPUTS),
                        timeout=120, node=n, what="the node to configure and subscribe")
    except BaseException:
        try:
            if client is not None:
                client.close()
        finally:
            n.stop()
        raise
    yield n, client, pub
    try:
        code = n.stop()
    finally:
        client.close()
    assert code == 0, f"node exit code {code}:\n{n.log()[-3000:]}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same engine in this process: seeded random init, so the same model."""
    from ovseg_ros import load_segmenter

    cfg = {k: v for k, v in OVSEG_PARAMS.items() if k != "diagnostics_period"}
    return load_segmenter(dict(cfg, text_cache_dir=str(tmp_path_factory.mktemp("ref_text"))))


def _send(node, client, pub, rgb, timeout=60.0):
    h = Header(frame_id="ovs_cam")
    h.stamp.sec, h.stamp.nanosec = 7000 + next(_stamps), 3
    msg = rgb_to_image(rgb, "rgb8", h)
    key = stamp_key(msg.header)
    found = {}
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        pub.publish(msg)
        t_next = time.monotonic() + 0.5
        while time.monotonic() < t_next:
            for t in OUTPUTS:
                m = next((m for m in client.msgs(t) if stamp_key(m.header) == key), None)
                if m is not None:
                    found[t] = m
            if len(found) == len(OUTPUTS):
                return found
            assert node.alive(), node.log()[-3000:]
            time.sleep(0.02)
    raise AssertionError(f"no {set(OUTPUTS) - set(found)} for stamp {key} within {timeout} s\n"
                         f"{node.log()[-3000:]}")


def test_vocabulary_reports_ovseg(node):
    n, client, _ = node
    v = client.latched(Vocabulary, "vocabulary", n)
    assert v.engine == "ovseg" and v.random_weights
    assert [c.name for c in v.classes] == ["person", "sky", "forklift", "floor", "couch"]
    assert list(v.classes[4].synonyms) == ["couch", "sofa"]


def test_node_publishes_the_engines_prediction(node, reference):
    n, client, pub = node
    rgb = _photo()
    out = _send(n, client, pub, rgb)
    sem_msg, pan_msg = out["semantic"], out["panoptic"]
    assert (sem_msg.width, sem_msg.height, sem_msg.encoding) == (W, H, "16UC1")
    assert (pan_msg.width, pan_msg.height, pan_msg.encoding) == (W, H, "32SC1")
    pred = reference.predict(rgb)
    np.testing.assert_array_equal(image_to_array(sem_msg).astype(np.int32), pred.semantic)
    pan = image_to_array(pan_msg)
    np.testing.assert_array_equal(pan, pred.panoptic)
    segs = out["segments"].segments
    assert segs, "min_thing_area 0: the heuristic gives segments"
    assert [(s.id, s.class_id, s.is_thing, s.area) for s in segs] == \
        [(s.id, s.class_id, s.is_thing, s.area) for s in sorted(pred.segments, key=lambda s: s.id)]
    for s in segs:
        assert s.area == int((pan == s.id).sum())



def test_runtime_mask_threshold_reaches_the_engine(node, reference):
    """ovseg.mask_threshold is runtime: at 1.0 no proposal has a crop, and the node labels
    the frame from the proposal head alone, as the reference's branch for "no crop" does
    (the same prediction as this process's engine with the same threshold)."""
    from rcl_interfaces.msg import Parameter as ParameterMsg
    from rcl_interfaces.msg import ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    n, client, pub = node
    srv = client.node.create_client(SetParameters, "ovseg_node/set_parameters")

    def set_threshold(value):
        v = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
        r = client.call(srv, SetParameters.Request(
            parameters=[ParameterMsg(name="ovseg.mask_threshold", value=v)]))
        assert r.results[0].successful, r.results[0].reason

    rgb = _photo()
    set_threshold(1.0)
    try:
        out = _send(n, client, pub, rgb)
        reference.update_config(ovseg__mask_threshold=1.0)
        try:
            head_only = reference.predict(rgb)
        finally:
            reference.update_config(ovseg__mask_threshold=0.4)
        assert head_only.counts["crops"] == 0
        np.testing.assert_array_equal(image_to_array(out["semantic"]).astype(np.int32),
                                      head_only.semantic)
    finally:
        set_threshold(0.4)
    out = _send(n, client, pub, rgb)
    np.testing.assert_array_equal(image_to_array(out["semantic"]).astype(np.int32),
                                  reference.predict(rgb).semantic)
    assert (image_to_array(out["semantic"]) < len(VOCAB)).all()

# --- config/ovseg_twostage.yaml ----------------------------------------------------------------
# (test_launch.py::test_params_file_is_valid_for_api_and_node loads it both ways as well)
def test_twostage_params_file_selects_the_reference_setup():
    from node_harness import ROOT
    from ovseg_ros.config import make_config

    cfg = make_config(ROOT / "config" / "ovseg_twostage.yaml")
    assert cfg["engine"] == "ovseg" and not cfg["random_init"]
    assert cfg["ovseg.checkpoint"] == "ovseg_swinbase_vitL14_ft_mpt.pth"
    # the reference's eval settings (configs/ovseg_swinB_vitL_bs32_120k.yaml; docs/ovseg.md)
    assert (cfg["ovseg.swin_model"], cfg["ovseg.head_size"], cfg["ovseg.clip_model"]) == \
        ("swin_base_patch4_window12_384", "base", "ViT-L-14-quickgelu")
    assert (cfg["ovseg.short_side"], cfg["ovseg.max_size"], cfg["ovseg.num_queries"]) == \
        (640, 2560, 100)
    assert (cfg["ovseg.mask_prompt_depth"], cfg["ovseg.mask_threshold"],
            cfg["ovseg.clip_ensemble_weight"]) == (3, 0.4, 0.7)


def test_twostage_params_file_without_checkpoint_stops_the_node_clearly(tmp_path):
    """Offline, with no checkpoint in weights_dir: configure fails naming the setting and
    the file, and the autostarted node exits 1 (before any model is built)."""
    import subprocess
    import sys

    from node_harness import ROOT, node_env

    r = subprocess.run(
        [sys.executable, "-m", "ovseg_ros.node", "--ros-args", "--params-file",
         str(ROOT / "config" / "ovseg_twostage.yaml"), "-p", "device:=cpu", "-p",
         "precision:=fp32", "-p", f"weights_dir:={tmp_path}", "-p",
         f"text_cache_dir:={tmp_path}", "-r", "__ns:=/ovsbad"],
        cwd=ROOT, env=node_env(), capture_output=True, text=True, timeout=120)
    log = r.stdout + r.stderr
    assert r.returncode == 1, log
    assert "WeightsError" in log and "ovseg.checkpoint" in log, log
    assert str(tmp_path / "ovseg_swinbase_vitL14_ft_mpt.pth") in log, log
