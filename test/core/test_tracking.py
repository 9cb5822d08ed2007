"""The per-camera tracker (ovseg_ros/core/tracking.py): births, deaths, crossing and hidden
objects, class and vocabulary changes, stuff ids, resets, label smoothing, and the
Prediction rewrite."""
import numpy as np
import pytest

from ovseg_ros.config import make_config
from ovseg_ros.core.tracking import (STUFF_ID_LIMIT, Tracker, TrackerSettings, TrackUpdate,
                                     apply_tracks, stuff_id)
from ovseg_ros.core.types import Prediction, Segment
from ovseg_ros.eval.tracking_sequence import (CLASSES, FLOOR_ID, frame_segments,
                                              synthetic_sequence)

H, W = 60, 80


def _frame(objects, h=H, w=W):
    """objects: (segment id, class id, x, y, size, is_thing) squares -> (panoptic, segments)."""
    pan = np.zeros((h, w), np.int32)
    segs = []
    for sid, cls, x, y, size, thing in objects:
        pan[y:y + size, x:x + size] = sid
    for sid, cls, x, y, size, thing in objects:
        m = pan == sid
        if not m.any():
            continue
        ys, xs = np.nonzero(m)
        segs.append(Segment(sid, cls, thing, 0.9, int(m.sum()),
                            (int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1,
                             int(np.ptp(ys)) + 1)))
    return pan, segs


def _settings(**kw):
    return TrackerSettings(**kw)


def test_settings_come_from_the_config_group():
    cfg = make_config({"tracking.min_hits": 3, "tracking.max_misses": 7})
    s = TrackerSettings.from_config(cfg)
    assert (s.min_hits, s.max_misses, s.label_smoothing) == (3, 7, 0)
    assert cfg["tracking.enabled"] is False and cfg["embeddings.enabled"] is False


def test_birth_after_n_hits():
    tr = Tracker(_settings(min_hits=3))
    ids = []
    for t in range(4):
        pan, segs = _frame([(1, 0, 10 + 2 * t, 10, 12, True)])
        ids.append(tr.update(pan, segs, t * 0.1).ids[1])
    assert ids[:2] == [0, 0], "tentative for the first two frames"
    assert ids[2] == ids[3] > STUFF_ID_LIMIT
    # a tentative track that misses once dies: the object comes back as a new tentative one
    tr2 = Tracker(_settings(min_hits=2))
    pan, segs = _frame([(1, 0, 10, 10, 12, True)])
    tr2.update(pan, segs, 0.0)
    tr2.update(*_frame([]), 0.1)
    assert tr2.update(pan, segs, 0.2).ids[1] == 0


def test_death_after_m_misses():
    tr = Tracker(_settings(max_misses=2))
    pan, segs = _frame([(1, 0, 10, 10, 12, True)])
    first = tr.update(pan, segs, 0.0).ids[1]
    for t in (1, 2):
        tr.update(*_frame([]), t * 0.1)
    assert tr.update(pan, segs, 0.3).ids[1] == first, "2 misses: still alive"
    for t in (4, 5, 6):
        tr.update(*_frame([]), t * 0.1)
    assert tr.update(pan, segs, 0.7).ids[1] != first, "3 misses: dead, a new id"


def test_crossing_objects_keep_their_ids():
    """Two squares of one class swap sides, overlapping in the middle; the nearer one
    (painted last) hides most of the other."""
    tr = Tracker()
    seen = {}
    for t in range(21):
        a = (1 + (t * 7) % 3, 0, 5 + 3 * t, 20, 14, True)      # frame-local ids shuffle
        b = (10 + t % 2, 0, 65 - 3 * t, 24, 14, True)
        pan, segs = _frame([a, b])
        up = tr.update(pan, segs, t * 0.1)
        for name, obj in (("a", a), ("b", b)):
            if obj[0] in up.ids:
                seen.setdefault(name, set()).add(up.ids[obj[0]])
    assert len(seen["a"]) == 1 and len(seen["b"]) == 1 and seen["a"] != seen["b"]


