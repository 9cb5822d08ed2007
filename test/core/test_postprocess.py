"""Class-chunked post-processing (ovseg_ros/core/postprocess.py) against the full volume,
and the engines' streamed labels against their full-volume path."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ovseg_ros import load_segmenter
from ovseg_ros.core import postprocess as pp
from stitch_reference import step_chain


def random_vocab(num_classes: int, seed: int):
    """synonym_class for classes of 1..3 synonyms, grouped by class (as parsed)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 4, num_classes)
    return torch.tensor(np.repeat(np.arange(num_classes), counts), dtype=torch.long)


def full_reference(z: torch.Tensor, synonym_class: torch.Tensor, k: int):
    """Today's fp32 path written out: softmax over synonyms, max over each class's
    synonyms, then max / argmax over classes."""
    probs = z.softmax(0)
    cls = torch.stack([probs[synonym_class == c].max(0).values for c in range(k)])
    conf, labels = cls.max(0)
    return labels, conf, cls


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
def test_streamed_softmax_argmax_equals_full_volume(chunk):
    k = 300
    sc = random_vocab(k, 0)
    g = torch.Generator().manual_seed(1)
    # cosine-like logits times logit_scale 40: close competitors, sharp softmax
    z = torch.rand(sc.numel(), 24, 31, generator=g) * 0.3 * 40.0
    want_labels, want_conf, want_vol = full_reference(z, sc, k)
    labels, conf, vol = pp.softmax_argmax((c.clone() for c in z.split(chunk)), sc, k)
    assert vol is None
    torch.testing.assert_close(labels, want_labels, rtol=0, atol=0)
    torch.testing.assert_close(conf, want_conf, rtol=1e-5, atol=1e-7)
    # with the volume asked for: the same labels, and the reference's volume
    labels2, conf2, vol2 = pp.softmax_argmax((c.clone() for c in z.split(chunk)), sc, k,
                                             scores=True)
    torch.testing.assert_close(labels2, labels, rtol=0, atol=0)
    torch.testing.assert_close(vol2, want_vol, rtol=1e-6, atol=1e-7)


def test_streamed_argmax_breaks_ties_like_the_full_argmax():
    sc = torch.tensor([0, 1, 1, 2, 3])
    z = torch.zeros(5, 2, 3)
    z[1] = 5.0
    z[3] = 5.0                      # tie between class 1 and class 2, across chunks
    z[4, 0, 0] = 9.0
    labels, conf, _ = pp.softmax_argmax(iter([z[:2].clone(), z[2:].clone()]), sc, 4)
    want, _, _ = full_reference(z, sc, 4)
    torch.testing.assert_close(labels, want, rtol=0, atol=0)
    assert labels[0, 1] == 1 and labels[0, 0] == 3


def test_prob_thd_on_streamed_confidence():
    sc = random_vocab(50, 3)
    z = torch.randn(sc.numel(), 10, 12, generator=torch.Generator().manual_seed(4)) * 3
    labels, conf, _ = pp.softmax_argmax(iter(z.clone().split(9)), sc, 50)
    thd = float(conf.median())
    out = pp.apply_prob_thd(labels, conf, thd)
    low = conf < thd
    assert low.any() and (~low).any()
    assert (out[low] == 0).all() and torch.equal(out[~low], labels[~low])
    assert pp.apply_prob_thd(labels, conf, 0.0) is labels


def test_streaming_input_errors_are_clear():
    with pytest.raises(ValueError, match="non-decreasing"):
        pp.SoftmaxArgmax(torch.tensor([1, 0]), 2)
    with pytest.raises(ValueError, match="outside"):
        pp.SoftmaxArgmax(torch.tensor([0, 2]), 2)
    acc = pp.SoftmaxArgmax(torch.tensor([0, 1, 1]), 2)
    acc.update(torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="expected 3"):
        acc.result()
    with pytest.raises(ValueError, match="got 5 synonyms"):
        acc.update(torch.zeros(3, 3, 3))


def mask_reference(probs, masks):
    vol = torch.einsum("qc,qhw->chw", probs, masks)
    vol = vol / vol.sum(0, keepdim=True).clamp_min(1e-12)
    conf, labels = vol.max(0)
    return labels, conf, vol


