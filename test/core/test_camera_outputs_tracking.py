"""Tracking in the one output path (ovseg_ros/core/camera_outputs.py): the published ids
persist across frames and agree between panoptic, segments, embeddings and the 3D
segments; resets; what locate gets of the latest frame."""
import numpy as np
import pytest

from ovseg_ros.config import make_config
from ovseg_ros.core import geometry as G
from ovseg_ros.core.camera_outputs import CameraOutputs, stamp_seconds
from ovseg_ros.core.depth import DepthFrame, Intrinsics
from ovseg_ros.core.products import build_products
from ovseg_ros.core.tracking import STUFF_ID_LIMIT, TrackerSettings
from ovseg_ros.core.types import Prediction
from ovseg_ros.eval.tracking_sequence import CLASSES, frame_segments, synthetic_sequence

H, W = 240, 320
INTR = Intrinsics(150.0, 150.0, W / 2, H / 2, W, H)


def _prediction(frame, seed, dim=8):
    """A frame of the synthetic sequence as an engine would give it: frame-local ids in a
    random order, one unit embedding per segment (a fixed vector per true instance)."""
    pan, segs = frame_segments(frame.instances, frame.classes, np.random.default_rng(seed))
    emb = {}
    for s in segs:
        inst = int(np.bincount(frame.instances[pan == s.id]).argmax())
        v = np.random.default_rng(inst).standard_normal(dim).astype(np.float32)
        emb[s.id] = v / np.linalg.norm(v)
    sem = np.full(pan.shape, -1, np.int32)
    for s in segs:
        sem[pan == s.id] = s.class_id
    return Prediction(semantic=sem, panoptic=pan, segments=segs, vocabulary=CLASSES,
                      vocabulary_version=1, random_weights=False, engine="test",
                      confidence=np.ones(pan.shape, np.float32), embeddings=emb)


def _depth(frame):
    """A plane at 2 m with every object 0.5 m nearer (registered, same size as the image)."""
    m = np.where(frame.instances > 0, 1.5, 2.0).astype(np.float32)
    return DepthFrame(m, INTR, "cam", 0)


@pytest.fixture(scope="module")
def sequence():
    return synthetic_sequence(frames=8, size=(H, W))


def test_track_ids_persist_and_agree_across_outputs(sequence):
    out = CameraOutputs("front", overlay_alpha=0.5, tracking=TrackerSettings())
    seen = []
    for t, frame in enumerate(sequence):
        pred = _prediction(frame, seed=t)
        prod = out.process(pred, frame.rgb, t * 0.1, depth=_depth(frame), frame_id="cam")
        ids = {s["id"] for s in prod.segments}
        assert ids == set(np.unique(prod.panoptic).tolist()) - {0}
        assert set(prod.embeddings) == ids
        assert {s["id"] for s in prod.segments_3d} <= ids
        by_id = {s["id"]: s for s in prod.segments}
        # a track id names the same true instance in every frame
        seen.append({sid: int(np.bincount(frame.instances[prod.panoptic == sid]).argmax())
                     for sid in ids if by_id[sid]["is_thing"]})
        assert all(sid > STUFF_ID_LIMIT for sid in seen[-1])
    instance_of = {}
    for frame_ids in seen:
        for sid, inst in frame_ids.items():
            assert instance_of.setdefault(sid, inst) == inst, "one id, two instances"
    # the objects that stay visible keep one id over all frames
    assert len(set(seen[0]) & set(seen[-1])) >= 3
    assert out.live_tracks == len(seen[-1]) and out.track_resets == 0


