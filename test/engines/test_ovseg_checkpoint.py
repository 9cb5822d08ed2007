"""The released OVSeg checkpoint's key layout, strict loading, and clear errors."""
import re
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml

from ovseg_ros import load_segmenter
from ovseg_ros.config import make_config
from ovseg_ros.engines.ovseg import OVSegEngine
from ovseg_ros.testing.ovseg_checkpoint import released_state_dict, write_ovseg_checkpoint
from ovseg_ros.weights import WeightsError

torch.set_num_threads(1)

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny_ovseg.yaml"

# Key templates of ovseg_swinbase_vitL14_ft_mpt.pth, written down from the reference code
# (open_vocab_seg/modeling/backbone/swin.py with DEPTHS 2/2/18/2; heads/pixel_decoder.py
# BasePixelDecoder with 4 levels; transformer/transformer.py with 0 encoder and 6 decoder
# layers; transformer_predictor.py + open_vocab_transformer_predictor.py; clip_adapter/
# adapter.py around third_party/CLIP's ViT-L/14 with mask_embedding). template -> copies.
BB, PD, PR = "backbone.", "sem_seg_head.pixel_decoder.", "sem_seg_head.predictor."
CM = "clip_adapter.clip_model."
_BLOCK = ("attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
          "attn.out_proj.bias", "ln_1.weight", "ln_1.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
          "mlp.c_proj.weight", "mlp.c_proj.bias", "ln_2.weight", "ln_2.bias")
