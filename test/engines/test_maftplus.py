"""MAFT+'s Content-Dependent Transfer: shapes, residual forms, image dependence."""
import pytest
import torch

from ovseg_ros.models.cdt import ContentDependentTransfer

torch.set_num_threads(1)


def _inputs(b=2, k=5, d=32, h=3, w=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, h, w, generator=g), torch.nn.functional.normalize(
        torch.randn(k, d, generator=g), dim=-1)


def test_shapes_per_image_classifier():
    torch.manual_seed(0)
    cdt = ContentDependentTransfer(32, 8).eval()
    img, text = _inputs()
    out = cdt(img, text)
    assert out.shape == (2, 5, 32)
    # two different images give two different classifiers
    assert not torch.allclose(out[0], out[1])


def test_panoptic_variant_starts_as_identity_and_adds_normed_update():
    torch.manual_seed(0)
    cdt = ContentDependentTransfer(32, 8, variant="panoptic").eval()
    img, text = _inputs()
    # the reference initialises the panoptic transfer's Linear to zero: t' = t + LN(0) = t + beta
    torch.testing.assert_close(cdt(img, text), text.expand(2, -1, -1))
    with torch.no_grad():
        cdt.cross_atten.MLP.weight.normal_(0, 0.1)
        attn = cdt.cross_atten.multihead_attn
        pos = cdt.pe_layer(img).flatten(2).permute(2, 0, 1)
        mem = img.flatten(2).permute(2, 0, 1)
        a = attn(text[:, None].expand(-1, 2, -1), mem + pos, mem, need_weights=False)[0]
        expected = text[:, None] + cdt.cross_atten.norm(cdt.cross_atten.MLP(a))
    torch.testing.assert_close(cdt(img, text), expected.transpose(0, 1))


def test_semantic_variant_is_post_norm_residual():
    torch.manual_seed(0)
    cdt = ContentDependentTransfer(32, 8, variant="semantic").eval()
    img, text = _inputs()
    with torch.no_grad():
        cdt.cross_atten.MLP.weight.zero_()
        cdt.cross_atten.MLP.bias.zero_()
    # no update: LN(t + 0) = LayerNorm of the text rows, whatever the image
    torch.testing.assert_close(cdt(img, text),
                               torch.nn.functional.layer_norm(text, (32,)).expand(2, -1, -1),
                               atol=1e-5, rtol=1e-5)


def test_unknown_variant_rejected():
    with pytest.raises(ValueError, match="variant"):
        ContentDependentTransfer(32, 8, variant="instance")


# --- engine ------------------------------------------------------------------------------
import numpy as np  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ovseg_ros import load_segmenter  # noqa: E402

VOCAB = ["person", "wall", "pallet"]


def _cfg(tmp, **extra):
    cfg = {"engine": "maftplus", "random_init": True, "precision": "fp32",
           "maftplus.clip_model": "ovseg-tiny-ConvNeXt", "maftplus.short_side": 64,
           "maftplus.max_size": 96, "text_cache_dir": str(tmp), "vocabulary": VOCAB}
    cfg.update(extra)
    return cfg


@pytest.fixture(scope="module")
def maft(tmp_path_factory):
    return load_segmenter(_cfg(tmp_path_factory.mktemp("text")))


def test_maftplus_defaults_and_outputs(maft):
    eng = maft.engine
    assert eng.spec.num_queries == 100
    assert maft.config["maftplus.object_mask_threshold"] == 0.2
    assert maft.config["maftplus.overlap_threshold"] == 0.7
    with torch.no_grad():
        outs = eng.image_model(torch.rand(1, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 100, 16, 16), (1, 100, 32), (1, 100, 32),
                                              (1, 32, 2, 2)]
    rgb = (np.random.RandomState(1).rand(30, 50, 3) * 255).astype(np.uint8)
    p = maft.predict(rgb, scores=True)
    assert p.engine == "maftplus" and p.random_weights
    assert p.scores.shape == (3, 30, 50) and p.semantic.shape == (30, 50)
    np.testing.assert_array_equal(p.semantic, p.scores.argmax(0))
    assert sorted(s.id for s in p.segments) == sorted(int(i) for i in np.unique(p.panoptic) if i)


