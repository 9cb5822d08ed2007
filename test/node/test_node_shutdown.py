"""SIGINT ends ovseg_node cleanly and at once, even mid-stream with peers connected.

The node used to hang at exit now and then: Fast DDS 3.2.2 (LARGE_DATA, TCP) can
deadlock while deleting the participant, and did so inside Python's exit. main() now
destroys the ROS entities and ends with os._exit before that deletion (see its docstring).
This test stops the node while frames flow and this process's participant is still
connected, the situation of the hang."""
from __future__ import annotations

import signal
import threading
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("ovseg_ros.msg")

from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from node_harness import TINY_PARAMS, Client, NodeUnderTest  # noqa: E402
from ovseg_ros.ros.image_conv import rgb_to_image  # noqa: E402

NS = "/sd"
EXIT_WITHIN_S = 10.0   # the node itself needs well under a second; slack for a busy machine


def _stream(pub, stop: threading.Event, frame_id: str, first_sec: int, hw, period: float):
    """A camera thread: numbered rgb8 frames of size ``hw`` every ``period`` s until ``stop``."""
    def camera():
        i = 0
        while not stop.is_set():
            h = Header(frame_id=frame_id)
            h.stamp.sec = first_sec + i
            pub.publish(rgb_to_image(np.full((*hw, 3), 30 * (i % 8), np.uint8), "rgb8", h))
            i += 1
            time.sleep(period)

    threading.Thread(target=camera, daemon=True).start()


def test_sigint_mid_stream_exits_zero_and_unpublishes(tmp_path):
    node = NodeUnderTest(tmp_path, TINY_PARAMS, namespace=NS)
    c = Client(NS)
    stop = threading.Event()
    try:
        pub = c.node.create_publisher(Image, "image", qos_profile_sensor_data)
        c.record(Image, "semantic")
        c.wait_for(lambda: pub.get_subscription_count() > 0, 120, node, "image subscription")

        _stream(pub, stop, "sd_cam", 7000, (60, 80), 0.05)
        c.wait_for(lambda: len(c.msgs("semantic")) >= 2, 60, node, "outputs")
        assert c.node.count_publishers(f"{NS}/semantic") == 1

        t0 = time.monotonic()
        node.proc.send_signal(signal.SIGINT)          # frames still arriving
        code = node.proc.wait(timeout=EXIT_WITHIN_S + 20)   # past the limit: fail, not hang
        took = time.monotonic() - t0
        # its publishers leave the graph at once (entities destroyed before the exit)
        c.wait_for(lambda: c.node.count_publishers(f"{NS}/semantic") == 0, 5, None,
                   "the node's publishers to leave the graph")
    finally:
        stop.set()
        node.stop()
        c.close()
    log = node.log()
    assert code == 0, log[-3000:]
    assert took < EXIT_WITHIN_S, f"exit took {took:.1f} s\n{log[-3000:]}"
    assert "Traceback" not in log, log[-3000:]


def test_repeated_sigint_during_cleanup_still_exits_zero(tmp_path):
    """Ctrl-C reaches the whole process group (terminals, ros2 launch), and impatient users
    press it again: the second SIGINT lands in the node's cleanup (worker join,
    destroy_service). It must not turn the clean exit into a KeyboardInterrupt traceback
    and exit code 1, and the services must leave the graph at once."""
    ns = "/sd2"
    # a slower frame (larger input) so that one is in flight when the signals come
    params = dict(TINY_PARAMS, **{"proxyclip.short_side": 240, "proxyclip.stride": 56})
    node = NodeUnderTest(tmp_path, params, namespace=ns)
    c = Client(ns)
    stop = threading.Event()
    try:
        pub = c.node.create_publisher(Image, "image", qos_profile_sensor_data)
        c.record(Image, "semantic")
        c.wait_for(lambda: pub.get_subscription_count() > 0
                   and c.node.count_services(f"{ns}/set_vocabulary") == 1, 120, node,
                   "image subscription and set_vocabulary")

        _stream(pub, stop, "sd2_cam", 8000, (240, 320), 0.03)
        c.wait_for(lambda: len(c.msgs("semantic")) >= 2, 60, node, "outputs")
        node.proc.send_signal(signal.SIGINT)
        time.sleep(0.02)
        node.proc.send_signal(signal.SIGINT)          # twice in quick succession ...
        end = time.monotonic() + 30
        while node.proc.poll() is None and time.monotonic() < end:
            time.sleep(0.05)                          # ... and again, all through the exit
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGINT)
        code = node.proc.wait(timeout=5)
        c.wait_for(lambda: c.node.count_services(f"{ns}/set_vocabulary") == 0
                   and c.node.count_services(f"{ns}/enable") == 0, 5, None,
                   "the node's services to leave the graph")
    finally:
        stop.set()
        node.stop()
        c.close()
    log = node.log()
    assert code == 0, log[-3000:]
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log[-3000:]
