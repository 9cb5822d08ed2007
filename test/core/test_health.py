"""The node's diagnostics policy (ovseg_ros/runtime/health.py), without DDS: facts in,
level, message and key/values out."""
from __future__ import annotations

from ovseg_ros.runtime.health import (ERROR, OK, WARN, CameraFacts, NodeFacts, camera_health,
                                      node_health, warmup_values)

RATES = {"fps": 10.0, "latency_ms": 50.0, "latency_max_ms": 80.0, "inference_ms": 40.0,
         "drop_rate": 1.0}


def _cam(label="front", **kw) -> CameraFacts:
    base = dict(label=label, topic=f"/{label}/image", rates=RATES, processed=10, received=12,
                dropped=2)
    base.update(kw)
    return CameraFacts(**base)


def _node(**kw) -> NodeFacts:
    base = dict(active=True, enabled=True, loaded=True,
                model={"engine": "proxyclip", "num_classes": 3},
                counters={"errors": 0, "batches": 5})
    base.update(kw)
    return NodeFacts(**base)


def test_a_healthy_camera_and_node_are_ok_with_their_counters():
    cam = camera_health(_cam(settings={"image_depth": 1}), active=True, recent_within=5.0)
    assert (cam.level, cam.message) == (OK, "processing")
    assert cam.values["frames_dropped"] == 2 and cam.values["image_depth"] == 1
    assert not [k for k in cam.values if k.startswith("stage_")]
    # the node's per-frame stages, once timed, are the camera's values too
    timed = camera_health(_cam(rates={**RATES, "stage_decode_ms": 1.5}), active=True,
                          recent_within=5.0)
    assert timed.values["stage_decode_ms"] == 1.5
    assert cam.values["stalled"] is False and cam.values["last_problem"] == ""
    node = node_health(_node(), [_cam("a"), _cam("b", processed=30, rates={**RATES,
                                                                         "latency_ms": 10.0})])
    assert (node.level, node.message) == (OK, "processing")
    v = node.values
    assert v["state"] == "active" and v["cameras"] == 2 and v["fps"] == 20.0
    assert v["latency_ms"] == (50.0 * 10 + 10.0 * 30) / 40     # weighted by frames processed
    assert v["frames_received"] == 24 and v["engine"] == "proxyclip"
    assert v["weights"] == "pretrained" and v["batches"] == 5


def test_stall_waiting_and_recent_problems_warn_in_that_order():
    stalled = _cam(stalled_for=3.0, stall_timeout=2.0, waiting=True, publishers=1)
    r = camera_health(stalled, active=True, recent_within=5.0)
    assert r.level == WARN and r.message == ("input stalled: no frame on /front/image for 3.0 s "
                                             "(input_timeout 2 s)")
    r = camera_health(_cam(waiting=True, publishers=0), active=True, recent_within=5.0)
    assert r.level == WARN and r.message == "no image received on /front/image yet (0 publishers)"
    r = camera_health(_cam(last_problem=(1.0, "bad encoding")), active=True, recent_within=5.0)
    assert r.level == WARN and r.message == "recent problem: bad encoding"
    old = camera_health(_cam(last_problem=(9.0, "bad encoding")), active=True,
                        recent_within=5.0)
    assert old.level == OK and old.values["last_problem"] == "bad encoding"


def test_node_waiting_points_to_the_readme_not_to_large_data():
    r = node_health(_node(), [_cam(waiting=True, publishers=2)])
    assert r.level == WARN
    assert r.message.startswith("no image received on /front/image (2 publishers) yet")
    assert 'README, "Nothing arrives?' in r.message and "LARGE_DATA" not in r.message
    r = node_health(_node(), [_cam(stalled_for=1.0), _cam("b", stalled_for=2.0)])
    assert r.message == "input stalled: /front/image (camera front), /b/image (camera b)"
    assert r.values["stalled_cameras"] == "front,b"


def test_node_states_and_random_weights():
    r = node_health(_node(loaded=False, active=False, load_error="WeightsError: missing"), [])
    assert (r.level, r.message) == (ERROR, "model not loaded: WeightsError: missing")
    assert r.values["state"] == "unconfigured" and "engine" not in r.values
    r = node_health(_node(loaded=False, active=False), [])
    assert r.level == ERROR and r.message.startswith("unconfigured")
    r = node_health(_node(active=False), [_cam(stalled_for=1.0)])
    assert (r.level, r.values["state"]) == (OK, "inactive")      # not active: no stall warning
    r = node_health(_node(enabled=False), [])
    assert r.message == "paused by the enable service"
    r = node_health(_node(recent_problem=("input:size:", "too big")), [])
    assert (r.level, r.message) == (WARN, "recent problem (input:size:): too big")
    r = node_health(_node(random_weights=True), [])
    assert r.level == WARN and r.message == "RANDOM WEIGHTS (labels are meaningless); processing"
    assert r.values["weights"] == "RANDOM WEIGHTS"


