"""Text embeddings: template averaging, synonyms, in-memory and on-disk caches.

The encoder is the tiny random open_clip text tower of the test engine, wrapped
to count the prompts it receives."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from ovseg_ros import load_segmenter, make_config
from ovseg_ros.core.templates import VILD_TEMPLATES, get_templates, imagenet80_templates
from ovseg_ros.core.text_cache import TextEmbedder


class Counting:
    """The engine's real encode_prompts, counting calls and prompts."""

    def __init__(self, engine):
        self.engine = engine
        self.calls = 0
        self.prompts = 0

    def __call__(self, prompts):
        self.calls += 1
        self.prompts += len(prompts)
        return self.engine.encode_prompts(prompts)


@pytest.fixture
def engine(tiny_segmenter):
    return tiny_segmenter.engine


@pytest.fixture
def cache(tmp_path):
    """A cache directory of its own (tiny_config's text cache lives beside it)."""
    return tmp_path / "own_cache"


def embedder(engine, cache_dir, templates=("a photo of a {}.", "a {} in the scene"),
             name="custom", encoder_id=None, batch_size=256):
    counter = Counting(engine)
    emb = TextEmbedder(counter, encoder_id or engine.text_encoder_id(), name, templates,
                       cache_dir=str(cache_dir), batch_size=batch_size)
    return emb, counter


def test_template_sets():
    assert len(imagenet80_templates()) == 80 and imagenet80_templates()[0] == "a bad photo of a {}."
    assert len(VILD_TEMPLATES) == 14
    assert get_templates("custom", ["{} here"]) == ("{} here",)
    cfg = make_config(prompt_templates="custom", custom_templates=["a {} photo"])
    assert cfg["custom_templates"] == ["a {} photo"]


def test_embedding_is_normalised_template_mean(engine, cache):
    templates = ("a photo of a {}.", "a {} in the scene", "itap of a {}.")
    emb, _ = embedder(engine, cache, templates)
    got = emb.embed_synonyms(["red car"])[0]
    per_prompt = engine.encode_prompts([t.replace("{}", "red car") for t in templates])
    torch.testing.assert_close(per_prompt.norm(dim=-1), torch.ones(3))
    mean = per_prompt.mean(0)
    torch.testing.assert_close(got, mean / mean.norm(), atol=1e-6, rtol=1e-5)


def test_vocabulary_layout(engine, cache):
    emb, _ = embedder(engine, cache)
    vectors, owner = emb.embed_vocabulary([("sofa", "couch"), ("floor",)])
    assert vectors.shape == (3, 32) and vectors.dtype == torch.float32
    assert owner.tolist() == [0, 0, 1] and owner.dtype == torch.long
    torch.testing.assert_close(vectors[2], emb.embed_synonyms(["floor"])[0])


def test_memory_cache_and_incremental_encoding(engine, cache):
    emb, counter = embedder(engine, cache, batch_size=3)
    emb.embed_vocabulary([("person",), ("sofa", "couch"), ("floor",)])
    assert counter.prompts == 4 * 2 and counter.calls == 3         # 8 prompts in batches of 3
    emb.embed_vocabulary([("person",), ("sofa", "couch"), ("floor",)])
    assert counter.prompts == 8                                      # all from memory
    emb.embed_vocabulary([("person",), ("forklift",), ("floor",)])
    assert counter.prompts == 8 + 2                                  # only the new class
    assert emb.last_stats["encoded"] == 1 and emb.last_stats["memory_hits"] == 2


def test_disk_cache_hit_skips_the_encoder(engine, cache):
    first, c1 = embedder(engine, cache)
    a, _ = first.embed_vocabulary([("person",), ("pallet", "skid")])
    second, c2 = embedder(engine, cache)                         # a new process, same dir
    b, _ = second.embed_vocabulary([("person",), ("pallet", "skid")])
    assert c1.prompts == 6 and c2.calls == 0
    torch.testing.assert_close(a, b)
    assert second.last_stats["disk_hits"] == 3
    files = list(cache.rglob("*.npy"))
    assert len(files) == 3
    np.load(files[0], allow_pickle=False)                            # safe format