def test_reused_3d_statistics_equal_fresh_ones(sequence):
    """The statistics computed once for the tracker, relabelled, are what build_3d would
    compute from the tracked panoptic map."""
    out = CameraOutputs("front", overlay_alpha=0.5, tracking=TrackerSettings())
    for t, frame in enumerate(sequence[:3]):
        prod = out.process(_prediction(frame, t), frame.rgb, t * 0.1, depth=_depth(frame))
    fresh = build_products(out.latest.prediction, frame.rgb, CLASSES, overlay_alpha=0.5,
                           random_weights=False, depth=_depth(frame))
    assert prod.segments_3d == fresh.segments_3d and prod.segments_3d
    np.testing.assert_array_equal(prod.panoptic, fresh.panoptic)
    xyz = G.backproject(_depth(frame).metres, INTR)
    assert out.latest.centroids == {s["id"]: s["centroid"]
                                    for s in G.segment_stats(xyz, prod.panoptic)}


def test_resets_stall_and_stamp_jump(sequence):
    out = CameraOutputs("front", overlay_alpha=0.5, tracking=TrackerSettings(reset_gap=2.0))
    out.reset_tracks("activated")
    assert out.track_resets == 0, "nothing to forget yet: not counted"
    first = out.process(_prediction(sequence[0], 0), sequence[0].rgb, 10.0)
    old = {s["id"] for s in first.segments if s["id"] > STUFF_ID_LIMIT}
    out.reset_tracks("input stalled")
    assert out.track_resets == 1 and out.live_tracks == 0
    second = out.process(_prediction(sequence[0], 1), sequence[0].rgb, 10.1)
    assert not old & {s["id"] for s in second.segments}, "ids are never reused after a reset"
    out.process(_prediction(sequence[1], 2), sequence[1].rgb, 5.0)     # stamp went backwards
    assert out.track_resets == 2
    assert "backwards" in out.tracker.last_reset or "back" in out.tracker.last_reset


def test_tracking_off_keeps_engine_ids_and_config_switches_it(sequence):
    pred = _prediction(sequence[0], 0)
    off = CameraOutputs.from_config("c", make_config({}), overlay_alpha=0.5)
    assert off.tracker is None
    prod = off.process(pred, sequence[0].rgb, "name.png")      # any stamp when off
    assert {s["id"] for s in prod.segments} == {s.id for s in pred.segments}
    on = CameraOutputs.from_config("c", make_config({"tracking.enabled": True,
                                                     "tracking.min_hits": 2}),
                                   overlay_alpha=0.5)
    assert on.tracker.settings.min_hits == 2
    with pytest.raises(ValueError, match="time stamp"):
        on.process(pred, sequence[0].rgb, "name.png")


def test_locate_frame_is_the_latest_with_published_ids(sequence):
    out = CameraOutputs("front", overlay_alpha=0.5, tracking=TrackerSettings())
    assert out.locate_frame() is None
    for t, frame in enumerate(sequence[:2]):
        prod = out.process(_prediction(frame, t), frame.rgb, 3.25 + t, depth=_depth(frame),
                           frame_id="cam", wanted={"segments"})
    lf = out.locate_frame()
    assert lf.camera == "front" and lf.stamp == 4.25 and lf.vocabulary == CLASSES
    assert [s["id"] for s in lf.segments] == [s["id"] for s in prod.segments]
    assert set(lf.embeddings) == {s["id"] for s in prod.segments}
    assert set(lf.centroids) == set(lf.embeddings)
    assert out.latest.frame_id == "cam"
    assert prod.embeddings is None, "not built when not wanted"


class _Stamp:
    sec, nanosec = 7, 500_000_000


def test_stamp_seconds():
    assert stamp_seconds(_Stamp()) == 7.5 and stamp_seconds(3) == 3.0


def test_a_requested_reset_applies_before_the_next_frame(sequence):
    out = CameraOutputs("front", overlay_alpha=0.5, tracking=TrackerSettings())
    out.process(_prediction(sequence[0], 0), sequence[0].rgb, 1.0)
    out.request_reset("input stalled")
    assert out.live_tracks > 0 and out.track_resets == 0, "not before the next frame"
    out.process(_prediction(sequence[1], 1), sequence[1].rgb, 1.1)
    assert out.track_resets == 1 and out.tracker.last_reset == "input stalled"