def test_maftplus_scores_come_from_cdt_classifier_and_void_from_head(maft):
    """Class probabilities = softmax(CLIP-scale * cos(pooled CLIP, CDT(text+void)))[:K]
    x (1 - P(void)) with P(void) from the in-vocabulary head (reference inference)."""
    eng = maft.engine
    vocab = maft.vocabulary
    g = torch.Generator().manual_seed(0)
    outs = (None, torch.randn(1, 6, 32, generator=g), torch.randn(1, 6, 32, generator=g),
            torch.randn(1, 32, 2, 3, generator=g))
    got = eng.classify(outs, vocab).exp()
    text = torch.cat([vocab.embeddings, F.normalize(eng.head.void_embedding.weight, dim=-1)])
    with torch.no_grad():
        transferred = eng.head.cdt(outs[3], text)[0]                  # (K+1) x D, no re-norm
    scale = eng.clip_model.logit_scale.exp().clamp(max=100)
    out_logits = scale * F.normalize(outs[2][0], dim=-1) @ transferred.t()
    s_in = eng.head.sem_seg_head.predictor.logit_scale.exp().clamp(max=100)
    in_logits = s_in * F.normalize(outs[1][0], dim=-1) @ text.t()
    p_void = in_logits.softmax(-1)[:, -1:]
    expected = torch.cat([out_logits[:, :-1].softmax(-1) * (1 - p_void), p_void], -1)
    torch.testing.assert_close(got[0], expected + 1e-8, atol=1e-5, rtol=1e-4)


# --- fidelity to the reference's code paths -------------------------------------------------------
from ovseg_ros.testing.maftplus import dense_map_and_outputs  # noqa: E402

def test_cdt_sees_the_reference_reshape_by_default_and_per_pixel_on_request(maft, tmp_path):
    """Reference (MAFT_Plus.visual_prediction_forward_convnext): x.reshape(B*h*w, C) of the
    B x C x h x w map, CLIP's head, reshape(B, h, w, D), permute to B x D x h x w."""
    eng = maft.engine
    assert maft.config["maftplus.cdt_per_pixel"] is False
    x = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(3))
    dense, outs = dense_map_and_outputs(eng, x)
    b, c, h, w = dense.shape
    visual = eng.image_model.visual
    with torch.no_grad():
        y = visual.head(visual.trunk.head(dense.reshape(b * h * w, c)[..., None, None]))
        reference = y.reshape(b, h, w, y.shape[-1]).permute(0, 3, 1, 2)
        per_pixel = visual.head(visual.trunk.head(
            dense.permute(0, 2, 3, 1).reshape(-1, c)[..., None, None]))
        per_pixel = per_pixel.reshape(b, h, w, -1).permute(0, 3, 1, 2)
    torch.testing.assert_close(outs[3], reference, rtol=1e-5, atol=1e-6)
    assert (per_pixel - reference).abs().max() > 1e-2          # the two forms really differ

    other = load_segmenter(_cfg(tmp_path, **{"maftplus.cdt_per_pixel": True}))
    dense2, outs2 = dense_map_and_outputs(other.engine, x)
    torch.testing.assert_close(dense2, dense)                  # same seeded weights
    torch.testing.assert_close(outs2[3], per_pixel, rtol=1e-5, atol=1e-6)
    assert other.engine._model_id() != eng._model_id()


def _volume(probs, masks):
    sem = torch.einsum("qc,qhw->chw", probs, masks)
    return sem / sem.sum(0, keepdim=True)


