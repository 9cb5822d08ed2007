"""ProxyCLIP engine: the proxy-attention formula, window handling, post-processing,
precision and device checks, the panoptic heuristic and the palette.

All models are the tiny randomly initialised open_clip/timm ones (real modules)."""
from __future__ import annotations

import numpy as np
import open_clip
import pytest
import timm
import torch
import torch.nn.functional as F

from ovseg_ros import ConfigError, load_segmenter
from ovseg_ros.core.palette import class_color, colorize, overlay, palette
from ovseg_ros.core.panoptic_heuristic import semantic_to_panoptic
from ovseg_ros.core.preprocess import sliding_windows
from ovseg_ros.engines.proxyclip import (IMAGENET_MEAN, IMAGENET_STD, OPENAI_MEAN, OPENAI_STD,
                                         ProxyCLIPImageModel, proxy_attention)


# --- the formula ----------------------------------------------------------------------------------
def numpy_proxy_attention(feats: np.ndarray, beta: float, gamma: float) -> np.ndarray:
    """The reference's proxy attention, written directly: per sample, f normalised over
    channels, S = f^T f, A = gamma (S - beta mean S), A < 0 -> excluded (diagonal kept), softmax."""
    out = []
    for f in feats.astype(np.float64):
        f = f / np.linalg.norm(f, axis=0, keepdims=True)
        s = f.T @ f
        a = gamma * (s - beta * s.mean())
        keep = (a >= 0) | np.eye(len(a), dtype=bool)
        e = np.where(keep, np.exp(a - np.where(keep, a, -np.inf).max(1, keepdims=True)), 0.0)
        out.append(e / e.sum(1, keepdims=True))
    return np.stack(out)


def test_proxy_attention_matches_numpy_formula():
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(3, 16, 30, generator=g)
    feats[1] += 2.0                       # a sample with a very different similarity mean
    got = proxy_attention(feats, beta=1.2, gamma=3.0).numpy()
    want = numpy_proxy_attention(feats.numpy(), 1.2, 3.0)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # the threshold really excluded entries (otherwise the test proves little)
    assert (got == 0).mean() > 0.2


def test_proxy_attention_mean_is_per_sample():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(1, 8, 20, generator=g), torch.randn(1, 8, 20, generator=g) + 3.0
    batched = proxy_attention(torch.cat([a, b]), 1.2, 3.0)
    torch.testing.assert_close(batched[0], proxy_attention(a, 1.2, 3.0)[0])
    torch.testing.assert_close(batched[1], proxy_attention(b, 1.2, 3.0)[0])


def test_proxy_attention_uniform_features_stay_finite():
    feats = torch.ones(2, 8, 25)          # every similarity is 1 -> every entry < 0
    s = torch.ones(25, 25)
    assert ((s - 1.2 * s.mean()) * 3.0 < 0).all()   # where the reference's softmax gives NaN
    att = proxy_attention(feats, 1.2, 3.0)
    assert torch.isfinite(att).all()
    torch.testing.assert_close(att[0], torch.eye(25))  # each pixel keeps only itself


