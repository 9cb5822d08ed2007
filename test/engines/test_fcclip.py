"""FC-CLIP engine end to end on a tiny random ConvNeXt CLIP (real open_clip/timm modules)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ovseg_ros.testing.tiny_models  # noqa: F401  (registers ovseg-tiny-ConvNeXt)
from ovseg_ros import load_segmenter
from ovseg_ros.engines.fcclip import (class_max, geometric_ensemble, is_seen_class,
                                     resize_shortest_edge)
from ovseg_ros.weights import WeightsError

torch.set_num_threads(1)

VOCAB = ["person", "sky", "forklift,fork lift", "floor", "couch,sofa"]


def tiny_cfg(tmp_path, **extra):
    cfg = {"engine": "fcclip", "random_init": True, "precision": "fp32",
           "fcclip.clip_model": "ovseg-tiny-ConvNeXt",
           "fcclip.short_side": 64, "fcclip.max_size": 128, "text_cache_dir": str(tmp_path),
           "vocabulary": VOCAB}
    cfg.update(extra)
    return cfg


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    s = load_segmenter(tiny_cfg(tmp_path_factory.mktemp("text")))
    # Random weights rarely pick a class over void; make void unattractive and keep
    # every surviving mask so the panoptic path has segments to merge.
    with torch.no_grad():
        s.engine.head.void_embedding.weight.zero_()
    s.update_config(fcclip__overlap_threshold=0.0)
    return s


@pytest.fixture(scope="module")
def rgb():
    rng = np.random.RandomState(0)
    img = np.zeros((40, 60, 3), np.uint8)
    img[:, :30] = (200, 30, 30)
    img[:, 30:] = (20, 40, 220)
    return np.clip(img + rng.randint(0, 30, img.shape), 0, 255).astype(np.uint8)


def test_predict_is_consistent(seg, rgb):
    p = seg.predict(rgb, scores=True)
    k = len(VOCAB)
    assert p.random_weights and p.engine == "fcclip"
    assert p.semantic.shape == (40, 60) and p.semantic.dtype == np.int32
    assert p.scores.shape == (k, 40, 60) and p.scores.dtype == np.float32
    np.testing.assert_allclose(p.scores.sum(0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(p.semantic, p.scores.argmax(0))
    assert p.panoptic.shape == (40, 60) and p.panoptic.dtype == np.int32
    assert p.segments, "expected segments with void disabled"
    ids = sorted(int(i) for i in np.unique(p.panoptic) if i)
    assert ids == [s.id for s in p.segments] == list(range(1, len(ids) + 1))
    for s in p.segments:
        assert s.area == int((p.panoptic == s.id).sum())
        assert 0 <= s.class_id < k and s.is_thing == seg.vocabulary.is_thing[s.class_id]
        assert 0.0 < s.score <= 1.0
    stuff = [s.class_id for s in p.segments if not s.is_thing]
    assert len(stuff) == len(set(stuff)), "one segment per stuff class"
    for stage in ("preprocess", "backbone", "pixel_decoder", "transformer_decoder",
                  "classify", "post", "total"):
        assert p.timings[stage] >= 0.0
    assert p.timings["total"] >= p.timings["pixel_decoder"]


def test_vocabulary_change_needs_no_rebuild(seg, rgb):
    engine = seg.engine
    seg.set_vocabulary(["car", "road"])
    try:
        p = seg.predict(rgb, scores=True)
        assert seg.engine is engine
        assert p.scores.shape == (2, 40, 60) and p.semantic.max() <= 1
        assert p.vocabulary == ("car", "road")
    finally:
        seg.set_vocabulary(VOCAB)


def test_image_model_is_vocabulary_free(seg):
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        masks, cls_emb, clip_emb = seg.engine.image_model(x)
    assert masks.shape == (1, 250, 16, 24)             # 250 queries, stride 4
    assert cls_emb.shape == clip_emb.shape == (1, 250, 32)
    # non-multiple-of-32 input is padded inside: 50 x 70 -> 64 x 96
    with torch.no_grad():
        assert seg.engine.image_model(torch.rand(1, 3, 50, 70))[0].shape == (1, 250, 16, 24)


def test_geometric_ensemble_matches_reference_formula(seg):
    """Seen classes: p_in^(1-a) p_out^a, unseen: beta; then x (1 - p_void)."""
    eng = seg.engine
    vocab = seg.vocabulary
    g = torch.Generator().manual_seed(3)
    outs = (None, torch.randn(1, 7, 32, generator=g), torch.randn(1, 7, 32, generator=g))
    got = eng.classify(outs, vocab).exp()
    text = torch.cat([vocab.embeddings, F.normalize(eng.head.void_embedding.weight, dim=-1)])
    s_in = eng.head.sem_seg_head.predictor.logit_scale.exp().clamp(max=100)
    s_out = eng.clip_model.logit_scale.exp().clamp(max=100)
    lin = s_in * F.normalize(outs[1], dim=-1) @ text.t()
    lout = s_out * F.normalize(outs[2], dim=-1) @ text.t()
    owner = vocab.synonym_class.tolist()
    def per_class(l):
        cols = [l[..., [i for i, o in enumerate(owner) if o == c]].max(-1).values
                for c in range(len(VOCAB))]
        return torch.stack(cols + [l[..., -1]], -1)
    lin, lout = per_class(lin), per_class(lout)
    p_in, p_out = lin[..., :-1].softmax(-1), lout[..., :-1].softmax(-1)
    seen = [True, True, False, True, True]     # forklift is not a COCO class; couch is
    expo = torch.tensor([0.4 if s else 0.8 for s in seen])
    ens = (p_in ** (1 - expo) * p_out ** expo).log().softmax(-1)
    p_void = lin.softmax(-1)[..., -1:]
    expected = torch.cat([ens * (1 - p_void), p_void], -1)
    torch.testing.assert_close(got, expected + 1e-8, atol=1e-5, rtol=1e-4)


def _reference_ensemble(lin, lout, seen, alpha, beta):
    """bytedance/fc-clip's inference formula, transcribed: probabilities, product, log,
    seen/unseen masking, softmax, x (1 - P(void)), log(+1e-8)."""
    p_in, p_out = lin[..., :-1].softmax(-1), lout[..., :-1].softmax(-1)
    m = seen.to(lin.dtype)
    cls = ((p_in ** (1 - alpha) * p_out ** alpha).log() * m
           + (p_in ** (1 - beta) * p_out ** beta).log() * (1 - m))
    p_void = lin.softmax(-1)[..., -1:]
    return torch.log(torch.cat([cls.softmax(-1) * (1 - p_void), p_void], -1) + 1e-8)


def test_geometric_ensemble_survives_probability_underflow():
    """Cosine logits x 100 differ by up to 200, so softmax probabilities underflow to 0 in
    fp32: the reference's product-then-log form gives -inf and, through -inf * 0 in its
    seen/unseen masking, NaN. Ours must stay finite and equal the reference computed in
    float64 (where nothing underflows)."""
    seen = torch.tensor([True, False, True])
    lin = torch.tensor([[[100.0, -100.0, 20.0, -5.0], [3.0, 1.0, 2.0, 0.0]]])
    lout = torch.tensor([[[-100.0, 100.0, 10.0, 7.0], [0.5, 2.0, 1.0, 9.0]]])
    assert torch.isnan(_reference_ensemble(lin, lout, seen, 0.4, 0.8)).any()
    got = geometric_ensemble(lin, lout, seen, 0.4, 0.8)
    assert torch.isfinite(got).all()
    want = _reference_ensemble(lin.double(), lout.double(), seen, 0.4, 0.8)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
    # the edge weights (CLIP branch off / alone) stay finite too
    for a, b in ((0.0, 1.0), (1.0, 0.0)):
        got = geometric_ensemble(lin, lout, seen, a, b)
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.double(),
                                   _reference_ensemble(lin.double(), lout.double(), seen, a, b),
                                   atol=1e-5, rtol=1e-5)


def test_seen_classes_from_coco_synonyms():
    assert is_seen_class(["person"]) and is_seen_class(["Sofa", "couch"])
    assert is_seen_class(["bike"])                 # a COCO synonym of bicycle
    assert not is_seen_class(["forklift", "fork lift"])
    assert is_seen_class(["forklift", "truck"])    # any synonym counts
    assert is_seen_class(["clothes"]) and is_seen_class(["fridge"])   # FC-CLIP's synonyms


def test_class_max_over_synonyms():
    logits = torch.tensor([[1.0, 5.0, 2.0, -1.0]])
    owner = torch.tensor([0, 1, 1, 2])
    torch.testing.assert_close(class_max(logits, owner, 3), torch.tensor([[1.0, 5.0, -1.0]]))


def test_resize_like_detectron2():
    assert resize_shortest_edge(480, 640, 800, 1333) == (800, 1067)
    assert resize_shortest_edge(1000, 3000, 800, 1333) == (444, 1333)
    assert resize_shortest_edge(800, 600, 800, 1333) == (1067, 800)


def test_missing_head_checkpoint_names_the_setting(tmp_path):
    import open_clip

    clip = open_clip.create_model("ovseg-tiny-ConvNeXt", pretrained=None)
    clip_file = tmp_path / "clip.pt"
    torch.save(clip.state_dict(), clip_file)
    cfg = tiny_cfg(tmp_path, random_init=False)
    cfg["fcclip.clip_checkpoint"] = str(clip_file)
    with pytest.raises(WeightsError, match="fcclip.checkpoint"):
        load_segmenter(cfg)
    cfg["fcclip.checkpoint"] = str(tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match="does not exist.*fcclip.checkpoint"):
        load_segmenter(cfg)


def test_checkpoints_reproduce_the_engine(seg, rgb, tmp_path):
    """Saving CLIP + head and loading them (random_init false) gives the same output."""
    from safetensors.torch import save_file

    eng = seg.engine
    clip_file = tmp_path / "clip.pt"
    torch.save(eng.clip_model.state_dict(), clip_file)
    head_file = tmp_path / "fcclip_head.safetensors"
    save_file({k: v.contiguous() for k, v in eng.head.state_dict().items()}, str(head_file))
    cfg = tiny_cfg(tmp_path, random_init=False, vocabulary=list(seg.vocabulary.names))
    cfg.update({"fcclip.clip_checkpoint": str(clip_file), "fcclip.checkpoint": str(head_file),
                "fcclip.overlap_threshold": 0.0})
    other = load_segmenter(cfg)
    assert not other.random_weights and not other.engine.random_weights
    a, b = seg.predict(rgb, scores=True), other.predict(rgb, scores=True)
    np.testing.assert_array_equal(a.semantic, b.semantic)
    np.testing.assert_array_equal(a.panoptic, b.panoptic)
    np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


def test_onnx_export_smoke(seg):
    """The image path traces to ONNX and ONNX Runtime reproduces it (fixed size)."""
    import io

    import onnxruntime as ort

    # A fixed input: the masked attention and the mask pooling threshold logits at 0, so
    # a logit within rounding of 0 can flip between ORT and torch and move later layers
    # by more than the tolerance (about 1 random input in 60 did, e.g. seed 29).
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(seg.engine.image_model, (x,), buf, dynamo=False, opset_version=17,
                          input_names=["image"])
        ref = seg.engine.image_model(x)
    sess = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    outs = sess.run(None, {"image": x.numpy()})
    assert len(outs) == 3
    for o, r in zip(outs, ref):
        np.testing.assert_allclose(o, r.numpy(), atol=1e-3, rtol=1e-3)


def test_non_convnext_clip_is_a_config_error(tmp_path):
    from ovseg_ros.config import ConfigError

    with pytest.raises(ConfigError, match="fcclip.clip_model.*not a ConvNeXt CLIP"):
        load_segmenter(tiny_cfg(tmp_path, **{"fcclip.clip_model": "ovseg-tiny-ViT"}))


def test_image_is_normalised_as_the_reference_does(seg):
    """What the ConvNeXt stem receives equals the reference's (k - PIXEL_MEAN) / PIXEL_STD on
    the 0..255 values k (the eval configs' numbers), bit for bit, on a photo."""
    import skimage.data

    from ovseg_ros.models.fcclip_head import PIXEL_MEAN_255, PIXEL_STD_255

    e = seg.engine
    x, (h, w) = e.preprocess(skimage.data.coffee())
    k = (x[0] * 255).round().to(torch.uint8)                      # the resized uint8 frame
    official = (k - torch.Tensor(PIXEL_MEAN_255).view(-1, 1, 1)) \
        / torch.Tensor(PIXEL_STD_255).view(-1, 1, 1)
    seen = []
    hook = e.image_model.visual.trunk.stem.register_forward_pre_hook(
        lambda m, a: seen.append(a[0]))
    try:
        with torch.no_grad():
            e.image_model(x)
    finally:
        hook.remove()
    assert torch.equal(seen[0][0, :, :h, :w], official)
    # the former arithmetic (mean and std divided by 255) is not bit-exact on this photo
    from ovseg_ros.models.fcclip_head import CLIP_MEAN, CLIP_STD

    former = (x[0] - torch.tensor(CLIP_MEAN).view(-1, 1, 1)) / torch.tensor(CLIP_STD).view(-1, 1, 1)
    assert not torch.equal(former, official)


def test_semantic_masks_are_resized_before_the_sigmoid(seg):
    """FC-CLIP's eval configs run panoptic inference, so the reference resizes the mask
    logits to the input (sem_seg_postprocess_before_inference) before the sigmoid."""
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(7, 6, 8, generator=g) * 8
    resized, original = (22, 30), (37, 51)
    up = F.interpolate(logits[None], scale_factor=4, mode="bilinear", align_corners=False)
    up = F.interpolate(up[..., :22, :30], size=original, mode="bilinear", align_corners=False)[0]
    got = seg.engine._semantic_masks(logits, resized, original)
    torch.testing.assert_close(got, up.sigmoid())
    assert not torch.allclose(got, up.sigmoid().sigmoid())


@pytest.mark.parametrize("engine", ["fcclip", "maftplus"])
def test_deformable_sampling_setting(tmp_path, engine):
    """``<engine>.deformable_sampling``: every deformable-attention block samples in the
    chosen form, diagnostics name it, the model id separates the forms' graphs, the image
    path's outputs equal the gather form's to rounding; other values are refused."""
    from ovseg_ros.config import ConfigError
    from ovseg_ros.models.deformable_attention import MSDeformAttn

    def build(form):
        return load_segmenter({**tiny_cfg(tmp_path), "engine": engine,
                               f"{engine}.clip_model": "ovseg-tiny-ConvNeXt",
                               f"{engine}.short_side": 64, f"{engine}.max_size": 128,
                               f"{engine}.deformable_sampling": form})

    fast, ordered = build("gather"), build("reference_order")
    blocks = [m for m in ordered.engine.image_model.modules() if isinstance(m, MSDeformAttn)]
    assert blocks and all(m.sampling == "reference_order" for m in blocks)
    assert all(m.sampling == "gather" for m in fast.engine.image_model.modules()
               if isinstance(m, MSDeformAttn))
    assert ordered.engine.describe()["model"]["deformable_sampling"] == "reference_order"
    assert fast.engine.describe()["model"]["deformable_sampling"] == "gather"
    assert ordered.engine._model_id() != fast.engine._model_id()
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for a, b in zip(fast.engine.backend(x), ordered.engine.backend(x)):
            torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-4)
    with pytest.raises(ConfigError, match="deformable_sampling"):
        build("cuda_kernel")
