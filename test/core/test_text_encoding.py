"""Fast exact text encoding (ovseg_ros/core/text_cache.py): token batches cut to the
longest prompt, checked against full length once, bf16 with a bf16 image path, batches
in length order; on the tiny random open_clip text tower (a real CLIP text module)."""
from __future__ import annotations

import copy
import logging

import torch
import torch.nn.functional as F

from ovseg_ros import load_segmenter
from ovseg_ros.core.text_cache import OpenClipTextEncoder, TextEmbedder, text_batch_size

PROMPTS = ["a photo of a cat.", "x", "a bad photo of the sofa, couch and floor in a dim room.",
           "itap of a forklift,fork lift.", "a sculpture of a very long and strangely named "
           "object standing beside another object in a museum hall at night."]


def full_length(engine, prompts):
    tokens = engine._tokenizer(prompts)
    with torch.no_grad():
        return F.normalize(engine.clip_model.encode_text(tokens).float(), dim=-1)


def test_truncated_batches_equal_full_length(tiny_segmenter):
    eng = tiny_segmenter.engine
    enc = OpenClipTextEncoder(eng.clip_model, eng._tokenizer, "cpu")
    assert enc.exact() and enc.fallback_reason == ""
    tokens = eng._tokenizer(PROMPTS)
    assert int(tokens.argmax(-1).max()) + 1 < tokens.shape[1]     # really truncated
    torch.testing.assert_close(enc(PROMPTS), full_length(eng, PROMPTS), atol=1e-5, rtol=1e-5)
    # the engine's encode_prompts is this encoder
    torch.testing.assert_close(eng.encode_prompts(PROMPTS), full_length(eng, PROMPTS),
                               atol=1e-5, rtol=1e-5)
    assert eng._text_encoder.exact()


def test_non_causal_tower_falls_back_to_full_length(tiny_segmenter, caplog):
    eng = tiny_segmenter.engine
    model = copy.deepcopy(eng.clip_model)
    model.attn_mask = None              # every token sees the padding: truncation not exact
    enc = OpenClipTextEncoder(model, eng._tokenizer, "cpu")
    with caplog.at_level(logging.WARNING):
        assert not enc.exact()
    assert "causal" in enc.fallback_reason and "full context length" in caplog.text
    with torch.no_grad():
        want = F.normalize(model.encode_text(eng._tokenizer(PROMPTS)).float(), dim=-1)
    torch.testing.assert_close(enc(PROMPTS), want, rtol=0, atol=0)


def test_probe_mismatch_falls_back(tiny_segmenter, monkeypatch):
    eng = tiny_segmenter.engine
    enc = OpenClipTextEncoder(eng.clip_model, eng._tokenizer, "cpu")
    real = enc._forward

    def skewed(tokens, truncate):     # a tower whose cut batches would differ
        out = real(tokens, truncate)
        return out + 0.1 if truncate else out

    monkeypatch.setattr(enc, "_forward", skewed)
    assert not enc.exact() and "differ" in enc.fallback_reason
    torch.testing.assert_close(enc(PROMPTS), full_length(eng, PROMPTS), rtol=0, atol=0)


def test_text_stays_fp32_with_a_bf16_image_path_and_bf16_encoder_is_close(tiny_config):
    """The engines keep the text tower in fp32 whatever the image precision (a bf16 tower
    moves labels); the encoder still runs bf16 when asked, close to fp32."""
    fp32 = load_segmenter(tiny_config)
    bf16 = load_segmenter(dict(tiny_config, precision="bf16"))
    assert fp32.engine.text_precision == bf16.engine.text_precision == "fp32"
    assert bf16._text.key == fp32._text.key and "text=" not in bf16._text.key
    eng = fp32.engine
    a = OpenClipTextEncoder(eng.clip_model, eng._tokenizer, "cpu")(PROMPTS)
    b = OpenClipTextEncoder(eng.clip_model, eng._tokenizer, "cpu", torch.bfloat16)(PROMPTS)
    assert b.dtype == torch.float32
    cos = (a * b).sum(-1)
    assert float(cos.min()) > 0.99 and not torch.equal(a, b)


def test_length_ordered_batches_keep_each_synonym_in_place(tiny_segmenter, tmp_path, caplog):
    eng = tiny_segmenter.engine
    synonyms = ["cat", "a very long synonym of an object with many words", "x", "sofa",
                "traffic light", "fire hydrant next to a red brick wall"]
    templates = ("{}", "a photo of a {}.", "there is a {} in the scene, seen from far away.")
    small = TextEmbedder(eng.encode_prompts, "id", "custom", templates, batch_size=2)
    big = TextEmbedder(eng.encode_prompts, "id", "custom", templates, batch_size=1000)
    with caplog.at_level(logging.INFO, logger="ovseg_ros.core.text_cache"):
        a = small.embed_synonyms(synonyms)
    assert "encoded 18 prompts (6 synonyms x 3 templates)" in caplog.text   # a long encode
    b = big.embed_synonyms(synonyms)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # each synonym's row is its own template mean, whatever the batch it was encoded in
    for i, s in enumerate(synonyms):
        one = eng.encode_prompts([t.replace("{}", s) for t in templates])
        torch.testing.assert_close(a[i], F.normalize(one.mean(0), dim=-1), atol=1e-5,
                                   rtol=1e-5)


def test_batch_size_follows_the_device():
    assert text_batch_size("cpu") == 256
    assert text_batch_size("cuda") > text_batch_size("cpu")


def test_fcclip_uses_the_truncating_encoder(tmp_path):
    import ovseg_ros.testing.tiny_models  # noqa: F401

    seg = load_segmenter({"engine": "fcclip", "random_init": True, "precision": "fp32",
                          "fcclip.clip_model": "ovseg-tiny-ConvNeXt", "fcclip.short_side": 64,
                          "fcclip.max_size": 128, "text_cache_dir": str(tmp_path)})
    eng = seg.engine
    got = eng.encode_prompts(PROMPTS)
    assert eng._text_encoder.exact()
    with torch.no_grad():
        want = eng.clip_model.encode_text(eng.tokenizer(PROMPTS), normalize=True).float()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