# --- the image model against library forwards (non-square, no interpolation) ----------------------
def test_image_model_matches_library_forwards_on_non_square_input():
    """With models whose native grid is non-square (64x128) no position embedding is
    resized, so open_clip's and timm's own forwards give an independent reference."""
    torch.manual_seed(0)
    clip = open_clip.create_model("ovseg-tiny-ViT", force_image_size=(64, 128)).eval()
    vit = timm.create_model("ovseg_tiny_vit_patch8", img_size=(64, 128)).eval()
    model = ProxyCLIPImageModel(clip.visual, vit, beta=1.2, gamma=3.0).eval()
    x = torch.rand(2, 3, 64, 128)
    with torch.no_grad():
        got = model(x).numpy()
        vis = clip.visual
        feats = vit.forward_features((x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
                                     / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        feats = feats[:, vit.num_prefix_tokens:]                     # B x (8*16) x C, row-major
        t = vis._embeds((x - torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1))
                        / torch.tensor(OPENAI_STD).view(1, 3, 1, 1))
        for blk in vis.transformer.resblocks[:-1]:
            t = blk(t)
        last = vis.transformer.resblocks[-1]
        y = last.ln_1(t)
        width = y.shape[-1]
        v = F.linear(y, last.attn.in_proj_weight[2 * width:], last.attn.in_proj_bias[2 * width:])
        v = v[:, 1:].reshape(2, 4, 8, width).permute(0, 3, 1, 2)     # CLIP grid 4 x 8
        v = F.interpolate(v, size=(8, 16), mode="bilinear", align_corners=False)
        v = v.flatten(2).transpose(1, 2).numpy()
    att = numpy_proxy_attention(feats.transpose(1, 2).numpy(), 1.2, 3.0)
    o = torch.from_numpy((att @ v.astype(np.float64)).astype(np.float32))
    with torch.no_grad():
        o = vis.ln_post(last.attn.out_proj(o)) @ vis.proj
        want = F.normalize(o, dim=-1).transpose(1, 2).reshape(2, -1, 8, 16).numpy()
    assert got.shape == (2, 32, 8, 16)
    np.testing.assert_allclose(got, want, atol=2e-5)


def test_official_normalisation_is_the_reference_arithmetic(tiny_config):
    """Default 'official': CLIP gets (k - 122.771) / 68.501 ... on the uint8 values, bit for
    bit as the official SegDataPreProcessor computes it; the VFM gets that un-normalised
    with OpenAI's exact constants (per channel t * s + m) and ImageNet-normalised, as its
    ``norm(unnorm(img))``. 'exact' normalises the [0, 1] input with exact constants."""
    k = torch.randint(0, 256, (1, 3, 8, 8), generator=torch.Generator().manual_seed(0)).float()
    official = load_segmenter(tiny_config).engine.image_model
    exact = load_segmenter(dict(tiny_config, **{"proxyclip.normalisation": "exact"}))
    exact = exact.engine.image_model
    assert official.official_normalisation and not exact.official_normalisation
    x_clip, x_vfm = official.normalise(k / 255.0)
    want = torch.stack([(k[0, c] - m) / s for c, (m, s) in enumerate(
        zip((122.771, 116.746, 104.094), (68.501, 66.632, 70.323)))])[None]
    assert torch.equal(x_clip, want)
    unnorm = torch.stack([want[0, c] * s + m for c, (m, s) in
                          enumerate(zip(OPENAI_MEAN, OPENAI_STD))])[None]
    want_vfm = torch.stack([(unnorm[0, c] - m) / s for c, (m, s) in
                            enumerate(zip(IMAGENET_MEAN, IMAGENET_STD))])[None]
    torch.testing.assert_close(x_vfm, want_vfm, atol=1e-6, rtol=0)
    e_clip, e_vfm = exact.normalise(k / 255.0)
    mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(e_clip, (k / 255.0 - mean) / std)
    # the rounded constants move the CLIP input by ~1e-5: small, but not nothing
    assert 1e-7 < float((e_clip - x_clip).abs().max()) < 1e-3


# --- windows --------------------------------------------------------------------------------------
def test_batched_windows_equal_single_windows(tiny_config, rgb_frame):
    cfg = dict(tiny_config, **{"proxyclip.stride": 16})
    one = load_segmenter(dict(cfg, **{"proxyclip.window_batch_size": 1}))
    many = load_segmenter(dict(cfg, **{"proxyclip.window_batch_size": 3}))   # 3 + 1
    emb = one.vocabulary.embeddings
    _, windows, _ = many.engine.window_layout(*rgb_frame.shape[:2])
    assert len(windows) == 4
    a = one.engine.dense_logits(rgb_frame, emb)
    b = many.engine.dense_logits(rgb_frame, emb)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(one.predict(rgb_frame).semantic, many.predict(rgb_frame).semantic)


def test_sliding_window_grid_covers_image_with_fixed_size_windows():
    wins = sliding_windows(336, 448, 336, 112)
    assert wins == [(0, 336, 0, 336), (0, 336, 112, 448)]
    wins = sliding_windows(200, 130, 112, 56)
    assert {(y2 - y1, x2 - x1) for y1, y2, x1, x2 in wins} == {(112, 112)}
    cover = np.zeros((200, 130), int)
    for y1, y2, x1, x2 in wins:
        cover[y1:y2, x1:x2] += 1
    assert cover.min() >= 1


def test_non_square_frame_equals_windows_processed_one_by_one(tiny_config):
    """A 112 x 200 frame (already at short side 112): the engine's stitched logits equal
    each 112 x 112 window run alone through the image model, upsampled, and averaged."""
    seg = load_segmenter(tiny_config)
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (112, 200, 3), dtype=np.uint8)
    emb = seg.vocabulary.embeddings
    got = seg.engine.dense_logits(rgb, emb)
    x = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    acc = torch.zeros(emb.shape[0], 112, 200)
    cnt = torch.zeros(1, 112, 200)
    for x1 in (0, 56, 88):                 # stride 56, last window shifted back inside
        with torch.no_grad():
            f = seg.engine.image_model(x[None, :, :, x1:x1 + 112])[0]
        logit = torch.einsum("ehw,se->shw", f, emb)
        logit = F.interpolate(logit[None], size=(112, 112), mode="bilinear",
                              align_corners=False)[0]
        acc[:, :, x1:x1 + 112] += logit
        cnt[:, :, x1:x1 + 112] += 1
    torch.testing.assert_close(got, acc / cnt, atol=1e-5, rtol=1e-5)