_WB = ("weight", "bias")
REFERENCE_TEMPLATES = {
    **{BB + f"patch_embed.{m}.{p}": 1 for m in ("proj", "norm") for p in _WB},
    **{BB + f"layers.#.blocks.#.{k}": 24 for k in (
        "norm1.weight", "norm1.bias", "attn.relative_position_bias_table",
        "attn.relative_position_index", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
        "attn.proj.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
        "mlp.fc2.weight", "mlp.fc2.bias")},
    **{BB + f"layers.#.downsample.{k}": 3 for k in ("reduction.weight", "norm.weight",
                                                     "norm.bias")},
    **{BB + f"norm{i}.{p}": 1 for i in range(4) for p in _WB},
    **{PD + f"{m}_{i}.{k}": 1 for m, n in (("adapter", 3), ("layer", 4)) for i in range(1, n + 1)
       for k in ("weight", "norm.weight", "norm.bias")},
    PD + "mask_features.weight": 1, PD + "mask_features.bias": 1,
    **{PR + f"transformer.decoder.layers.#.{k}": 6 for k in (
        *(f"{a}.{p}" for a in ("self_attn", "multihead_attn")
          for p in ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")),
        *(f"{m}.{p}" for m in ("linear1", "linear2", "norm1", "norm2", "norm3") for p in _WB))},
    PR + "transformer.decoder.norm.weight": 1, PR + "transformer.decoder.norm.bias": 1,
    PR + "query_embed.weight": 1, PR + "input_proj.weight": 1, PR + "input_proj.bias": 1,
    **{PR + f"mask_embed.layers.#.{p}": 3 for p in _WB},
    **{PR + f"class_embed.layers.#.{p}": 2 for p in _WB},
    **{CM + f"visual.{k}": 1 for k in ("class_embedding", "positional_embedding", "proj",
                                       "conv1.weight", "ln_pre.weight", "ln_pre.bias",
                                       "ln_post.weight", "ln_post.bias", "mask_embedding")},
    **{CM + f"visual.transformer.resblocks.#.{k}": 24 for k in _BLOCK},
    **{CM + f"transformer.resblocks.#.{k}": 12 for k in _BLOCK},
    **{CM + k: 1 for k in ("positional_embedding", "text_projection", "logit_scale",
                           "token_embedding.weight", "ln_final.weight", "ln_final.bias")},
    "clip_adapter.non_object_embedding": 1, "clip_adapter.pixel_mean": 1,
    "clip_adapter.pixel_std": 1,
}


def _templates(keys):
    return Counter(re.sub(r"\.\d+\.", ".#.", k) for k in keys)


def tiny(**extra):
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg.update({"text_cache_dir": ""}, **extra)
    return cfg


@pytest.fixture(scope="module")
def released_layout():
    return OVSegEngine.checkpoint_layout(make_config({"engine": "ovseg"}))


def test_released_layout_has_the_reference_keys(released_layout):
    assert dict(_templates(released_layout)) == REFERENCE_TEMPLATES
    lay = released_layout
    # shapes that pin the released architecture (Swin-B w12, 100 queries, ViT-L/14, depth 3)
    assert lay[BB + "patch_embed.proj.weight"] == (128, 3, 4, 4)
    assert lay[BB + "layers.2.blocks.17.attn.relative_position_bias_table"] == (23 * 23, 16)
    assert lay[BB + "layers.3.blocks.1.attn.relative_position_index"] == (144, 144)
    assert lay[BB + "layers.2.downsample.reduction.weight"] == (1024, 2048)
    assert lay[BB + "norm3.weight"] == (1024,)
    assert lay[PD + "adapter_1.weight"] == (256, 128, 1, 1)
    assert lay[PD + "layer_4.weight"] == (256, 1024, 3, 3)
    assert lay[PR + "input_proj.weight"] == (256, 1024, 1, 1)
    assert lay[PR + "query_embed.weight"] == (100, 256)
    assert lay[PR + "transformer.decoder.layers.5.linear1.weight"] == (2048, 256)
    assert lay[PR + "class_embed.layers.0.weight"] == (1024, 256)
    assert lay[PR + "class_embed.layers.1.weight"] == (768, 1024)
    assert lay[PR + "mask_embed.layers.2.weight"] == (256, 256)
    assert lay[CM + "visual.mask_embedding"] == (3, 256, 1024)
    assert lay[CM + "visual.conv1.weight"] == (1024, 3, 14, 14)
    assert lay[CM + "visual.positional_embedding"] == (257, 1024)
    assert lay[CM + "visual.proj"] == (1024, 768)
    assert lay[CM + "token_embedding.weight"] == (49408, 768)
    assert lay[CM + "positional_embedding"] == (77, 768)
    assert lay["clip_adapter.non_object_embedding"] == (1, 768)
    assert lay["clip_adapter.pixel_mean"] == (1, 3, 1, 1)


def test_inference_keys():
    assert OVSegEngine.is_inference_key("backbone.norm0.weight")
    assert OVSegEngine.is_inference_key("clip_adapter.clip_model.visual.mask_embedding")
    assert OVSegEngine.is_inference_key("sem_seg_head.predictor.query_embed.weight")
    assert not OVSegEngine.is_inference_key("criterion.empty_weight")
    assert not OVSegEngine.is_inference_key("sem_seg_head_extra")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_released_layout_file_loads_strictly(tmp_path, suffix):
    path = tmp_path / f"ovseg{suffix}"
    sd = write_ovseg_checkpoint(tiny(), path, seed=5)
    assert set(sd) - set(OVSegEngine.checkpoint_layout(make_config(tiny()))) == \
        {"criterion.empty_weight"}
    seg = load_segmenter(tiny(random_init=False, **{"ovseg.checkpoint": str(path)}))
    assert not seg.engine.random_weights
    got = seg.engine.weights.state_dict()
    for key in ("backbone.layers.1.blocks.1.attn.qkv.weight",
                "clip_adapter.clip_model.visual.mask_embedding",
                "clip_adapter.clip_model.token_embedding.weight",
                "clip_adapter.non_object_embedding",
                "sem_seg_head.predictor.class_embed.layers.1.bias"):
        torch.testing.assert_close(got[key], sd[key], rtol=0, atol=0)
    # the text tower comes from the file: its identity names the file, not a tag
    assert "file:" in seg.engine.text_encoder_id()


def _broken(tmp_path, change):
    sd = released_state_dict(tiny(), seed=1)
    change(sd)
    path = tmp_path / "broken.pth"
    torch.save({"model": sd}, str(path))
    return path


def _load(path):
    return load_segmenter(tiny(random_init=False, **{"ovseg.checkpoint": str(path)}))


def test_missing_key_is_named(tmp_path):
    key = "sem_seg_head.predictor.query_embed.weight"
    path = _broken(tmp_path, lambda sd: sd.pop(key))
    with pytest.raises(WeightsError, match=r"missing keys \(1\): " + re.escape(key)):
        _load(path)


def test_unexpected_key_is_named(tmp_path):
    path = _broken(tmp_path, lambda sd: sd.__setitem__("sem_seg_head.extra.weight",
                                                       torch.zeros(3)))
    with pytest.raises(WeightsError, match=r"unexpected keys \(1\): sem_seg_head\.extra\.weight"):
        _load(path)


def test_mis_shaped_key_is_named(tmp_path):
    key = "clip_adapter.clip_model.visual.mask_embedding"

    def change(sd):
        sd[key] = torch.zeros(2, *sd[key].shape[1:])

    path = _broken(tmp_path, change)
    with pytest.raises(WeightsError) as err:
        _load(path)
    msg = str(err.value)
    assert "shape mismatches (1)" in msg and key in msg and "(2, 256, 64)" in msg \
        and "(3, 256, 64)" in msg and "ovseg.mask_prompt_depth" in msg


def test_all_problems_in_one_error(tmp_path):
    def change(sd):
        sd.pop("backbone.norm0.weight")
        sd["mystery"] = torch.zeros(1)
        sd["clip_adapter.non_object_embedding"] = torch.zeros(1, 7)

    with pytest.raises(WeightsError) as err:
        _load(_broken(tmp_path, change))
    msg = str(err.value)
    for part in ("missing keys (1): backbone.norm0.weight", "unexpected keys (1): mystery",
                 "clip_adapter.non_object_embedding: checkpoint (1, 7) vs model (1, 32)",
                 "ovseg.checkpoint"):
        assert part in msg, msg


def test_missing_or_unset_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="ovseg.checkpoint"):
        load_segmenter(tiny(random_init=False))
    with pytest.raises(WeightsError, match="does not exist"):
        _load(tmp_path / "nope.pth")


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "obj.pth"
    torch.save({"model": released_state_dict(tiny()), "cfg": object()}, str(path))
    with pytest.raises(WeightsError, match="weights_only"):
        _load(path)


def test_weights_tool_convert_keeps_the_inference_keys_and_the_engine_loads_them(tmp_path):
    """`ovseg-weights convert --engine ovseg` (ovseg_ros.weights.convert) uses the engine's
    checkpoint_layout / is_inference_key: the converted file drops criterion.* and loads."""
    from ovseg_ros.weights.convert import convert

    src, dst = tmp_path / "released.pth", tmp_path / "ovseg.safetensors"
    sd = write_ovseg_checkpoint(tiny(), src, seed=2)
    convert(src, dst, "ovseg", cfg=make_config(tiny()))
    from safetensors.torch import load_file

    out = load_file(str(dst))
    assert set(out) == set(sd) - {"criterion.empty_weight"}
    seg = load_segmenter(tiny(random_init=False, **{"ovseg.checkpoint": str(dst)}))
    torch.testing.assert_close(seg.engine.weights.state_dict()["backbone.norm3.weight"],
                               sd["backbone.norm3.weight"], rtol=0, atol=0)