def _orders(logits, resized, original):
    """(sigmoid at the padded size then resize, resize the logits then sigmoid)."""
    up = F.interpolate(logits[None], scale_factor=4, mode="bilinear", align_corners=False)
    up = up[..., :resized[0], :resized[1]]

    def to_original(t):
        return F.interpolate(t, size=original, mode="bilinear", align_corners=False)[0]
    return to_original(up.sigmoid()), to_original(up).sigmoid()


@pytest.mark.parametrize("variant", ["semantic", "panoptic"])
def test_semantic_scores_follow_the_eval_config_order(tmp_path, variant):
    """MAFT+'s semantic eval config: sigmoid at the padded size, class scores resized
    afterwards; its panoptic config (like FC-CLIP's): logits resized first."""
    s = load_segmenter(_cfg(tmp_path, **{"maftplus.cdt_variant": variant}))
    eng = s.engine
    vocab = s.vocabulary
    g = torch.Generator().manual_seed(5)
    q, k = 100, vocab.num_classes
    logits = torch.randn(q, 6, 8, generator=g) * 8             # sharp masks: the order matters
    mask_cls = torch.randn(q, k + 1, generator=g) * 3
    resized, original = (22, 30), (37, 51)
    with torch.no_grad():
        _, _, volume, *_ = eng._postprocess(mask_cls, logits, vocab, resized, original,
                                              scores=True)
    probs = mask_cls.softmax(-1)[:, :-1]
    sig_first, resize_first = (_volume(probs, m) for m in _orders(logits, resized, original))
    assert (sig_first - resize_first).abs().max() > 1e-3       # the orders differ here
    expected = sig_first if variant == "semantic" else resize_first
    torch.testing.assert_close(torch.from_numpy(volume), expected, rtol=1e-4, atol=1e-5)


def test_semantic_labels_are_the_reference_order_bit_for_bit(tmp_path):
    """The semantic variant sums the class scores at the padded size and resizes them
    (the reference's semantic_inference + sem_seg_postprocess), argmax last: its labels
    equal that formula exactly, whole or in class chunks; resizing each query's mask
    first (the former order) differs at rounding ties."""
    s = load_segmenter(_cfg(tmp_path, **{"maftplus.cdt_variant": "semantic"}))
    eng, vocab = s.engine, s.vocabulary
    g = torch.Generator().manual_seed(11)
    q, k = 100, vocab.num_classes
    logits = torch.randn(q, 6, 8, generator=g) * 8
    mask_cls = torch.randn(q, k + 1, generator=g) * 3
    resized, original = (22, 30), (37, 51)
    probs = mask_cls.softmax(-1)[:, :-1]
    padded = F.interpolate(logits[None], scale_factor=4, mode="bilinear",
                           align_corners=False)[0].sigmoid()
    sem = torch.einsum("qc,qhw->chw", probs, padded)[None, :, :resized[0], :resized[1]]
    want = F.interpolate(sem, size=original, mode="bilinear", align_corners=False)[0]
    with torch.no_grad():
        whole = eng._semantic(probs, logits, resized, original, False, 1 << 24)
        chunked = eng._semantic(probs, logits, resized, original, True, 37 * 51 * 2)
    assert torch.equal(whole.labels, want.argmax(0))
    assert torch.equal(chunked.labels, whole.labels)
    torch.testing.assert_close(chunked.scores, want / want.sum(0, keepdim=True))


def test_describe_names_the_precision_of_each_stage(tmp_path):
    s = load_segmenter(_cfg(tmp_path, precision="bf16"))
    stages = s.describe()["stage_precision"]
    assert stages["backbone"] == "bf16"
    assert all(stages[k] == "fp32" for k in ("pixel_decoder", "transformer_decoder",
                                             "clip_pool", "classify", "post", "text"))
    # auto resolves to fp32 for MAFT+ (its labels move in bf16): every stage fp32
    auto = load_segmenter(_cfg(tmp_path, precision="auto")).describe()
    assert auto["precision"] == "fp32" and set(auto["stage_precision"].values()) == {"fp32"}