@pytest.mark.parametrize("k,budget", [(6, 1 << 20), (90, 1 << 20), (90, 200), (90, 7 * 21),
                                      (90, 90 * 5)])        # tiles of 5 pixels, 204 in all
def test_mask_semantic_in_class_chunks_equals_full_volume(k, budget):
    q, h, w = 20, 12, 17
    g = torch.Generator().manual_seed(k + budget)
    probs = torch.rand(q, k + 1, generator=g).softmax(-1)[:, :-1]
    logits = torch.randn(q, h, w, generator=g) * 4
    calls = []

    def masks(i0, i1):
        calls.append((i0, i1))
        return logits[i0:i1].sigmoid()

    got = pp.mask_semantic(probs, masks, (h, w), budget=budget)
    assert sorted(calls) == sorted(set(calls))          # every query chunk computed once
    assert max(i1 - i0 for i0, i1 in calls) * h * w <= max(budget, h * w)
    labels, conf, vol = mask_reference(probs, logits.sigmoid())
    torch.testing.assert_close(got.labels, labels, rtol=0, atol=0)
    torch.testing.assert_close(got.confidence, conf, rtol=1e-5, atol=1e-7)
    assert got.scores is None
    full = pp.mask_semantic(probs, masks, (h, w), budget=budget, scores=True)
    torch.testing.assert_close(full.labels, labels, rtol=0, atol=0)
    torch.testing.assert_close(full.scores, vol, rtol=1e-5, atol=1e-7)


def test_class_chunk_bounds():
    assert pp.class_chunk(847, 640 * 480, 1 << 23) == 27
    assert pp.class_chunk(5, 10, 1 << 23) == 5
    assert pp.class_chunk(10, 1 << 30, 1) == 1
    with pytest.raises(ValueError):
        pp.class_chunk(0, 10)


# --- engines ---------------------------------------------------------------------------
MANY = [f"thing {i}" if i % 3 else f"thing {i},item {i},object {i}" for i in range(120)]


def former_logits(seg, rgb):
    """The former fp32 path's logits: window features, the cosine on the grid, then the
    step-by-step chain (upsample, stitch, resize) over all synonyms at once."""
    eng = seg.engine
    frame = eng._frame_crops(rgb)
    feats = eng._window_features([frame], {})[0]
    low = torch.einsum("behw,se->bshw", feats, seg.vocabulary.embeddings)
    left, _, top, _ = frame["pad"]
    return step_chain(low, tuple(frame["crops"].shape[-2:]), (top, left), frame["windows"],
                      frame["resized"], frame["size"])


def test_proxyclip_streamed_labels_equal_full_fp32_path(tiny_config, rgb_frame, monkeypatch):
    """Many classes with synonyms, tiny synonym chunks: the labels equal the former full
    volume's (step-by-step stitching, softmax, max over synonyms, argmax), the confidence
    its max."""
    import ovseg_ros.engines.proxyclip as proxyclip

    seg = load_segmenter(dict(tiny_config, prompt_templates="custom",
                              custom_templates=["a photo of a {}."]))
    seg.set_vocabulary(MANY)
    vocab = seg.vocabulary
    logits = former_logits(seg, rgb_frame)
    want_labels, want_conf, _ = full_reference(logits * seg.config["proxyclip.logit_scale"],
                                               vocab.synonym_class, vocab.num_classes)
    assert len(torch.unique(want_labels)) > 3          # a real competition between classes
    torch.testing.assert_close(seg.engine.dense_logits(rgb_frame, vocab.embeddings), logits,
                               rtol=0, atol=4e-6 * float(logits.abs().max()))
    monkeypatch.setattr(proxyclip, "class_chunk", lambda n, px, budget=0: 11)
    pred = seg.predict(rgb_frame)
    assert pred.scores is None
    np.testing.assert_array_equal(pred.semantic, want_labels.numpy())
    np.testing.assert_allclose(pred.confidence, want_conf.numpy(), rtol=1e-5, atol=1e-7)
    full = seg.predict(rgb_frame, scores=True)
    np.testing.assert_array_equal(full.semantic, pred.semantic)
    assert full.scores.shape == (120, 96, 128)
    np.testing.assert_allclose(full.scores.max(0), pred.confidence, rtol=1e-5, atol=1e-7)


