"""Fast exact text encoding (ovseg_ros/core/text_cache.py): a template's shared leading
tokens run once and rows packed, or token batches cut to the longest prompt, each checked
against full length once, bf16 with a bf16 image path, batches in (template, length)
order; on the tiny random open_clip text towers (real CLIP text modules)."""
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
    assert eng._text_encoder.exact() and eng._text_encoder.mode == "shared_prefix"
    with torch.no_grad():
        want = eng.clip_model.encode_text(eng.tokenizer(PROMPTS), normalize=True).float()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


# --- shared-prefix path -------------------------------------------------------------------
TEMPLATES = ("a photo of a {}.", "a bad photo of the {}.", "itap of a {}.", "{}")
SYNONYMS = ["cat", "a very long synonym of an object with many words", "x", "sofa", "cat",
            "traffic light"]


def tiny_encoder(eng, model=None):
    return OpenClipTextEncoder(model or eng.clip_model, eng._tokenizer, "cpu")


def test_shared_prefix_equals_full_length(tiny_segmenter):
    eng = tiny_segmenter.engine
    enc = tiny_encoder(eng)
    assert enc.exact() and enc.mode == "shared_prefix" and enc.fallback_reason == ""
    one_template = [TEMPLATES[0].replace("{}", s) for s in SYNONYMS]       # with a duplicate
    mixed = [t.replace("{}", s) for s in SYNONYMS for t in TEMPLATES]
    cases = {"one template": one_template, "one row": ["a photo of a cat."], "one token": ["x"],
             # the prefix is all of a row but its pooled token
             "prefix only": ["a photo of a", "a photo of a cat.", "a photo of a"],
             "mixed templates": mixed, "mixed, reversed": mixed[::-1], "as given": PROMPTS}
    for name, prompts in cases.items():
        torch.testing.assert_close(enc(prompts), full_length(eng, prompts), atol=1e-5,
                                   rtol=1e-5, msg=name)
    tokens = eng._tokenizer(one_template)
    groups = enc._prefix_groups(tokens, enc._pool_index(tokens) + 1)
    assert len(groups) == 1 and groups[0][1] == 5      # <sot> a photo of a
    assert sorted(groups[0][0]) == list(range(len(one_template)))
    tokens = eng._tokenizer(mixed)
    groups = enc._prefix_groups(tokens, enc._pool_index(tokens) + 1)
    assert sorted(i for g, _ in groups for i in g) == list(range(len(mixed)))
    assert max(p for _, p in groups) >= 5


def test_non_standard_block_keeps_truncation(tiny_segmenter, caplog):
    from open_clip.transformer import ResidualAttentionBlock

    eng = tiny_segmenter.engine
    # a subclass (its forward may differ), extra key biases, a cross-attention block
    sub = copy.deepcopy(eng.clip_model)
    blk = sub.transformer.resblocks[-1]
    blk.__class__ = type("MyBlock", (ResidualAttentionBlock,), {})
    biased = copy.deepcopy(eng.clip_model)
    attn = biased.transformer.resblocks[0].attn
    attn.bias_k = torch.nn.Parameter(torch.zeros(1, 1, attn.embed_dim))
    attn.bias_v = torch.nn.Parameter(torch.zeros(1, 1, attn.embed_dim))
    cross = copy.deepcopy(eng.clip_model)
    cross.transformer.resblocks[0].ln_1_kv = torch.nn.LayerNorm(attn.embed_dim)
    for model, words in ((sub, "MyBlock"), (biased, "key/value biases"),
                         (cross, "cross-attention")):
        enc = tiny_encoder(eng, model)
        with caplog.at_level(logging.WARNING):
            assert enc.exact()
        assert enc.mode == "truncated" and words in enc.fallback_reason, enc.fallback_reason
    assert "without shared prefixes" in caplog.text
    enc = tiny_encoder(eng, sub)
    torch.testing.assert_close(enc(PROMPTS), full_length(eng, PROMPTS), atol=1e-5, rtol=1e-5)


def test_shared_prefix_probe_mismatch_falls_back_to_truncation(tiny_segmenter, monkeypatch):
    eng = tiny_segmenter.engine
    enc = tiny_encoder(eng)
    real = enc._forward_shared
    monkeypatch.setattr(enc, "_forward_shared", lambda tokens: real(tokens) + 0.1)
    assert enc.exact() and enc.mode == "truncated" and "differ" in enc.fallback_reason
    calls = []
    real_cut = enc._forward
    monkeypatch.setattr(enc, "_forward",
                        lambda tokens, truncate: calls.append(truncate) or real_cut(tokens,
                                                                                    truncate))
    torch.testing.assert_close(enc(PROMPTS), full_length(eng, PROMPTS), atol=1e-5, rtol=1e-5)
    assert calls == [True]
    broken = tiny_encoder(eng)

    def fails(tokens):
        raise RuntimeError("unforeseen")

    monkeypatch.setattr(broken, "_forward_shared", fails)
    assert broken.exact() and broken.mode == "truncated"
    assert "failed: RuntimeError: unforeseen" in broken.fallback_reason


def test_template_batches_keep_each_synonym_in_place(tiny_segmenter, monkeypatch):
    """Batches in (template, length) order; a batch of one template's prompts shares its
    prefix; every synonym still gets its own template mean."""
    eng = tiny_segmenter.engine
    seen = []

    def spy(prompts):
        seen.append(list(prompts))
        return eng.encode_prompts(prompts)

    emb = TextEmbedder(spy, "id", "custom", TEMPLATES, batch_size=4)
    got = emb.embed_synonyms(SYNONYMS[:4] + SYNONYMS[5:])
    syns = SYNONYMS[:4] + SYNONYMS[5:]
    assert sum(map(len, seen)) == len(syns) * len(TEMPLATES)
    flat = [p for b in seen for p in b]
    want_order = [t.replace("{}", s) for t in TEMPLATES
                  for s in sorted(syns, key=lambda s: len(t.replace("{}", s)))]
    assert flat == want_order
    for i, s in enumerate(syns):
        one = full_length(eng, [t.replace("{}", s) for t in TEMPLATES])
        torch.testing.assert_close(got[i], F.normalize(one.mean(0), dim=-1), atol=1e-5,
                                   rtol=1e-5)


def test_ovseg_uses_the_shared_prefix_encoder(tmp_path):
    from ovseg_ros.presets import TINY_OVSEG

    seg = load_segmenter(dict(TINY_OVSEG, text_cache_dir=str(tmp_path)))
    eng = seg.engine
    got = eng.encode_prompts(PROMPTS)
    assert eng._text_encoder.exact() and eng._text_encoder.mode == "shared_prefix"
    assert eng.text_precision == "fp32"
    with torch.no_grad():
        want = eng.clip_model.encode_text(eng.tokenizer(PROMPTS), normalize=True).float()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