def test_cache_key_separates_templates_and_weights(engine, cache):
    base, _ = embedder(engine, cache)
    base.embed_synonyms(["person"])
    other_t, c1 = embedder(engine, cache, templates=("a sketch of a {}.",))
    other_t.embed_synonyms(["person"])
    other_w, c2 = embedder(engine, cache, encoder_id="ViT-B-16|tag:openai")
    other_w.embed_synonyms(["person"])
    assert c1.prompts == 1 and c2.prompts == 2
    assert len({p.parent for p in cache.rglob("*.npy")}) == 3


def test_damaged_cache_file_is_re_encoded(engine, cache):
    first, _ = embedder(engine, cache)
    good = first.embed_synonyms(["person"])
    (path,) = cache.rglob("*.npy")
    path.write_bytes(b"not a numpy file")
    second, counter = embedder(engine, cache)
    torch.testing.assert_close(second.embed_synonyms(["person"]), good)
    assert counter.prompts == 2
    np.load(path, allow_pickle=False)                                # rewritten


def test_cached_150_class_vocabulary_is_not_encoded_again(tiny_config, tmp_path):
    # how long a cached reload takes is a benchmark figure (ovseg-bench); here: no encoding
    classes = [f"class number {i}" for i in range(150)]
    cfg = dict(tiny_config, vocabulary=classes, prompt_templates="vild14")
    assert load_segmenter(cfg).vocabulary.num_classes == 150         # fills the disk cache
    seg = load_segmenter(cfg)                                        # a fresh embedder
    seg.set_vocabulary(list(reversed(classes)))
    assert seg._text.last_stats["encoded"] == 0
    assert seg._text.prompts_encoded == 0


def test_default_vocabulary_is_encoded_lazily(tiny_config):
    seg = load_segmenter(dict(tiny_config, vocabulary=["never", "used"]))
    seg.set_vocabulary(["zebra"])
    assert seg._text.prompts_encoded > 0
    assert seg.vocabulary.names == ("zebra",)
    assert seg.vocabulary.version == 1     # the default was never applied


def test_segmenter_reports_text_encode_time_once(tiny_segmenter, rgb_frame):
    tiny_segmenter.set_vocabulary(["zebra", "giraffe"])
    first = tiny_segmenter.predict(rgb_frame).timings["text_encode"]
    second = tiny_segmenter.predict(rgb_frame).timings["text_encode"]
    assert first > 0 and second == 0.0


def test_disabled_disk_cache_writes_nothing(tiny_config, tmp_path):
    cfg = dict(tiny_config, text_cache_dir="")
    seg = load_segmenter(cfg)
    assert seg.vocabulary.num_classes == 10
    assert not list(tmp_path.rglob("*.npy"))


def test_engine_default_templates_and_config_choice(tiny_config):
    seg = load_segmenter(tiny_config)
    assert seg._text.templates == imagenet80_templates()              # ProxyCLIP's default
    seg = load_segmenter(dict(tiny_config, prompt_templates="vild14"))
    assert seg._text.templates == VILD_TEMPLATES
    seg = load_segmenter(dict(tiny_config, prompt_templates="custom",
                              custom_templates=["{} {{literal braces}}"]))
    assert seg._text.templates == ("{} {{literal braces}}",)
    emb = seg._text.embed_synonyms(["cup"])                           # replace, not format
    assert torch.isfinite(emb).all()


def test_unwritable_cache_dir_keeps_working(engine, tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory should be")
    emb, counter = embedder(engine, blocker / "cache")
    with caplog.at_level("WARNING"):
        vectors, _ = emb.embed_vocabulary([("person",), ("car",)])
    assert vectors.shape[0] == 2 and counter.prompts == 4
    assert "not writable" in caplog.text
    emb.embed_vocabulary([("person",), ("car",)])
    assert counter.prompts == 4                                      # memory cache still works