def test_single_window_mode_pads_non_multiple_sizes(tiny_config):
    seg = load_segmenter(dict(tiny_config, **{"proxyclip.sliding_window": False,
                                              "proxyclip.short_side": 0}))
    rgb = np.random.default_rng(4).integers(0, 256, (50, 77, 3), dtype=np.uint8)
    (rh, rw), windows, pad = seg.engine.window_layout(50, 77)
    assert windows == [(0, 50, 0, 77)]
    assert (50 + pad[2] + pad[3]) % 16 == 0 and (77 + pad[0] + pad[1]) % 16 == 0
    pred = seg.predict(rgb, scores=True)
    assert pred.semantic.shape == (50, 77)
    assert np.isfinite(pred.scores).all()


def test_short_side_resize_returns_input_size(tiny_segmenter, rgb_frame):
    # 96 x 128 is resized to 112 x 149 inside, results come back at 96 x 128
    assert tiny_segmenter.engine.window_layout(96, 128)[0] == (112, 149)
    pred = tiny_segmenter.predict(rgb_frame, scores=True)
    assert pred.semantic.shape == (96, 128) and pred.scores.shape[1:] == (96, 128)


# --- outputs and post-processing ------------------------------------------------------------------
def test_prediction_fields(tiny_segmenter, rgb_frame):
    pred = tiny_segmenter.predict(rgb_frame, scores=True)
    c = tiny_segmenter.vocabulary.num_classes
    assert pred.semantic.dtype == np.int32 and pred.semantic.shape == (96, 128)
    assert pred.scores.dtype == np.float32 and pred.scores.shape == (c, 96, 128)
    assert pred.panoptic.dtype == np.int32 and pred.panoptic.shape == (96, 128)
    assert pred.semantic.min() >= 0 and pred.semantic.max() < c
    np.testing.assert_array_equal(pred.semantic, pred.scores.argmax(0))
    assert (pred.scores >= 0).all() and (pred.scores <= 1).all()
    assert pred.confidence.dtype == np.float32 and pred.confidence.shape == (96, 128)
    np.testing.assert_allclose(pred.confidence, pred.scores.max(0), rtol=1e-5, atol=1e-7)
    assert tiny_segmenter.predict(rgb_frame).scores is None      # the volume is opt-in
    assert pred.random_weights is True and tiny_segmenter.random_weights is True
    assert pred.engine == "proxyclip"
    for key in ("preprocess", "image_model", "vfm", "clip", "attention", "text", "post",
                "text_encode"):
        assert key in pred.timings and pred.timings[key] >= 0
    ids = {s.id for s in pred.segments}
    assert ids == set(np.unique(pred.panoptic)) - {0}


def test_labels_alone_skip_the_confidence_and_equal_the_full_argmax(tiny_segmenter, rgb_frame):
    """Labels from the candidates per tile (core/bounded_labels.py) equal those of the
    streamed argmax over every synonym (the path scores=True takes); confidence=False
    leaves the confidence and the segments' scores out."""
    from ovseg_ros.core.class_names import load_class_file

    tiny_segmenter.set_vocabulary(list(load_class_file("ade150").names[:60]))
    full = tiny_segmenter.predict(rgb_frame, scores=True)
    with_conf = tiny_segmenter.predict(rgb_frame)
    labels_only = tiny_segmenter.predict(rgb_frame, confidence=False)
    assert "label_full_argmax" in full.counts and "label_full_argmax" in with_conf.counts
    for pred in (with_conf, labels_only):
        np.testing.assert_array_equal(pred.semantic, full.semantic)
        np.testing.assert_array_equal(pred.panoptic, full.panoptic)
    assert 0 < labels_only.counts["label_candidates"] <= labels_only.counts["label_pairs"]
    np.testing.assert_allclose(with_conf.confidence, full.confidence, rtol=1e-5, atol=0)
    assert [s.score for s in with_conf.segments] == pytest.approx(
        [s.score for s in full.segments], rel=1e-5)
    assert labels_only.confidence is None
    assert labels_only.segments and all(np.isnan(s.score) for s in labels_only.segments)
    # prob_thd needs the confidence: computed whatever the caller asked
    tiny_segmenter.update_config(prob_thd=0.5)
    assert tiny_segmenter.predict(rgb_frame, confidence=False).confidence is not None
    # a small vocabulary: the full argmax is cheaper than the tile work, and its confidence
    # comes with the labels, so it is kept
    tiny_segmenter.update_config(prob_thd=0.0)
    tiny_segmenter.set_vocabulary(["cat", "dog", "car"])
    small = tiny_segmenter.predict(rgb_frame, confidence=False)
    assert small.confidence is not None and "label_full_argmax" in small.counts


