"""OVSeg engine on tiny random weights (real Swin / MaskFormer / open_clip modules):
the crop rule, batched CLIP, the ensemble, synonyms, the empty proposal set, outputs."""
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from ovseg_ros import load_segmenter
from ovseg_ros.core.types import UNLABELED
from ovseg_ros.engines.ovseg import (TEMPERATURE, clip_fill_and_norm, clip_probabilities,
                                     ensemble, head_probabilities, mask_boxes, masked_crops)
from ovseg_ros.models.mask_adapted_clip import MaskPromptedViT
from ovseg_ros.models.ovseg import CLIP_MEAN, CLIP_STD, normalise_unit_image

torch.set_num_threads(1)

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny_ovseg.yaml"


def tiny_cfg(tmp_path, **extra):
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["text_cache_dir"] = str(tmp_path)
    cfg.update(extra)
    return cfg


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    return load_segmenter(tiny_cfg(tmp_path_factory.mktemp("text")))


@pytest.fixture(scope="module")
def rgb():
    import skimage.data

    return np.ascontiguousarray(skimage.data.astronaut()[::8, ::6])       # 64 x 86


def test_predict_is_consistent(seg, rgb):
    p = seg.predict(rgb, scores=True)
    k = len(seg.vocabulary.names)
    h, w = rgb.shape[:2]
    assert p.engine == "ovseg" and p.random_weights
    assert p.semantic.shape == (h, w) and p.semantic.dtype == np.int32
    assert p.scores.shape == (k, h, w) and p.scores.dtype == np.float32
    np.testing.assert_allclose(p.scores.sum(0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(p.semantic, p.scores.argmax(0))
    np.testing.assert_allclose(p.confidence, p.scores.max(0), atol=1e-5)
    # panoptic: the documented heuristic over the semantic labels
    ids = sorted(int(i) for i in np.unique(p.panoptic) if i)
    assert ids == [s.id for s in p.segments] == list(range(1, len(ids) + 1))
    for s in p.segments:
        mask = p.panoptic == s.id
        assert s.area == int(mask.sum()) and (p.semantic[mask] == s.class_id).all()
    assert (p.panoptic > 0).all(), "min_thing_area 0: every labelled pixel is in a segment"
    for stage in ("preprocess", "backbone", "proposals", "crops", "clip", "ensemble", "post",
                  "panoptic", "total"):
        assert p.timings[stage] >= 0.0
    assert p.counts["crops"] == seg.config["ovseg.num_queries"]
    # without scores: same labels and confidence, no volume
    q = seg.predict(rgb)
    assert q.scores is None
    np.testing.assert_array_equal(q.semantic, p.semantic)
    np.testing.assert_allclose(q.confidence, p.confidence, atol=1e-6)


# --- crops ------------------------------------------------------------------------------------
def _direct_crop(image_u8: np.ndarray, mask: np.ndarray, size: int):
    """The reference's rule written out directly: tight box of the mask (x2, y2 exclusive),
    background filled with 255 x CLIP mean, (x - 255 mean) / (255 std), bicubic to size;
    the box's mask nearest to size."""
    ys, xs = np.nonzero(mask)
    y1, y2, x1, x2 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = image_u8[y1:y2, x1:x2].astype(np.float64)
    m = mask[y1:y2, x1:x2]
    fill = np.array([255.0 * c for c in CLIP_MEAN])
    crop = np.where(m[..., None], crop, fill)
    crop = (crop - 255.0 * np.array(CLIP_MEAN)) / (255.0 * np.array(CLIP_STD))
    t = torch.from_numpy(crop).permute(2, 0, 1)[None].float()
    t = F.interpolate(t, size=(size, size), mode="bicubic", align_corners=False)[0]
    mt = F.interpolate(torch.from_numpy(m)[None, None].float(), size=(size, size),
                       mode="nearest")[0]
    return (x1, y1, x2, y2), t, mt


def test_masked_crop_follows_the_reference_rule():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (30, 40, 3)).astype(np.uint8)
    mask = np.zeros((30, 40), bool)
    mask[5:20, 8:12] = True          # an L: the box spans both arms
    mask[17:20, 8:31] = True
    mask[12, 35] = True              # one stray pixel widens the box to the right
    box, want, want_mask = _direct_crop(image, mask, 56)
    assert box == (8, 5, 36, 20)
    assert mask_boxes(torch.from_numpy(mask)[None]).tolist() == [list(box)]
    fill, mean, std = clip_fill_and_norm()
    img = torch.from_numpy(image).permute(2, 0, 1).float()
    got = masked_crops(img, torch.from_numpy(mask)[None], 56, fill, mean, std)
    assert got.shape == (1, 4, 56, 56)
    torch.testing.assert_close(got[0, :3], want, atol=1e-5, rtol=0)
    torch.testing.assert_close(got[0, 3:], want_mask, atol=0, rtol=0)
    one = masked_crops(img, torch.from_numpy(np.pad(np.ones((1, 1), bool),
                                                    ((3, 26), (7, 32))))[None], 8, fill, mean,
                       std)
    # a one-pixel mask: the crop is that pixel, upscaled
    px = (img[:, 3, 7] - mean.view(3)) / std.view(3)
    torch.testing.assert_close(one[0, :3], px.view(3, 1, 1).expand(3, 8, 8), atol=1e-5, rtol=0)
    assert (one[0, 3] == 1).all()


def test_boxes_of_several_masks_and_of_an_empty_one():
    masks = torch.zeros(3, 10, 12, dtype=torch.bool)
    masks[0, 2:5, 3:9] = True
    masks[1, 9, 11] = True
    assert mask_boxes(masks).tolist() == [[3, 2, 9, 5], [11, 9, 12, 10], [0, 0, 0, 0]]


def test_background_of_a_crop_is_the_clip_mean():
    image = torch.full((3, 20, 20), 255.0)
    mask = torch.zeros(1, 20, 20, dtype=torch.bool)
    mask[0, 2:18, 2:18] = True
    mask[0, 5:15, 5:15] = False      # a hole: filled, normalised to ~0
    fill, mean, std = clip_fill_and_norm()
    crop = masked_crops(image, mask, 16, fill, mean, std)      # box 16 x 16: no resampling
    hole = crop[0, :3, 3:13, 3:13]
    assert hole.abs().max() < 1e-5
    assert (crop[0, 3, 3:13, 3:13] == 0).all() and crop[0, 3, 0, 0] == 1


# --- CLIP stage ---------------------------------------------------------------------------------
def test_batched_proposals_equal_one_at_a_time(seg, rgb):
    e = seg.engine
    image, x = e.preprocess(rgb)
    from ovseg_ros.core.stage_timing import StageTimer

    mask_logits, _ = e.proposals(x, StageTimer(e.device))
    masks = e.mask_probabilities(mask_logits[0], tuple(image.shape[-2:])) > 0.4
    batch = e.crops(image, masks[masks.flatten(1).any(1)])
    assert batch.shape[0] >= 3
    together = e.clip_embeddings(batch)
    alone = torch.cat([e.clip_embeddings(batch[i:i + 1]) for i in range(batch.shape[0])])
    torch.testing.assert_close(together, alone, atol=2e-5, rtol=0)
    assert not torch.allclose(together[0], together[1]), "different crops, different embeddings"


def test_mask_prompt_replaces_tokens_outside_the_region(seg):
    """Our ViT against the reference's formula written out on open_clip's submodules:
    patch inside = any pixel inside (ceil of the average pool); outside patches become
    mask_embedding[d] after the patch embedding and after blocks 0..depth-2."""
    v = seg.engine.clip_model.visual
    vit = MaskPromptedViT(v).eval()
    gen = torch.Generator().manual_seed(0)
    crops = torch.randn(2, 3, 224, 224, generator=gen)
    masks = torch.zeros(2, 1, 224, 224)
    masks[0, :, 20:100, 30:31] = 1       # a one-pixel-wide line still marks its patches
    masks[1, :, 100:224, 0:224] = 1
    with torch.no_grad():
        got = vit(crops, masks)
        x = v.conv1(crops).flatten(2).permute(0, 2, 1)
        m = torch.ceil(F.avg_pool2d(masks, 14, 14)).reshape(2, -1, 1)
        emb = v.mask_embedding
        x = x * m + emb[0] * (1 - m)
        x = torch.cat([v.class_embedding + torch.zeros(2, 1, x.shape[-1]), x], 1)
        x = v.ln_pre(x + v.positional_embedding)
        for i, blk in enumerate(v.transformer.resblocks):
            x = blk(x) if v.transformer.batch_first else blk(x.transpose(0, 1)).transpose(0, 1)
            if i + 1 < emb.shape[0]:
                x = torch.cat([x[:, :1], x[:, 1:] * m + emb[i + 1] * (1 - m)], 1)
        want = v.ln_post(x[:, 0]) @ v.proj
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # the mask matters (random prompts): masking everything changes the embedding
    with torch.no_grad():
        other = vit(crops, torch.ones_like(masks))
    assert not torch.allclose(got, other, atol=1e-3)


# --- scores and ensemble ------------------------------------------------------------------------
def test_head_and_clip_scores_take_the_best_synonym():
    gen = torch.Generator().manual_seed(1)
    text = F.normalize(torch.randn(5, 16, generator=gen), dim=-1)   # synonyms
    synonym_class = torch.tensor([0, 1, 1, 2, 2])                     # 3 classes
    q = torch.randn(4, 16, generator=gen)
    void = torch.randn(1, 16, generator=gen)
    cos = F.normalize(q, dim=-1) @ text.t()
    per_class = torch.stack([cos[:, 0], cos[:, 1:3].max(1).values, cos[:, 3:5].max(1).values],
                            1)
    void_logit = F.normalize(q, dim=-1) @ F.normalize(void, dim=-1).t()
    want = torch.cat([per_class, void_logit], 1).mul(TEMPERATURE).softmax(-1)[:, :3]
    torch.testing.assert_close(head_probabilities(q, text, void, synonym_class, 3), want)
    crop = F.normalize(torch.randn(2, 16, generator=gen), dim=-1)
    c = crop @ text.t()
    want_clip = torch.stack([c[:, 0], c[:, 1:3].max(1).values, c[:, 3:5].max(1).values], 1) \
        .mul(TEMPERATURE).softmax(-1)
    torch.testing.assert_close(clip_probabilities(crop, text, synonym_class, 3), want_clip)


def test_ensemble_matches_its_formula():
    gen = torch.Generator().manual_seed(2)
    head = torch.rand(6, 4, generator=gen)
    valid = torch.tensor([True, False, True, True, False, False])
    clip = torch.rand(3, 4, generator=gen)
    w = 0.7
    got = ensemble(head, clip, valid, w)
    rows = iter(clip)
    for q in range(6):
        want = head[q] ** (1 - w) * (next(rows) ** w if valid[q] else 1.0)
        torch.testing.assert_close(got[q], want)


def test_synonyms_take_the_max_with_real_text_embeddings(seg):
    """A class listed with an extra synonym scores at least as high as without it, and
    exactly like the synonym alone where that synonym wins."""
    e = seg.engine
    base = seg.prepare_vocabulary(["person", "sky"])
    syn = seg.prepare_vocabulary(["person", "sky,floor"])
    alone = seg.prepare_vocabulary(["person", "floor"])
    q = torch.randn(3, e.clip_model.text_projection.shape[1], generator=torch.Generator()
                    .manual_seed(4))
    void = e.weights.clip_adapter.non_object_embedding

    def head(v):
        return head_probabilities(q, v.embeddings, void, v.synonym_class, v.num_classes)

    b, s, a = head(base), head(syn), head(alone)
    best = torch.maximum(b[:, 1], a[:, 1])
    # the class logit is the max of its synonyms' logits, so its probability is that of
    # whichever synonym is larger (the other classes compete the same way)
    for i in range(3):
        which = b if b[i, 1] >= a[i, 1] else a
        torch.testing.assert_close(s[i], which[i])
        assert s[i, 1] == best[i]


# --- proposal counts the reference crashes on ---------------------------------------------------
def test_no_valid_proposal_labels_from_the_head_alone(tmp_path, rgb):
    """The reference's branch for "no crop": CLIP's scores are all 1, so the ensemble is
    head^(1-w) over every proposal, summed with the soft masks (no crop reaches CLIP)."""
    s = load_segmenter(tiny_cfg(tmp_path))
    e = s.engine
    s.update_config(ovseg__mask_threshold=1.0)     # sigmoid never exceeds 1: nothing cropped
    p = s.predict(rgb, scores=True)
    assert p.counts["crops"] == 0
    # the expected labels, built here from the proposal stage's outputs by the formula
    image, x = e.preprocess(rgb)
    from ovseg_ros.core.stage_timing import StageTimer

    mask_logits, class_embed = e.proposals(x, StageTimer(e.device))
    v = s.vocabulary
    masks = e.mask_probabilities(mask_logits[0], tuple(image.shape[-2:]))
    head = head_probabilities(class_embed[0], v.embeddings.float(),
                              e.weights.clip_adapter.non_object_embedding, v.synonym_class,
                              v.num_classes)
    w = e.cfg["ovseg.clip_ensemble_weight"]
    sem = torch.einsum("qc,qhw->chw", head.pow(1 - w), masks)
    sem = F.interpolate(sem[None], size=rgb.shape[:2], mode="bilinear", align_corners=False)[0]
    expected = sem.argmax(0).numpy()
    assert (p.semantic != UNLABELED).all()
    assert (p.semantic == expected).mean() > 0.999
    assert len(np.unique(p.semantic)) > 1 or len(np.unique(expected)) == 1
    assert p.scores.any()


def test_no_valid_proposal_with_clip_only_weight_is_unlabelled(tmp_path, rgb):
    s = load_segmenter(tiny_cfg(tmp_path))
    s.update_config(ovseg__mask_threshold=1.0, ovseg__clip_ensemble_weight=0.0)
    p = s.predict(rgb, scores=True)
    assert (p.semantic == UNLABELED).all()
    assert (p.confidence == 0).all() and (p.panoptic == 0).all() and p.segments == []
    assert p.scores.shape == (5, *rgb.shape[:2]) and not p.scores.any()
    assert p.counts["crops"] == 0


def test_proposal_input_is_normalised_as_the_reference_does(seg):
    """The proposal graph's normalised tensor equals the reference's
    (uint8 -> float - mean) / std on the 0..255 scale, bit for bit, on a photo."""
    import skimage.data

    from ovseg_ros.models.ovseg import PIXEL_MEAN, PIXEL_STD

    e = seg.engine
    photo = skimage.data.coffee()
    image, x = e.preprocess(photo)
    # the engine resizes like the reference first; compare on the same resized frame
    resized = np.ascontiguousarray(image.to(torch.uint8).permute(1, 2, 0).numpy())
    official = (torch.as_tensor(resized.transpose(2, 0, 1))
                - torch.Tensor(PIXEL_MEAN).view(-1, 1, 1)) / torch.Tensor(PIXEL_STD).view(-1, 1, 1)
    seen = []
    hook = e.weights.backbone.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    try:
        from ovseg_ros.core.stage_timing import StageTimer

        e.proposals(x, StageTimer(e.device))
    finally:
        hook.remove()
    h, w = resized.shape[:2]
    assert torch.equal(seen[0][0, :, :h, :w], official)      # what Swin receives
    assert torch.equal(normalise_unit_image(x, e.image_model.pixel_mean,
                                            e.image_model.pixel_std)[0], official)
    # the former order (divide by 255 first) is not bit-exact on this photo
    mean, std = torch.tensor(PIXEL_MEAN).view(-1, 1, 1), torch.tensor(PIXEL_STD).view(-1, 1, 1)
    assert not torch.equal((x[0] - mean / 255.0) / (std / 255.0), official)


def test_exactly_one_valid_proposal_works(tmp_path, rgb):
    s = load_segmenter(tiny_cfg(tmp_path))
    e = s.engine
    image, x = e.preprocess(rgb)
    from ovseg_ros.core.stage_timing import StageTimer

    mask_logits, _ = e.proposals(x, StageTimer(e.device))
    peak = e.mask_probabilities(mask_logits[0], tuple(image.shape[-2:])).flatten(1).amax(1)
    top2 = peak.topk(2).values
    assert top2[0] > top2[1]
    s.update_config(ovseg__mask_threshold=float((top2[0] + top2[1]) / 2))
    p = s.predict(rgb, scores=True)
    assert p.counts["crops"] == 1
    assert p.semantic.min() >= 0 and p.semantic.max() < 5
    np.testing.assert_array_equal(p.semantic, p.scores.argmax(0))


def test_clip_only_weight_uses_the_cropped_proposals(tmp_path, rgb):
    s = load_segmenter(tiny_cfg(tmp_path))
    s.update_config(ovseg__clip_ensemble_weight=0.0)
    p = s.predict(rgb, scores=True)
    np.testing.assert_allclose(p.scores.sum(0), 1.0, atol=1e-4)
    s.update_config(ovseg__clip_ensemble_weight=0.7)
    assert not np.array_equal(s.predict(rgb, scores=True).scores, p.scores)


def test_bad_model_names_are_config_errors(tmp_path):
    from ovseg_ros.config import ConfigError

    with pytest.raises(ConfigError, match="ovseg.swin_model"):
        load_segmenter(tiny_cfg(tmp_path, **{"ovseg.swin_model": "swin_huge"}))
    with pytest.raises(ConfigError, match="ovseg.clip_model"):
        load_segmenter(tiny_cfg(tmp_path, **{"ovseg.clip_model": "no-such-clip"}))


# --- export ------------------------------------------------------------------------------------
def test_onnxruntime_runs_both_graphs_like_torch(tmp_path, seg, rgb):
    """Both image graphs (proposals, CLIP crops) exported to ONNX and run in ONNX Runtime
    give torch's outputs; the frame's labels agree."""
    s = load_segmenter(tiny_cfg(tmp_path / "text", backend="onnxruntime",
                                graph_cache_dir=str(tmp_path / "cache")))
    e, ref = s.engine, seg.engine
    image, x = e.preprocess(rgb)
    with torch.no_grad():
        want = ref.image_model(x)
    got = e.backend(x)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-4)
    masks = ref.mask_probabilities(want[0][0], tuple(image.shape[-2:])) > 0.4
    crops = ref.crops(image, masks[masks.flatten(1).any(1)])
    torch.testing.assert_close(e.clip_embeddings(crops), ref.clip_embeddings(crops), atol=1e-4,
                               rtol=1e-4)
    assert e.crop_backend.graph((224, 224)).key.input_shape == (-1, 4, 224, 224)
    p, q = s.predict(rgb), seg.predict(rgb)
    assert (p.semantic == q.semantic).mean() >= 0.999
