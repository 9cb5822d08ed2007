"""Segment embeddings (embeddings.enabled) per engine, on tiny random weights: one unit
vector per segment in the text space, equal to the documented pooling, none when off
(and then not computed at all)."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from ovseg_ros import load_segmenter
from ovseg_ros.core.types import Segment
from ovseg_ros.engines.fcclip import FCClipEngine
from ovseg_ros.engines.ovseg import segment_embeddings as ovseg_segment_embeddings
from ovseg_ros.presets import TINY_FCCLIP

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
VOCAB = ["person", "wall", "pallet", "floor"]


def _yaml(name):
    return yaml.safe_load((CONFIGS / name).read_text())


def _configs(tmp):
    maft = {"engine": "maftplus", "random_init": True, "precision": "fp32",
            "maftplus.clip_model": "ovseg-tiny-ConvNeXt", "maftplus.short_side": 64,
            "maftplus.max_size": 96, "maftplus.object_mask_threshold": 0.0,
            "maftplus.overlap_threshold": 0.0}
    fc = dict(TINY_FCCLIP, precision="fp32", **{"fcclip.object_mask_threshold": 0.0})
    out = {"proxyclip": _yaml("tiny_proxyclip.yaml"), "fcclip": fc, "maftplus": maft,
           "ovseg": _yaml("tiny_ovseg.yaml")}
    for cfg in out.values():
        cfg.update({"text_cache_dir": str(tmp), "vocabulary": VOCAB,
                    "embeddings.enabled": True})
    # the random MAFT+ head calls every query void over a few classes; over many, some win
    out["maftplus"]["vocabulary"] = [f"class {i}" for i in range(30)]
    return out


@pytest.fixture(scope="module")
def rgb():
    rng = np.random.default_rng(3)
    img = np.zeros((72, 96, 3), np.uint8)
    img[:, :40] = (200, 40, 40)
    img[:36, 40:] = (30, 180, 60)
    img[36:, 40:] = (40, 60, 220)
    return np.clip(img + rng.integers(-25, 26, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def configs(tmp_path_factory):
    return _configs(tmp_path_factory.mktemp("text"))


@pytest.mark.parametrize("engine", ["proxyclip", "fcclip", "maftplus", "ovseg"])
def test_one_unit_vector_per_segment_in_the_text_space(configs, rgb, engine):
    seg = load_segmenter(configs[engine])
    pred = seg.predict(rgb)
    assert pred.segments, "the frame must have segments for the test to mean anything"
    dim = seg.vocabulary.embeddings.shape[1]
    assert sorted(pred.embeddings) == sorted(s.id for s in pred.segments)
    for vec in pred.embeddings.values():
        assert vec.shape == (dim,) and vec.dtype == np.float32
        assert abs(float(np.linalg.norm(vec)) - 1.0) < 1e-5
    assert "embeddings" in pred.timings
    # off: no embeddings and the pooling never runs (zero cost)
    off = load_segmenter(dict(configs[engine], **{"embeddings.enabled": False}))
    calls = []
    if engine == "proxyclip":
        off.engine._segment_embeddings = lambda *a: calls.append(a)
    elif engine == "ovseg":
        import ovseg_ros.engines.ovseg as mod
        original, mod.segment_embeddings = mod.segment_embeddings, lambda *a: calls.append(a)
    else:
        off.engine.segment_embeddings = lambda *a: calls.append(a)
    try:
        p_off = off.predict(rgb)
    finally:
        if engine == "ovseg":
            mod.segment_embeddings = original
    assert p_off.embeddings is None and not calls and "embeddings" not in p_off.timings
    np.testing.assert_array_equal(p_off.panoptic, pred.panoptic)


def test_proxyclip_embedding_is_the_mean_of_the_stitched_dense_features(configs, rgb):
    """The operator-based pooling equals stitching every feature channel to full size and
    averaging over the segment's pixels (done here the slow way)."""
    seg = load_segmenter(configs["proxyclip"])
    eng = seg.engine
    pred = seg.predict(rgb)
    frame = eng._frame_crops(rgb)
    feats = eng._window_features([frame], {})[0].float()
    stitch = eng._stitch.get(eng._stitch_layout(frame, feats), 1.0, feats.device)
    full = stitch(stitch.block_matrix(feats))                      # E x H x W
    for s in pred.segments:
        mask = torch.from_numpy(pred.panoptic == s.id)
        expect = F.normalize(full[:, mask].mean(1), dim=0).numpy()
        np.testing.assert_allclose(pred.embeddings[s.id], expect, atol=1e-5)


def test_fcclip_pools_the_queries_of_each_segment():
    clip = torch.randn(6, 8)
    unit = F.normalize(clip, dim=-1)
    out = FCClipEngine.segment_embeddings(clip, {1: [4], 2: [0, 3]})
    np.testing.assert_allclose(out[1], unit[4].numpy(), atol=1e-6)        # a thing: its query
    merged = F.normalize(unit[[0, 3]].mean(0), dim=0).numpy()             # merged stuff
    np.testing.assert_allclose(out[2], merged, atol=1e-6)


def test_fcclip_segments_map_to_their_queries(configs, rgb):
    """A thing segment's embedding is exactly one query's normalised CLIP embedding."""
    seg = load_segmenter(configs["fcclip"])
    pred = seg.predict(rgb)
    eng = seg.engine
    x, _ = eng.preprocess(rgb)
    with torch.no_grad():
        clip = F.normalize(eng.backend(x)[2][0].float(), dim=-1).numpy()
    things = [s for s in pred.segments if s.is_thing]
    assert things, "the frame must have thing segments for the test to mean anything"
    for s in things:
        assert float((clip @ pred.embeddings[s.id]).max()) == pytest.approx(1.0, abs=1e-5)


def test_ovseg_weights_crops_by_mask_overlap():
    crop = F.normalize(torch.randn(3, 8), dim=-1)
    masks = torch.zeros(3, 10, 10)
    masks[0, :, :5] = 1.0          # proposal 0 covers the left half
    masks[1, :, 5:] = 1.0          # proposal 1 the right half
    masks[2, :, 5:] = 0.5          # proposal 2 half-heartedly the right half
    pan = np.zeros((20, 20), np.int32)        # at twice the proposals' resolution
    pan[:, :10], pan[:, 10:] = 1, 2
    segs = [Segment(1, 0, True, 1.0, 200, (0, 0, 10, 20)),
            Segment(2, 1, False, 1.0, 200, (10, 0, 10, 20))]
    out = ovseg_segment_embeddings(crop, masks, pan, segs)
    np.testing.assert_allclose(out[1], crop[0].numpy(), atol=1e-6)
    expect = F.normalize(crop[1] + 0.5 * crop[2], dim=0).numpy()
    np.testing.assert_allclose(out[2], expect, atol=1e-6)
