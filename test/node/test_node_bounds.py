"""Elongated and tiny frames through the real node (tiny ProxyCLIP, its own process, DDS).

Camera ``good`` streams an ordinary 130x90 frame at 10 Hz throughout; camera ``odd``
gets one hostile frame at a time (3x1000, 1000x3, 2x4000, 4000x2, 1x1, 2x2, all under
the node's max_input_pixels, so accepted) and then ordinary frames again. Before the
resize limits a 3x1000 frame cost the node about 17 s and 6.6 GB, and the frames sent
meanwhile were not processed. Checked: every hostile frame is segmented at its own
size, the node counts no error, the good camera's outputs keep coming while the
hostile frames are processed (no gap near the old 17 s) and both cameras keep
producing afterwards, and the node's memory stays far under the old 6.6 GB.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("ovseg_ros.msg")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from node_harness import (TINY_PARAMS, CameraStream, Client, NodeUnderTest,  # noqa: E402
                          diag_values, stamp_key)

NS = "/bounds"
HOSTILE = [(3, 1000), (1000, 3), (2, 4000), (4000, 2), (1, 1), (2, 2)]   # (h, w)
GOOD = (90, 130)
#: the good camera's longest wait between two outputs while the hostile frames are processed;
#: each costs a fraction of a second now (about 17 s each before the limits)
MAX_GAP_S = 5.0
PARAMS = dict(TINY_PARAMS, cameras=["good", "odd"], diagnostics_period=0.5)


def _rgb(shape, seed):
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    node = NodeUnderTest(tmp_path_factory.mktemp("bounds"), PARAMS, namespace=NS)
    client = Client(NS)
    streams = []
    try:
        for cam in ("good", "odd"):
            client.record(Image, f"{cam}/semantic")
        client.record(DiagnosticArray, "/diagnostics")
        good = CameraStream(client, "good/image", "good_optical", _rgb(GOOD, 0), 100000,
                            rate=10.0)
        odd = CameraStream(client, "odd/image", "odd_optical", _rgb(GOOD, 1), 200000)
        streams += [good, odd]
        good.start()
        client.wait_for(lambda: len(client.msgs("good/semantic")) >= 3, 120, node,
                        "the good camera's first outputs")
        yield node, client, good, odd
    finally:
        for stream in streams:
            stream.stop()
        client.close()
        node.stop()


def test_hostile_shapes_are_segmented_while_good_frames_flow(setup):
    node, client, good, odd = setup
    t_start = time.monotonic()
    for i, shape in enumerate(HOSTILE):
        odd.rgb = _rgb(shape, 10 + i)
        # one at a time: the camera's queue keeps only its newest frame
        key = None
        for _ in range(3):                   # resent if DDS matched the publisher late
            key = stamp_key(odd.publish_one().header)
            try:
                client.wait_for(lambda: any(stamp_key(m.header) == key
                                            for m in client.msgs("odd/semantic")), 10, node,
                                f"the output of the {shape[0]}x{shape[1]} frame")
                break
            except AssertionError:
                if not node.alive():
                    raise
        out = [m for m in client.msgs("odd/semantic") if stamp_key(m.header) == key]
        assert out, f"no output for the {shape[0]}x{shape[1]} frame"
        assert (out[0].height, out[0].width) == shape
    t_end = time.monotonic()

    # the good camera kept flowing while the hostile frames were processed
    times = [t for t, _ in client.timed("good/semantic") if t_start <= t <= t_end]
    assert len(times) >= 2, "the good camera got no outputs while hostile frames were processed"
    gaps = np.diff([t_start, *times, t_end])
    assert gaps.max() < MAX_GAP_S, f"the good camera waited {gaps.max():.1f} s for an output"

    # and both cameras keep going afterwards
    n_good = len(client.msgs("good/semantic"))
    odd.rgb = _rgb(GOOD, 2)
    odd.start()
    try:
        client.wait_for(lambda: len(client.msgs("good/semantic")) >= n_good + 5, 30, node,
                        "good outputs after the hostile frames")
        client.wait_for(lambda: any(m.height == GOOD[0] for m in client.msgs("odd/semantic")),
                        30, node, "odd outputs of ordinary frames after the hostile ones")
    finally:
        odd.stop()

    # no frame failed, nothing refused, and memory stayed far below the old 6.6 GB
    client.clear("/diagnostics")
    client.wait_for(lambda: diag_values(client, "ovseg_node: camera odd"), 10, node,
                    "the odd camera's diagnostics")
    values, _ = diag_values(client, "ovseg_node: camera odd")
    assert int(values["errors"]) == 0 and int(values["bad_inputs"]) == 0, values
    # the elongated frames were clamped (ProxyCLIP's max_windows), counted and not refused
    assert int(values["frames_clamped"]) >= 1 and int(values["frames_refused"]) == 0, values
    assert node.alive()
    assert node.rss_mb() < 3000