def test_uniform_image_gives_finite_output(tiny_segmenter):
    pred = tiny_segmenter.predict(np.full((80, 80, 3), 127, np.uint8), scores=True)
    assert np.isfinite(pred.scores).all()
    np.testing.assert_allclose(pred.scores.sum(0), 1.0, atol=1e-4)  # no synonyms: sums to 1


def test_synonyms_take_the_max(tiny_segmenter, rgb_frame):
    tiny_segmenter.set_vocabulary(["cat", "dog", "car"])
    flat = tiny_segmenter.predict(rgb_frame, scores=True).scores
    tiny_segmenter.set_vocabulary(["cat,dog", "car"])
    merged = tiny_segmenter.predict(rgb_frame, scores=True)
    # softmax runs over the same three synonyms in both cases
    np.testing.assert_allclose(merged.scores[0], np.maximum(flat[0], flat[1]), atol=1e-6)
    np.testing.assert_allclose(merged.scores[1], flat[2], atol=1e-6)
    assert merged.semantic.max() <= 1


def test_prob_thd_sets_low_confidence_pixels_to_class_zero(tiny_segmenter, rgb_frame):
    tiny_segmenter.set_vocabulary(["background", "cat", "dog", "car"])
    base = tiny_segmenter.predict(rgb_frame)
    thd = float(np.median(base.confidence))
    tiny_segmenter.update_config(prob_thd=thd)
    pred = tiny_segmenter.predict(rgb_frame)
    low = base.confidence < thd
    assert low.any() and (~low).any()
    assert (pred.semantic[low] == 0).all()
    np.testing.assert_array_equal(pred.semantic[~low], base.semantic[~low])


def test_logit_scale_sharpens(tiny_config, rgb_frame):
    soft = load_segmenter(dict(tiny_config, **{"proxyclip.logit_scale": 1.0})).predict(rgb_frame)
    sharp = load_segmenter(tiny_config).predict(rgb_frame)
    np.testing.assert_array_equal(soft.semantic, sharp.semantic)   # argmax unchanged
    assert sharp.confidence.mean() > soft.confidence.mean()


# --- precision and device -------------------------------------------------------------------------
def test_bf16_autocast_on_cpu_is_close_to_fp32(tiny_config, rgb_frame):
    fp32 = load_segmenter(tiny_config).predict(rgb_frame, scores=True)
    bf16 = load_segmenter(dict(tiny_config, precision="bf16")).predict(rgb_frame, scores=True)
    assert bf16.scores.dtype == np.float32
    # measured on this frame and 5 other seeds (CPU without native bf16, 1 thread), with the
    # trunks' matmuls in bf16 and residual streams, proxy attention, head and text tower in
    # fp32: labels equal on 99.967-100 % of pixels, max |score difference| 0.005-0.009 (with
    # the residual stream and head in bf16 and a bf16 text tower: 99.88-99.96 %, 0.042-0.061)
    assert np.abs(bf16.scores - fp32.scores).max() < 0.02
    assert (bf16.semantic == fp32.semantic).mean() >= 0.999


def test_bf16_labels_on_photos_match_fp32(tiny_config):
    """The faithful bf16 path on real image statistics: scikit-image photos at 224 x 168
    (measured: labels equal on 99.90-100 % of the pixels, scores within 0.065)."""
    import cv2
    import skimage.data

    fp32 = load_segmenter(tiny_config)
    bf16 = load_segmenter(dict(tiny_config, precision="bf16"))
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        rgb = cv2.resize(np.ascontiguousarray(getattr(skimage.data, name)()[..., :3]),
                         (224, 168), interpolation=cv2.INTER_AREA)
        a, b = fp32.predict(rgb, scores=True), bf16.predict(rgb, scores=True)
        assert (a.semantic == b.semantic).mean() >= 0.997, name
        assert np.abs(a.scores - b.scores).max() < 0.1, name


