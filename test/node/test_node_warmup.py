"""configure's warm-up (warmup_size): one prediction before the first camera frame, reported
in the diagnostics; with torch_compile (OVSEG_TEST_COMPILE=1: slow) the tiny ProxyCLIP
compiles there and Inductor's cache goes under graph_cache_dir; a warm-up size above the
input limits fails configure with a clear error and the node keeps saying why."""
from __future__ import annotations

import os
import time

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("ovseg_ros.msg")

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from lifecycle_msgs.msg import Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from node_harness import TINY_PARAMS, Client, NodeUnderTest, diag_values, stamp_key  # noqa: E402
from ovseg_ros.core.products import build_products  # noqa: E402
from ovseg_ros.ros.image_conv import image_to_array, rgb_to_image  # noqa: E402

NODE_STATUS = "ovseg_node: segmentation"
W, H = 160, 120


def _photo() -> np.ndarray:
    import skimage.data

    return cv2.resize(skimage.data.astronaut(), (W, H), interpolation=cv2.INTER_AREA)


#: a cold compile of the tiny model at configure took 40-65 s on 1 thread of this project's
#: 2 shared cores (load 2-4) and 105 s at load 9 with frozen weights: too slow for every
#: run of the suite, so the compiled case runs where OVSEG_TEST_COMPILE=1 is set
COMPILE = pytest.param(True, marks=pytest.mark.skipif(
    os.environ.get("OVSEG_TEST_COMPILE") != "1",
    reason="cold torch.compile of the tiny model: 40-105 s; set OVSEG_TEST_COMPILE=1"))


@pytest.mark.parametrize("compiled", [False, COMPILE], ids=["eager", "compiled"])
def test_configure_warms_up_before_the_first_frame_and_reports_it(tmp_path, compiled):
    from ovseg_ros import load_segmenter

    params = dict(TINY_PARAMS, torch_compile=compiled, warmup_size=f"{W}x{H}",
                  graph_cache_dir=str(tmp_path / "graphs"))
    node = NodeUnderTest(tmp_path, params, namespace="/wu")
    c = Client("/wu")
    try:
        c.record(DiagnosticArray, "/diagnostics", qos=10)
        c.record(Image, "semantic")
        pub = c.node.create_publisher(Image, "image", qos_profile_sensor_data)
        c.wait_for(lambda: (diag_values(c, NODE_STATUS) or ({}, None))[0].get("state")
                   in ("inactive", "active"), 400, node, "configure (with its warm-up)")
        values, status = diag_values(c, NODE_STATUS)
        assert values["warmup_size"] == f"{W}x{H}"
        assert values["warmup_compiled"] == str(compiled)
        assert float(values["warmup_s"]) > 0.0
        what = "compile + first prediction" if compiled else "first prediction"
        assert f"warm-up at {W}x{H}: {what}" in node.log()
        # with compile, Inductor wrote its graphs under the project's cache, not
        # /tmp/torchinductor_<user>; without, nothing was compiled
        fxgraph = tmp_path / "graphs" / "inductor" / "fxgraph"
        assert (fxgraph.is_dir() and any(fxgraph.rglob("*"))) == compiled, node.log()[-2000:]
        # the first camera frame gets the (compiled) model's labels, equal to eager's
        h = Header(frame_id="wu_cam")
        h.stamp.sec = 4242
        msg = rgb_to_image(_photo(), "rgb8", h)
        c.wait_for(lambda: pub.get_subscription_count() > 0, 60, node, "image subscription")

        def answered():
            pub.publish(msg)
            time.sleep(0.2)
            return any(stamp_key(m.header) == stamp_key(msg.header) for m in c.msgs("semantic"))
        c.wait_for(answered, 120, node, "the first frame's labels")
        got = [m for m in c.msgs("semantic") if stamp_key(m.header) == stamp_key(msg.header)][0]
        ref = load_segmenter({k: v for k, v in params.items()
                              if k not in ("torch_compile", "diagnostics_period",
                                           "subscribe_compressed")},
                             text_cache_dir=str(tmp_path / "ref_text"))
        expect = ref.predict(_photo())
        ref_sem = build_products(expect, _photo(), expect.vocabulary, overlay_alpha=0.5,
                                 random_weights=True).semantic
        assert float((image_to_array(got) == ref_sem).mean()) >= 0.99
        assert status.level != DiagnosticStatus.ERROR
    finally:
        c.close()
        code = node.stop()
    assert code == 0, node.log()[-2000:]


def test_a_warm_up_above_the_input_limit_fails_configure_and_says_why(tmp_path):
    # TINY_PARAMS' max_input_pixels is 400 * 300; a lifecycle node (no autostart) stays up
    node = NodeUnderTest(tmp_path, dict(TINY_PARAMS, warmup_size="640x480", autostart=False),
                         namespace="/wx")
    c = Client("/wx")
    try:
        c.record(DiagnosticArray, "/diagnostics", qos=10)
        change = c.node.create_client(ChangeState, "ovseg_node/change_state")
        r = c.call(change, ChangeState.Request(
            transition=Transition(id=Transition.TRANSITION_CONFIGURE)), timeout=120)
        assert not r.success

        def refused():
            found = diag_values(c, NODE_STATUS)
            return found is not None and "model not loaded" in found[1].message
        c.wait_for(refused, 30, node, "diagnostics reporting the failed configure")
        _, status = diag_values(c, NODE_STATUS)
        assert status.level == DiagnosticStatus.ERROR
        assert "warmup_size" in status.message and "max_input_pixels (120000)" in status.message
        assert "loaded engine" not in node.log()      # refused before the model was loaded
        assert node.alive()
    finally:
        c.close()
        code = node.stop()
    assert code == 0, node.log()[-2000:]
