"""locate (ovseg_ros/core/locate.py and Segmenter.locate): ranking on constructed
embeddings, the query LRU, every bad input, and the real text path of a tiny segmenter."""
import numpy as np
import pytest

from ovseg_ros import load_segmenter
from ovseg_ros.core.locate import LocateError, LocateFrame, Locator
from ovseg_ros.core.types import Segment

D = 8


def _unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v)


def _frames(query_vec):
    """Camera "left" holds a segment at cosine 0.9 and one at 0.1; "right" one at 0.5."""
    other = _unit(np.r_[np.zeros(D - 1), 1.0])
    def mix(c):
        return _unit(c * query_vec + np.sqrt(1 - c * c) * other)
    left = LocateFrame(camera="left", stamp=1.0,
                       segments=[Segment(3, 0, True, 0.8, 100, (1, 2, 3, 4)),
                                 Segment(4, 1, True, 0.7, 50, (5, 6, 7, 8))],
                       embeddings={3: mix(0.9), 4: mix(0.1)}, vocabulary=("mug", "chair"),
                       centroids={3: (0.1, 0.2, 1.5)})
    right = LocateFrame(camera="right", stamp=2.0,
                        segments=[Segment(70001, 1, True, 0.6, 10, (0, 0, 2, 2))],
                        embeddings={70001: mix(0.5)}, vocabulary=("mug", "chair"))
    return {"left": left, "right": right, "idle": None}


@pytest.fixture
def locator():
    q = _unit(np.arange(1, D + 1) * (np.arange(D) < D - 1))
    calls = []
    loc = Locator(lambda text: calls.append(text) or q)
    loc.calls, loc.q = calls, q
    return loc


def test_ranking_best_first_across_cameras(locator):
    frames = _frames(locator.q)
    out = locator.locate("red mug", frames, top_k=3)
    assert [(m.camera, m.id) for m in out] == [("left", 3), ("right", 70001), ("left", 4)]
    assert [round(m.score, 4) for m in out] == [0.9, 0.5, 0.1]
    best = out[0]
    assert (best.class_name, best.class_score, best.bbox, best.centroid, best.stamp) == \
        ("mug", pytest.approx(0.8), (1, 2, 3, 4), (0.1, 0.2, 1.5), 1.0)
    assert out[1].centroid is None
    assert [m.id for m in locator.locate("red mug", frames, top_k=1)] == [3]
    assert [m.id for m in locator.locate("red mug", frames, top_k=5, camera="right")] == [70001]


def test_warm_query_costs_no_encoding(locator):
    frames = _frames(locator.q)
    locator.locate("red mug", frames, top_k=2)
    locator.locate("  red mug ", frames, top_k=2)         # same text once stripped
    assert locator.calls == ["red mug"] and locator.encoded == 1
    locator.locate("blue cup", frames, top_k=2)
    assert locator.encoded == 2


@pytest.mark.parametrize("query,top_k,camera,message", [
    ("", 3, "", "query is empty"),
    ("   ", 3, "", "query is empty"),
    ("x" * 201, 3, "", "201 characters, more than the limit of 200"),
    ("red\x00mug", 3, "", "non-printable"),
    (b"red mug", 3, "", "query must be text"),
    ("mug", 0, "", r"top_k must be in 1..100, got 0"),
    ("mug", 10 ** 6, "", r"top_k must be in 1..100, got 1000000"),
    ("mug", 2.5, "", "top_k must be an integer"),
    ("mug", 3, "front", "camera 'front' does not exist; cameras: \\['idle', 'left', 'right'\\]"),
    ("mug", 3, "idle", "no frame yet from camera 'idle'"),
])
def test_bad_input_gets_a_clear_error(locator, query, top_k, camera, message):
    with pytest.raises(LocateError, match=message):
        locator.locate(query, _frames(locator.q), top_k=top_k, camera=camera)
    assert locator.calls == [], "nothing encoded for a refused request"


def test_no_frames_and_no_embeddings(locator):
    with pytest.raises(LocateError, match="no frame yet"):
        locator.locate("mug", {"": None}, top_k=1)
    bare = LocateFrame("", 0.0, [Segment(1, 0, True, 1.0, 1, (0, 0, 1, 1))], None, ("mug",))
    with pytest.raises(LocateError, match="embeddings.enabled"):
        locator.locate("mug", {"": bare}, top_k=1)


def test_segmenter_locate_uses_the_vocabulary_text_path(tiny_config, rgb_frame):
    seg = load_segmenter(dict(tiny_config, **{"embeddings.enabled": True}))
    pred = seg.predict(rgb_frame)
    frame = LocateFrame("", 0.5, pred.segments, pred.embeddings, pred.vocabulary)
    vocab_before = seg.vocabulary
    out = seg.locate(seg.vocabulary.names[0], {"": frame}, top_k=100)
    assert len(out) == len(pred.segments) and out[0].score >= out[-1].score
    # the query is embedded exactly like a vocabulary class (same templates, encoder)
    text = seg.vocabulary.embeddings[0].numpy()
    for m in out:
        assert m.score == pytest.approx(float(pred.embeddings[m.id] @ text), abs=1e-5)
    assert seg.vocabulary is vocab_before, "the vocabulary stays as it is"
    encoded = seg._text.prompts_encoded
    seg.locate("a red mug", {"": frame}, top_k=1)
    after_cold = seg._text.prompts_encoded
    seg.locate("a red mug", {"": frame}, top_k=1)
    assert after_cold > encoded and seg._text.prompts_encoded == after_cold
    off = load_segmenter(tiny_config)
    with pytest.raises(LocateError, match="embeddings.enabled"):
        off.locate("mug", {"": frame}, top_k=1)