def test_full_occlusion_keeps_the_id():
    """A moving square hidden for 4 frames comes back where its motion says."""
    tr = Tracker(_settings(max_misses=5))
    ids = set()
    for t in range(16):
        hidden = 6 <= t < 10
        pan, segs = _frame([] if hidden else [(1, 0, 4 + 4 * t, 20, 10, True)])
        up = tr.update(pan, segs, t * 0.1)
        if not hidden:
            ids.add(up.ids[1])
    assert len(ids) == 1


def test_class_change_penalty():
    pan, segs = _frame([(1, 0, 10, 10, 12, True)])
    pan2, segs2 = _frame([(1, 1, 11, 10, 12, True)])
    tr = Tracker(_settings(class_change_penalty=0.5))
    a = tr.update(pan, segs, 0.0).ids[1]
    assert tr.update(pan2, segs2, 0.1).ids[1] == a, "IoU ~0.9 - 0.5 >= 0.1: same object"
    tr = Tracker(_settings(class_change_penalty=1.0))
    a = tr.update(pan, segs, 0.0).ids[1]
    assert tr.update(pan2, segs2, 0.1).ids[1] != a, "penalty 1: never across classes"


def test_vocabulary_change_keeps_surviving_names():
    tr = Tracker()
    pan, segs = _frame([(1, 0, 5, 5, 12, True), (2, 1, 40, 30, 12, True)])
    first = tr.update(pan, segs, 0.0, vocabulary=["mug", "chair"]).ids
    # new vocabulary: "chair" survives at index 0, "mug" is gone (its pixels now "box")
    pan, segs = _frame([(1, 1, 5, 5, 12, True), (2, 0, 40, 30, 12, True)])
    after = tr.update(pan, segs, 0.1, vocabulary=["chair", "box"]).ids
    assert after[2] == first[2], "chair keeps its id under its new class id"
    assert after[1] != first[1] and after[1] > max(first.values()), "mug's track died"
    assert sorted(tr.tracks.values()) == ["box", "chair"]


def test_stuff_gets_class_derived_ids():
    tr = Tracker()
    pan, segs = _frame([(1, 3, 0, 0, 30, False), (2, 0, 40, 30, 12, True)])
    up = tr.update(pan, segs, 0.0)
    assert up.ids[1] == stuff_id(3) == 4 and up.ids[2] > STUFF_ID_LIMIT
    pan, segs = _frame([(7, 3, 0, 0, 30, False)])
    assert tr.update(pan, segs, 0.1).ids[7] == 4


@pytest.mark.parametrize("stamps,resets", [((0.0, 0.1, 0.05), True),     # backwards
                                           ((0.0, 0.1, 5.0), True),      # gap > reset_gap
                                           ((0.0, 0.1, 0.2), False)])
def test_reset_on_stamp_jump(stamps, resets):
    tr = Tracker(_settings(reset_gap=2.0))
    pan, segs = _frame([(1, 0, 10, 10, 12, True)])
    ids = [tr.update(pan, segs, s).ids[1] for s in stamps]
    assert ids[0] == ids[1]
    assert (ids[2] != ids[1]) == resets
    assert bool(tr.last_reset) == resets
    tr.reset()
    assert tr.tracks == {} and tr.update(pan, segs, 9.0).ids[1] > ids[2], "ids never reused"


def test_label_smoothing_votes_over_the_track():
    tr = Tracker(_settings(label_smoothing=5, class_change_penalty=0.0))
    classes = [0, 0, 0, 1, 0, 1, 1, 1, 1]
    smoothed = []
    for t, c in enumerate(classes):
        pan, segs = _frame([(1, c, 10, 10, 12, True)])
        up = tr.update(pan, segs, t * 0.1, vocabulary=["mug", "cup"])
        smoothed.append(up.classes.get(1, c))
    # a one-frame flicker is voted away; a lasting change wins once it is the majority
    assert smoothed == [0, 0, 0, 0, 0, 0, 1, 1, 1]
    off = Tracker()
    pan, segs = _frame([(1, 1, 10, 10, 12, True)])
    assert off.update(pan, segs, 0.0).classes == {}


