"""Lifecycle of ovseg_node with autostart: false — configure loads, activate processes,
deactivate stops without unloading, activate resumes; diagnostics say the state."""
from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("ovseg_ros.msg")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from node_harness import TINY_PARAMS, Client, NodeUnderTest, stamp_key  # noqa: E402
from ovseg_ros.ros.image_conv import rgb_to_image  # noqa: E402

NS = "/lc"


def _frame(i):
    h = Header(frame_id="lc_cam")
    h.stamp.sec, h.stamp.nanosec = 9000 + i, 0
    return rgb_to_image(np.full((60, 80, 3), 40 * (i % 6), np.uint8), "rgb8", h)


def test_lifecycle_transitions(tmp_path):
    node = NodeUnderTest(tmp_path, dict(TINY_PARAMS, autostart=False), namespace=NS)
    c = Client(NS)
    try:
        get_state = c.node.create_client(GetState, "ovseg_node/get_state")
        change = c.node.create_client(ChangeState, "ovseg_node/change_state")
        pub = c.node.create_publisher(Image, "image", qos_profile_sensor_data)
        c.record(Image, "semantic")
        c.record(DiagnosticArray, "/diagnostics", qos=10)

        def state():
            return c.call(get_state, GetState.Request(), timeout=60).current_state.id

        def transition(tid):
            r = c.call(change, ChangeState.Request(transition=Transition(id=tid)), timeout=120)
            assert r.success, node.log()[-2000:]

        def processes(i, timeout=4.0):
            msg = _frame(i)
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                pub.publish(msg)
                time.sleep(0.3)
                if any(stamp_key(m.header) == stamp_key(msg.header) for m in c.msgs("semantic")):
                    return True
            return False

        assert state() == State.PRIMARY_STATE_UNCONFIGURED
        c.wait_for(lambda: any(st.message.startswith("unconfigured") for a in
                               c.msgs("/diagnostics") for st in a.status), 10, node,
                   "diagnostics saying 'unconfigured'")
        transition(Transition.TRANSITION_CONFIGURE)
        assert state() == State.PRIMARY_STATE_INACTIVE
        c.wait_for(lambda: pub.get_subscription_count() > 0, 30, node, "image subscription")
        assert not processes(0, timeout=2.0), "inactive node must not process"
        transition(Transition.TRANSITION_ACTIVATE)
        assert processes(1, timeout=30.0)
        transition(Transition.TRANSITION_DEACTIVATE)
        assert state() == State.PRIMARY_STATE_INACTIVE
        assert not processes(2, timeout=2.0), "deactivated node must not process"
        t0 = time.monotonic()
        transition(Transition.TRANSITION_ACTIVATE)       # no reload: fast
        assert time.monotonic() - t0 < 5.0
        assert processes(3, timeout=30.0)
        assert node.log().count("loaded engine") == 1    # the model was loaded once
    finally:
        c.close()
        code = node.stop()
    assert code == 0, node.log()[-2000:]
