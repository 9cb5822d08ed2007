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


def test_non_state_file_is_named_not_a_pickle(tmp_path):
    """Regression: a text file passed to `merge` gave numpy's 'contains pickled (object)
    data ... load it unsafely' advice instead of saying it is no state file."""
    (tmp_path / "classes.txt").write_text("sky\ngrass\n")
    with pytest.raises(StateError, match="not an .npz state") as err:
        EvalState.load(tmp_path / "classes.txt")
    assert "pickle" not in str(err.value)


def test_merged_state_merges_again_with_the_remaining_shards(tmp_path):
    """Regression: a merge of shards 0 and 1 of 3 (saved as state_merged.npz) merged with
    shard 2 stayed 'partial', because the merged state only said 'shard 0/1'."""
    a, b, c = (_state((i, 3), [f"k{i}"], seed=i) for i in range(3))
    ab = EvalState.merge([a, b])
    assert not ab.finished
    ab.save(tmp_path / "state_merged.npz")
    again = EvalState.merge([EvalState.load(tmp_path / "state_merged.npz"), c])
    once = EvalState.merge([a, b, c])
    assert again.finished and once.finished and again.done == once.done
    assert again.extra["merged_from"] == [[0, 3], [1, 3], [2, 3]]
    assert np.array_equal(again.semantic_metric.confusion, once.semantic_metric.confusion)
    # an unfinished shard inside an earlier merge keeps the result partial
    b.finished = False
    assert not EvalState.merge([EvalState.merge([a, b]), c]).finished
