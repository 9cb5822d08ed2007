"""Bag-to-bag inference tracks as the node does (one CameraOutputs per image topic): track
ids in panoptic and segments, the same on a second run and kept over a steady scene; the
segment_embeddings topic (fp16 unit rows, ids of the segments) when embeddings are on."""
from pathlib import Path

import numpy as np
import pytest

from ovseg_ros.core.tracking import STUFF_ID_LIMIT
from ovseg_ros.eval import bags as B
from ovseg_ros.eval.tracking_eval import TrackFrame, write_sequence_bag
from ovseg_ros.eval.tracking_sequence import CLASSES, IS_THING, synthetic_sequence

STEADY = 3          # the first frame repeated: a scene that does not move
TOPIC = "/synthetic_tracks/image_raw"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sequence_bag(tmp_path_factory):
    seq = synthetic_sequence(frames=4)
    frames = [seq[0]] * STEADY + seq[1:]
    track_frames = [TrackFrame(f.rgb, f.instances, f.classes, i * 0.1, f.occluded)
                    for i, f in enumerate(frames)]
    return write_sequence_bag(tmp_path_factory.mktemp("bags") / "seq", track_frames)


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    import yaml

    from ovseg_ros import load_segmenter

    cfg = yaml.safe_load((ROOT / "test" / "configs" / "tiny_proxyclip.yaml").read_text())
    cfg.update(vocabulary=list(CLASSES), vocabulary_is_thing=list(IS_THING),
               text_cache_dir=str(tmp_path_factory.mktemp("text_cache")),
               **{"tracking.enabled": True, "embeddings.enabled": True})
    return load_segmenter(cfg)


def _read(path):
    store = B.make_typestore()
    reader = B.open_reader(path)
    out = {}
    try:
        for conn, _, raw in reader.messages():
            if conn.topic.startswith("/ovseg/"):
                out.setdefault(conn.topic.rsplit("/", 1)[-1], []).append(
                    store.deserialize_cdr(raw, conn.msgtype))
    finally:
        reader.close()
    return out


def _ids(run):
    return [(sorted(np.unique(B.image_to_numpy(p)).tolist()), [s.id for s in m.segments])
            for p, m in zip(run["panoptic"], run["segments"])]


def test_bag_ids_are_tracks_repeatable_and_persistent(sequence_bag, segmenter, tmp_path):
    from ovseg_ros.eval.bag_infer import infer_bag

    runs = []
    for k in range(2):
        res = infer_bag(segmenter, sequence_bag, tmp_path / f"out{k}", TOPIC, progress=False)
        assert res["topics"]["/ovseg/segment_embeddings"] == res["frames"] == STEADY + 3
        runs.append(_read(tmp_path / f"out{k}"))
    first, second = (_ids(r) for r in runs)
    assert first == second, "a second run gives the same ids"
    for pan_ids, seg_ids in first:
        assert set(pan_ids) - {0} == set(seg_ids)
    things = [i for i in first[0][1] if i > STUFF_ID_LIMIT]
    assert things, "thing segments carry track ids"
    assert all(ids == first[0] for ids in first[:STEADY]), "a steady scene keeps its ids"
    steady = [B.image_to_numpy(p) for p in runs[0]["panoptic"][:STEADY]]
    assert all(np.array_equal(steady[0], p) for p in steady[1:])


def test_bag_embeddings_topic(sequence_bag, segmenter, tmp_path):
    from ovseg_ros.eval.bag_infer import infer_bag

    infer_bag(segmenter, sequence_bag, tmp_path / "out", TOPIC, progress=False, limit=2)
    run = _read(tmp_path / "out")
    assert len(run["segment_embeddings"]) == 2
    for emb, segs in zip(run["segment_embeddings"], run["segments"]):
        assert emb.header.stamp == segs.header.stamp
        assert emb.space == segmenter.embedding_space() and emb.dtype == "float16"
        assert list(emb.ids) == sorted(s.id for s in segs.segments)
        rows = np.frombuffer(bytes(emb.data), "<f2").reshape(len(emb.ids), emb.dim)
        np.testing.assert_allclose(np.linalg.norm(rows.astype(np.float32), axis=1), 1.0,
                                   atol=2e-3)