def _depth(**kw):
    base = dict(topic="/front/depth", received=50, paired=9, paired_exact=9, unpaired=1,
                dropped=41, unpaired_streak=0, last_miss="", errors={}, last_error="")
    base.update(kw)
    return base


def test_a_depth_camera_reports_its_pairing_and_refusals_by_reason():
    cam = camera_health(_cam(depth=_depth(errors={"size": 2, "encoding": 1},
                                          last_error="depth refused (size)")),
                        active=True, recent_within=5.0)
    assert cam.level == OK
    v = cam.values
    assert v["depth_paired"] == 9 and v["depth_unpaired"] == 1 and v["depth_dropped"] == 41
    assert v["depth_refused"] == 3 and v["depth_refused_by_reason"] == "encoding:1,size:2"
    assert v["depth_last_error"] == "depth refused (size)"
    # a camera without depth has no depth keys
    assert not any(k.startswith("depth_") for k in camera_health(
        _cam(), active=True, recent_within=5.0).values)


def test_colour_frames_without_depth_in_a_row_warn_with_the_reason():
    from ovseg_ros.runtime.health import UNPAIRED_WARN_AFTER

    miss = "no depth image received (is the depth topic publishing?)"
    few = camera_health(_cam(depth=_depth(unpaired_streak=UNPAIRED_WARN_AFTER - 1,
                                          last_miss=miss)), active=True, recent_within=5.0)
    assert few.level == OK
    many = camera_health(_cam(depth=_depth(unpaired_streak=UNPAIRED_WARN_AFTER,
                                           last_miss=miss)), active=True, recent_within=5.0)
    assert many.level == WARN
    assert "/front/depth" in many.message and miss in many.message
    assert many.values["depth_last_miss"] == miss


def test_clamped_and_refused_frames_are_counted_per_camera():
    """Bounded work per frame: a clamped frame was processed at a smaller size, a refused one
    not at all; both are the camera's counters, and a recent clamp warns with its note."""
    plain = camera_health(_cam(), active=True, recent_within=5.0)
    assert plain.values["frames_clamped"] == 0 and plain.values["frames_refused"] == 0
    note = "camera front: clamped by proxyclip.max_windows=8: 3x1000 -> 2x504"
    cam = camera_health(_cam(frames_clamped=3, frames_refused=1, last_problem=(0.5, note)),
                        active=True, recent_within=5.0)
    assert cam.values["frames_clamped"] == 3 and cam.values["frames_refused"] == 1
    assert cam.level == WARN and note in cam.message


def test_tracking_embeddings_and_locate_facts():
    off = camera_health(_cam(), active=True, recent_within=5.0).values
    assert off["tracking"] is False and "tracks" not in off
    on = camera_health(_cam(tracks=3, track_resets=1), active=True, recent_within=5.0).values
    assert (on["tracking"], on["tracks"], on["track_resets"]) == (True, 3, 1)
    node = node_health(_node(embeddings=True, tracking=True,
                             counters={"locate_answered": 4, "locate_refused": 2}), [_cam()])
    v = node.values
    assert (v["embeddings"], v["tracking"]) == (True, True)
    assert (v["locate_answered"], v["locate_refused"]) == (4, 2)
    assert node_health(_node(), [_cam()]).values["embeddings"] is False


def test_the_warm_up_is_reported_with_its_size_time_and_whether_it_compiled():
    compiled = {"size": (640, 480), "batches": (1,), "seconds": 26.61234, "text_encode_s": 0.4,
                "compiled": True}
    v = node_health(_node(warmup=compiled), [_cam()]).values
    assert (v["warmup_size"], v["warmup_s"], v["warmup_compiled"]) == ("640x480", 26.612, True)
    assert v["warmup_text_encode_s"] == 0.4
    # no warm-up (warmup_size ''): said so, not left out
    assert warmup_values({}) == {"warmup_size": "", "warmup_s": 0.0, "warmup_compiled": False}
    assert node_health(_node(), [_cam()]).values["warmup_size"] == ""
    # an unconfigured node has no model, so no warm-up either
    assert "warmup_s" not in node_health(_node(loaded=False, active=False), []).values
