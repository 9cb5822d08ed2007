"""Evaluation states: save/load round trip, exact merging, refusals."""
import numpy as np
import pytest

from ovseg_ros.eval.state import EvalState, StateError

ENGINE = {"engine": "proxyclip", "clip_weights": "a", "device": "cpu", "threads": 2}


def _state(shard, keys, engine=ENGINE, seed=0):
    st = EvalState(classes=["a", "b"], is_thing=[True, False], source={"kind": "x"},
                   shard=list(shard), engine=dict(engine))
    rng = np.random.default_rng(seed)
    for k in keys:
        st.semantic_metric.update(rng.integers(0, 2, (4, 4)), rng.integers(0, 2, (4, 4)))
        st.mark_done(k)
    st.finished = True
    return st


def test_save_load_round_trip(tmp_path):
    st = _state((1, 3), ["k1", "k2"])
    st.save(tmp_path / "s.npz")
    back = EvalState.load(tmp_path / "s.npz")
    assert back.done == ["k1", "k2"] and back.shard == [1, 3] and back.finished
    assert np.array_equal(back.semantic_metric.confusion, st.semantic_metric.confusion)
    assert back.results()["semantic"] == st.results()["semantic"]
    assert not list(tmp_path.glob("*.tmp"))


def test_merge_complete_and_refusals():
    a, b = _state((0, 2), ["k0"], seed=1), _state((1, 2), ["k1"], seed=2)
    m = EvalState.merge([a, b])
    assert m.finished and m.done == ["k0", "k1"]
    assert np.array_equal(m.semantic_metric.confusion,
                          a.semantic_metric.confusion + b.semantic_metric.confusion)
    assert not EvalState.merge([a]).finished            # shard 1/2 missing: not complete
    with pytest.raises(StateError, match="overlap"):
        EvalState.merge([a, _state((1, 2), ["k0"])])
    other = dict(ENGINE, clip_weights="b")
    with pytest.raises(StateError, match="engine differ"):
        EvalState.merge([a, _state((1, 2), ["k1"], engine=other)])
    # machines may differ in device and threads
    EvalState.merge([a, _state((1, 2), ["k1"], engine=dict(ENGINE, device="cuda", threads=8))])


def test_unreadable_state(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"junk")
    with pytest.raises(StateError, match="cannot read evaluation state"):
        EvalState.load(tmp_path / "bad.npz")