def test_depth_and_embedding_cues_reidentify():
    """Without overlap (a jump), the 3D centroid and the embedding still match the object;
    without them it is a new track."""
    emb = np.eye(4, dtype=np.float32)
    pan, segs = _frame([(1, 0, 2, 2, 10, True)])
    far, fsegs = _frame([(1, 0, 60, 40, 10, True)])
    tr = Tracker()
    a = tr.update(pan, segs, 0.0, centroids={1: (0, 0, 1.0)}, embeddings={1: emb[0]}).ids[1]
    b = tr.update(far, fsegs, 0.1, centroids={1: (0.05, 0, 1.0)}, embeddings={1: emb[0]}).ids[1]
    assert a == b
    tr = Tracker()
    a = tr.update(pan, segs, 0.0).ids[1]
    assert tr.update(far, fsegs, 0.1).ids[1] != a


def test_synthetic_sequence_ground_truth_tracks_without_switches():
    seq = synthetic_sequence(frames=60)
    tr = Tracker()
    rng = np.random.default_rng(0)
    owner = {}
    for t, fr in enumerate(seq):
        pan, segs = frame_segments(fr.instances, fr.classes, rng)
        up = tr.update(pan, segs, t * 0.1, vocabulary=CLASSES)
        for s in segs:
            gt = int(np.bincount(fr.instances[pan == s.id]).argmax())
            if gt != FLOOR_ID:
                owner.setdefault(gt, set()).add(up.ids[s.id])
    assert all(len(v) == 1 for v in owner.values()), owner


def test_apply_tracks_rewrites_the_prediction():
    pan, segs = _frame([(1, 0, 5, 5, 10, True), (2, 2, 30, 30, 10, False),
                        (3, 1, 50, 5, 10, True)])
    sem = np.full(pan.shape, 65535, np.int32)
    for s in segs:
        sem[pan == s.id] = s.class_id
    pred = Prediction(semantic=sem, panoptic=pan, segments=segs, vocabulary=("a", "b", "c"),
                      vocabulary_version=1, random_weights=False, engine="x",
                      confidence=np.ones(pan.shape, np.float32),
                      embeddings={1: np.ones(2, np.float32), 2: np.zeros(2, np.float32),
                                  3: np.ones(2, np.float32)})
    up = TrackUpdate(ids={1: 70000, 2: 3, 3: 0}, classes={1: 1})
    out = apply_tracks(pred, up)
    assert [(s.id, s.class_id) for s in out.segments] == [(70000, 1), (3, 2)]
    assert set(np.unique(out.panoptic)) == {0, 3, 70000}
    assert (out.panoptic[pan == 3] == 0).all(), "tentative segment unpublished"
    assert (out.semantic[pan == 1] == 1).all() and (out.semantic[pan == 3] == 1).all()
    assert sorted(out.embeddings) == [3, 70000]
    assert (pred.panoptic == pan).all() and pred.segments[0].id == 1, "input unchanged"
    with pytest.raises(ValueError, match="no id for segments"):
        apply_tracks(pred, TrackUpdate(ids={1: 5}))


def test_vectorised_cue_affinity_equals_the_pairwise_one():
    """Pairs whose boxes cannot overlap are scored all at once (_cue_affinity); it must
    equal the per-pair _affinity without the mask cue, with cues present or missing."""
    from ovseg_ros.core.tracking import _Detection

    rng = np.random.default_rng(3)
    tr = Tracker(_settings(depth_weight=0.7, embedding_weight=1.3, class_change_penalty=0.2))
    objs = [(i + 1, i % 3, 5 + 12 * i, 5, 8, True) for i in range(5)]
    pan, segs = _frame(objs, w=120)
    emb = {s.id: v / np.linalg.norm(v) for s, v in zip(segs, rng.standard_normal((5, 16)))}
    cen = {s.id: rng.uniform(0, 2, 3) for s in segs if s.id != 2}       # one without depth
    tr.update(pan, segs, 0.0, centroids=cen, embeddings={k: v for k, v in emb.items()
                                                           if k != 4})
    dets = []
    for s in segs:
        e = rng.standard_normal(16)
        dets.append(_Detection(seg=s, name=str((s.class_id + s.id) % 3), mask=None,
                               center=None, centroid=None if s.id == 3 else rng.uniform(0, 2, 3),
                               embedding=(e / np.linalg.norm(e)).astype(np.float32)))
    got = tr._cue_affinity(dets)
    for di, det in enumerate(dets):
        for ti, track in enumerate(tr._tracks):
            want = tr._affinity(track, det, False, (0, 0, 0, 0))
            assert got[di, ti] == pytest.approx(want, abs=1e-6)