def test_proxyclip_single_window_streams_too(tiny_config, monkeypatch):
    import ovseg_ros.engines.proxyclip as proxyclip

    seg = load_segmenter(dict(tiny_config, prompt_templates="custom",
                              custom_templates=["{}"],
                              **{"proxyclip.sliding_window": False, "proxyclip.short_side": 0}))
    seg.set_vocabulary(MANY[:40])
    rgb = np.random.default_rng(5).integers(0, 256, (50, 77, 3), dtype=np.uint8)
    vocab = seg.vocabulary
    logits = former_logits(seg, rgb)
    want_labels, want_conf, _ = full_reference(logits * seg.config["proxyclip.logit_scale"],
                                               vocab.synonym_class, vocab.num_classes)
    monkeypatch.setattr(proxyclip, "class_chunk", lambda n, px, budget=0: 3)
    pred = seg.predict(rgb)
    np.testing.assert_array_equal(pred.semantic, want_labels.numpy())
    np.testing.assert_allclose(pred.confidence, want_conf.numpy(), rtol=1e-5, atol=1e-7)


def test_fcclip_streamed_labels_equal_full_volume(tmp_path, monkeypatch):
    import ovseg_ros.testing.tiny_models  # noqa: F401
    import ovseg_ros.engines.fcclip as fcclip

    seg = load_segmenter({"engine": "fcclip", "random_init": True, "precision": "fp32",
                          "fcclip.clip_model": "ovseg-tiny-ConvNeXt", "fcclip.short_side": 64,
                          "fcclip.max_size": 128, "fcclip.num_queries": 16,
                          "text_cache_dir": str(tmp_path),
                          "prompt_templates": "custom", "custom_templates": ["{}"],
                          "vocabulary": MANY})
    with torch.no_grad():
        seg.engine.head.void_embedding.weight.zero_()
    rgb = np.random.default_rng(6).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    full = seg.predict(rgb, scores=True)
    # a budget below one class per chunk and queries fewer than classes: the kept-masks path
    assert seg.engine.spec.num_queries < len(MANY)
    monkeypatch.setattr(fcclip, "_UPSAMPLE_BUDGET", 40 * 60 * 4 * 9)
    small = seg.predict(rgb)
    assert small.scores is None
    np.testing.assert_array_equal(small.semantic, full.semantic)
    np.testing.assert_array_equal(small.semantic, full.scores.argmax(0))
    np.testing.assert_allclose(small.confidence, full.scores.max(0), rtol=1e-5, atol=1e-7)


def test_proxyclip_predict_batch_equals_one_at_a_time(tiny_config, monkeypatch):
    """Windows of several frames share the image model's batches (window_batch_size 3
    over frames of 2, 2 and 1 windows, one frame of another size): each frame's result
    equals predicting it alone."""
    seg = load_segmenter(dict(tiny_config, **{"proxyclip.window_batch_size": 3,
                                              "proxyclip.short_side": 0}))
    rng = np.random.default_rng(7)
    frames = [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8),
              rng.integers(0, 256, (96, 128, 3), dtype=np.uint8),
              rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)]
    eng = seg.engine
    assert [len(eng.window_layout(*f.shape[:2])[1]) for f in frames] == [2, 2, 1]
    calls = []
    real = eng.backend.__call__

    class Spy:
        def __call__(self, x):
            calls.append(x.shape[0])
            return real(x)

        def __getattr__(self, name):
            return getattr(eng.backend, name)

    singles = [seg.predict(f, scores=True) for f in frames]
    monkeypatch.setattr(eng, "backend", Spy())
    batch = seg.predict_batch(frames, scores=True)
    # the four 96 x 112 windows of the first two frames in 3 + 1, the 112 x 112 one alone
    assert calls == [3, 1, 1]
    for one, many in zip(singles, batch):
        np.testing.assert_array_equal(many.semantic, one.semantic)
        np.testing.assert_array_equal(many.panoptic, one.panoptic)
        np.testing.assert_allclose(many.confidence, one.confidence, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(many.scores, one.scores, rtol=1e-5, atol=1e-6)
        assert many.vocabulary_version == one.vocabulary_version