def test_bf16_keeps_precision_sensitive_parts_in_fp32(tiny_config):
    """bf16 weights only where the matmuls are heavy: the trunks' linear layers and
    patch embeddings; norms, embeddings, the head after the proxy attention and the
    text tower stay fp32."""
    seg = load_segmenter(dict(tiny_config, precision="bf16"))
    m = seg.engine.image_model
    vfm_block = m.vfm.vit.blocks[0]
    assert vfm_block.attn.qkv.weight.dtype == torch.bfloat16
    assert vfm_block.mlp.fc1.weight.dtype == torch.bfloat16
    assert m.clip.blocks[0].attn.in_proj_weight.dtype == torch.bfloat16
    assert m.clip.visual.conv1.weight.dtype == torch.bfloat16
    for p in (vfm_block.norm1.weight, m.vfm.vit.pos_embed, m.vfm.vit.norm.weight,
              m.clip.visual.positional_embedding, m.clip.visual.ln_pre.weight,
              m.clip.last.attn.out_proj.weight, m.clip.visual.ln_post.weight,
              m.clip.visual.proj, seg.engine.clip_model.text_projection):
        assert p.dtype == torch.float32
    assert seg.engine.text_precision == "fp32"


def test_fp16_on_cpu_is_a_clear_error(tiny_config):
    with pytest.raises(ConfigError, match="fp16 needs device: cuda"):
        load_segmenter(dict(tiny_config, precision="fp16"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_without_cuda_is_a_clear_error(tiny_config):
    with pytest.raises(ConfigError, match="CUDA is not available"):
        load_segmenter(dict(tiny_config, device="cuda"))


def test_register_tokens_are_dropped(tiny_config, rgb_frame):
    seg = load_segmenter(dict(tiny_config, **{"proxyclip.vfm_model": "ovseg_tiny_vit_reg4_patch8"}))
    assert seg.engine.image_model.vfm.num_prefix == 5
    x = torch.rand(1, 3, 112, 112)
    with torch.no_grad():
        assert seg.engine.image_model(x).shape == (1, 32, 14, 14)
    assert np.isfinite(seg.predict(rgb_frame, scores=True).scores).all()


def test_image_model_traces_to_the_same_outputs(tiny_segmenter):
    model = tiny_segmenter.engine.image_model
    model.profile = False
    x = torch.rand(2, 3, 112, 112)
    with torch.no_grad():
        traced = torch.jit.trace(model, x, check_trace=False)
        torch.testing.assert_close(traced(x), model(x))


# --- panoptic heuristic ---------------------------------------------------------------------------
def test_panoptic_heuristic_stuff_one_segment_things_split():
    sem = np.zeros((20, 20), np.int32)          # class 0: stuff ("floor")
    sem[2:6, 2:6] = 1                           # class 1 (thing): two blobs + one tiny
    sem[12:18, 12:18] = 1
    sem[0, 19] = 1
    sem[10:12, 0:3] = 2                         # class 2 (stuff) in one place
    conf = np.full(sem.shape, 0.5, np.float32)
    conf[12:18, 12:18] = 0.9
    pan, segs = semantic_to_panoptic(sem, conf, (False, True, False), min_thing_area=4)
    by_class = {}
    for s in segs:
        by_class.setdefault(s.class_id, []).append(s)
    assert len(by_class[0]) == 1 and len(by_class[2]) == 1
    assert len(by_class[1]) == 2                 # the 1-pixel blob is below min_thing_area
    assert pan[0, 19] == 0
    big = [s for s in by_class[1] if s.area == 36][0]
    assert big.score == pytest.approx(0.9) and big.bbox == (12, 12, 6, 6) and big.is_thing
    for s in segs:
        assert (pan == s.id).sum() == s.area
    assert by_class[0][0].area == (sem == 0).sum()


# --- palette --------------------------------------------------------------------------------------
def test_palette_is_stable_and_distinct():
    assert class_color(0) == (128, 0, 0) and class_color(1) == (0, 128, 0)
    pal = palette(256)
    assert len({tuple(c) for c in pal}) == 256
    np.testing.assert_array_equal(palette(10), pal[:10])   # independent of vocabulary size


def test_colorize_and_overlay():
    labels = np.array([[0, 1], [65535, 2]])
    col = colorize(labels, 3)
    assert col.dtype == np.uint8 and tuple(col[1, 0]) == (0, 0, 0)
    assert tuple(col[0, 1]) == class_color(1)
    rgb = np.full((2, 2, 3), 100, np.uint8)
    out = overlay(rgb, labels, alpha=0.5, num_classes=3)
    assert tuple(out[1, 0]) == (100, 100, 100)          # unlabeled keeps the image
    assert tuple(out[0, 0]) == (114, 50, 50)             # (100 + 128) / 2, 100 / 2, 100 / 2
    with pytest.raises(ValueError):
        overlay(rgb, labels[:1], 0.5)
