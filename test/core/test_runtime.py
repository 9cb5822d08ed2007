"""ROS-free building blocks of the node (ovseg_ros/runtime): frame hand-over and
scheduling across cameras, camera names, the stall watch, rolling rate figures.
They run without rclpy."""
import threading
import time

import pytest

from ovseg_ros.runtime.frames import FrameQueues
from ovseg_ros.runtime.stats import RateStats


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


def test_rate_stats_mean_the_stages_of_the_frames_that_timed_them():
    st = RateStats(window=10.0)
    st.record(latency=0.3, infer_time=0.2, now=100.0)      # no stages: none reported
    assert not [k for k in st.snapshot(now=100.0) if k.startswith("stage_")]
    st.record(latency=0.3, infer_time=0.2, now=101.0,
              stages={"wait": 0.01, "decode": 0.002, "outputs": 0.004, "publish": 0.001})
    st.record(latency=0.3, infer_time=0.2, now=102.0,
              stages={"wait": 0.03, "decode": 0.004, "outputs": 0.006, "publish": 0.003})
    snap = st.snapshot(now=102.0)
    assert snap["stage_wait_ms"] == pytest.approx(20.0)
    assert snap["stage_decode_ms"] == pytest.approx(3.0)
    assert snap["stage_outputs_ms"] == pytest.approx(5.0)
    assert snap["stage_publish_ms"] == pytest.approx(2.0)
