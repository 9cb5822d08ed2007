"""Load behaviour of ovseg_node: a 30 Hz camera into a model slower than 33 ms.

The tiny random-weight ProxyCLIP is slowed honestly by its settings (short side
240 px and 112 px windows with stride 56 over a 320x240 frame: about 15
windows, ~100-200 ms per frame on this 2-core machine), not by a sleep.

Stated memory bound: after a 5 s warm-up the node's RSS grows by less than
60 MiB over the remaining 15 s of 30 Hz input (latest-frame-only keeps one
frame; a queue behind the model would grow by ~7 MiB per second).
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("ovseg_ros.msg")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from node_harness import TINY_PARAMS, Client, NodeUnderTest, stamp_key  # noqa: E402
from ovseg_ros.ros.image_conv import rgb_to_image  # noqa: E402

RATE_HZ, DURATION_S, WARMUP_S = 30.0, 20.0, 5.0
RSS_GROWTH_BOUND_MIB = 60.0
# slower than the 30 Hz camera on any machine: ~54 windows of 112 px (stride 28, above the
# default max_windows clamp of 8) measured 90 ms per 320x240 frame on 1 thread; with the
# clamp the tiny model kept up (13 ms), and since configure's warm-up took the first-frame
# costs away nothing was dropped any more
SLOW = dict(TINY_PARAMS, **{"proxyclip.short_side": 240, "proxyclip.crop_size": 112,
                            "proxyclip.stride": 28, "proxyclip.max_windows": 64,
                            "publish_confidence": False})


def _diag(client):
    for arr in reversed(client.msgs("/diagnostics")):
        for st in arr.status:
            if st.name.startswith("ovseg_node"):
                return {kv.key: kv.value for kv in st.values}
    return None


def _start(tmp, params, ns, pub_qos=qos_profile_sensor_data):
    node = NodeUnderTest(tmp, params, namespace=ns)
    client = Client(ns)
    pub = client.node.create_publisher(Image, "image", pub_qos)
    client.record(Image, "semantic")
    client.record(DiagnosticArray, "/diagnostics", qos=10)
    client.wait_for(lambda: pub.get_subscription_count() > 0
                    and client.node.count_publishers(f"{ns}/semantic") > 0,
                    120, node, "the node to start")
    return node, client, pub


def test_30hz_into_slow_model_latest_frame_only(tmp_path):
    node, client, pub = _start(tmp_path, SLOW, "/load")
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (240, 320, 3), dtype=np.uint8) for _ in range(4)]
    sent = {}          # stamp key -> publish time
    rss = []           # (t, MiB)
    stop = threading.Event()

    def camera():
        i, t0 = 0, time.monotonic()
        while not stop.is_set():
            h = Header(frame_id="load_cam")
            h.stamp.sec, h.stamp.nanosec = 5000 + i // 30, (i % 30) * 1000
            msg = rgb_to_image(frames[i % 4], "rgb8", h)
            sent[stamp_key(h)] = time.monotonic()
            pub.publish(msg)
            i += 1
            time.sleep(max(0.0, t0 + i / RATE_HZ - time.monotonic()))

    try:
        # warm-up: until the first output, so model start-up is not counted
        cam = threading.Thread(target=camera, daemon=True)
        cam.start()
        client.wait_for(lambda: client.msgs("semantic"), 60, node, "a first output")
        client.clear("semantic")
        t_start = time.monotonic()
        while time.monotonic() - t_start < DURATION_S:
            rss.append((time.monotonic() - t_start, node.rss_mb()))
            time.sleep(0.5)
            assert node.alive(), node.log()[-2000:]
        stop.set()
        cam.join(2.0)
        n_sent = len(sent)
        outputs = client.timed("semantic")
        time.sleep(1.5)
        diag = _diag(client)
    finally:
        stop.set()
        client.close()
        code = node.stop()
    assert code == 0, node.log()[-2000:]

    assert n_sent >= RATE_HZ * DURATION_S * 0.8
    # outputs keep flowing: many, and never a long gap
    assert len(outputs) >= 20, f"only {len(outputs)} outputs in {DURATION_S} s"
    times = [t for t, _ in outputs]
    assert max(np.diff(times)) < 3.0
    # each output answers a recent input (latest frame, not a stale queue)
    ages = []
    for t_recv, msg in outputs:
        key = stamp_key(msg.header)
        assert key in sent, f"output for an unknown stamp {key}"
        ages.append(t_recv - sent[key])
    stamps = [(m.header.stamp.sec, m.header.stamp.nanosec) for _, m in outputs]
    assert stamps == sorted(stamps), "outputs out of order"
    per_frame = DURATION_S / len(outputs)
    assert float(np.median(ages)) < max(1.0, 3 * per_frame), (np.median(ages), per_frame)
    assert max(ages) < max(3.0, 8 * per_frame)
    # the model is slower than the camera, so frames are dropped and reported
    assert diag is not None
    assert int(diag["frames_dropped"]) > 0
    assert int(diag["frames_received"]) >= int(diag["frames_processed"])
    assert float(diag["fps"]) > 0
    # memory stays flat
    base = np.mean([m for t, m in rss if WARMUP_S - 1 <= t <= WARMUP_S])
    peak = max(m for t, m in rss if t >= WARMUP_S)
    print(f"\n[load] sent {n_sent} frames at {RATE_HZ} Hz, {len(outputs)} outputs "
          f"({len(outputs) / DURATION_S:.1f}/s), median age {1000 * np.median(ages):.0f} ms, "
          f"max age {1000 * max(ages):.0f} ms, dropped {diag['frames_dropped']}, "
          f"RSS {base:.0f} -> peak {peak:.0f} MiB")
    assert peak - base < RSS_GROWTH_BOUND_MIB, f"RSS grew {base:.0f} -> {peak:.0f} MiB"


def test_process_every_frame_queues_instead_of_dropping(tmp_path):
    params = dict(TINY_PARAMS, process_every_frame=True, max_queue=50,
                  image_reliability="reliable", image_depth=50)
    from ovseg_ros.ros.qos import output_qos

    node, client, pub = _start(tmp_path, params, "/queue", pub_qos=output_qos(depth=50))
    rng = np.random.default_rng(1)
    keys = []
    try:
        # a probe frame until it comes back: both ends of the reliable link are matched
        probe = Header(frame_id="probe")
        probe_msg = rgb_to_image(np.zeros((90, 130, 3), np.uint8), "rgb8", probe)
        end = time.monotonic() + 60
        while not client.msgs("semantic") and time.monotonic() < end:
            pub.publish(probe_msg)
            time.sleep(0.5)
        assert client.msgs("semantic"), node.log()[-2000:]
        time.sleep(1.0)
        client.clear("semantic")
        before = _diag(client)
        for i in range(20):      # a burst at ~60 Hz, faster than the model
            h = Header(frame_id="bag_cam")
            h.stamp.sec, h.stamp.nanosec = 7000, i
            pub.publish(rgb_to_image(rng.integers(0, 256, (90, 130, 3), dtype=np.uint8),
                                     "rgb8", h))
            keys.append(stamp_key(h))
            time.sleep(1 / 60)
        client.wait_for(lambda: len(client.msgs("semantic")) >= 20, 60, node,
                        "an output for every queued frame")
        got = [stamp_key(m.header) for m in client.msgs("semantic")]
        time.sleep(1.0)
        diag = _diag(client)
    finally:
        client.close()
        node.stop()
    assert got == keys, "every frame processed, in order"
    assert diag is not None and diag["mode"] == "process_every_frame"
    assert int(diag["frames_dropped"]) == 0
    assert int(diag["frames_processed"]) - int(before["frames_processed"] if before else 0) >= 20


def test_two_30hz_cameras_into_slow_model_both_served(tmp_path):
    """Two 30 Hz cameras into the slow model: both keep getting outputs (round robin, no
    camera starves), drops are counted per camera, memory stays flat."""
    from node_harness import CameraStream, diag_values

    duration, warmup = 12.0, 4.0
    params = dict(SLOW, cameras=["cam_a", "cam_b"])
    node = NodeUnderTest(tmp_path, params, namespace="/load2")
    client = Client("/load2")
    rng = np.random.default_rng(2)
    streams = {c: CameraStream(client, f"{c}/image", f"{c}_frame",
                               rng.integers(0, 256, (240, 320, 3), dtype=np.uint8),
                               sec_base=base, rate=RATE_HZ, qos=qos_profile_sensor_data)
               for c, base in (("cam_a", 30000), ("cam_b", 40000))}
    rss = []
    try:
        for c in streams:
            client.record(Image, f"{c}/semantic")
        client.record(DiagnosticArray, "/diagnostics", qos=10)
        client.wait_for(lambda: all(s.pub.get_subscription_count() > 0
                                    for s in streams.values()), 120, node, "the node to start")
        for s in streams.values():
            s.start()
        client.wait_for(lambda: all(client.msgs(f"{c}/semantic") for c in streams), 60, node,
                        "a first output of each camera")
        t_start = time.monotonic()
        while time.monotonic() - t_start < warmup + duration:
            rss.append((time.monotonic() - t_start, node.rss_mb()))
            time.sleep(0.5)
            assert node.alive(), node.log()[-2000:]
        for s in streams.values():
            s.stop()
        time.sleep(1.5)
        diags = {c: diag_values(client, f"ovseg_node: camera {c}") for c in streams}
        outputs = {c: [(t, m) for t, m in client.timed(f"{c}/semantic")
                       if t - t_start >= warmup] for c in streams}
    finally:
        for s in streams.values():
            s.stop()
        client.close()
        code = node.stop()
    assert code == 0, node.log()[-2000:]
    for c, outs in outputs.items():
        assert len(outs) >= 10, f"camera {c}: only {len(outs)} outputs in {duration} s"
        times = [t for t, _ in outs]
        assert max(np.diff(times)) < 3.0, f"camera {c} starved for {max(np.diff(times)):.1f} s"
        assert all(stamp_key(m.header) in streams[c].sent for _, m in outs)
        values = diags[c][0]
        assert int(values["frames_dropped"]) > 0 and float(values["drop_rate"]) >= 0.0
        assert int(values["frames_received"]) > int(values["frames_processed"])
    base = np.mean([m for t, m in rss if warmup - 1 <= t <= warmup])
    peak = max(m for t, m in rss if t >= warmup)
    print("\n[load, 2 cameras] outputs " + ", ".join(
        f"{c}: {len(o)} ({len(o) / duration:.1f}/s), dropped {diags[c][0]['frames_dropped']}"
        for c, o in outputs.items()) + f"; RSS {base:.0f} -> peak {peak:.0f} MiB")
    assert peak - base < RSS_GROWTH_BOUND_MIB, f"RSS grew {base:.0f} -> {peak:.0f} MiB"
