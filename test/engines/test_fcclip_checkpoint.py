"""Reference key layout of the FC-CLIP / MAFT+ checkpoints and strict loading."""
import re
from collections import Counter

import pytest
import torch
from safetensors.torch import save_file

import ovseg_ros.testing.tiny_models  # noqa: F401  (tiny open_clip configs)
from ovseg_ros.models.cdt import build_maftplus_head
from ovseg_ros.engines.fcclip import FCClipEngine
from ovseg_ros.engines.maftplus import MAFTPlusEngine
from ovseg_ros.models.checkpoint import layout_of, load_reference_checkpoint
from ovseg_ros.models.fcclip_head import FCCLIPHeadWeights, HeadSpec
from ovseg_ros.weights import WeightsError

torch.set_num_threads(1)

# ConvNeXt-L CLIP (convnext_large_d_320): res2..res5 widths and the CLIP embedding width
CONVNEXT_L = HeadSpec(in_channels=(192, 384, 768, 1536), clip_embedding_dim=768, num_queries=250)

# Key templates of the released FC-CLIP head, written down from the reference code
# (fcclip/modeling/pixel_decoder/msdeformattn.py, transformer_decoder/
# fcclip_transformer_decoder.py, fcclip.py) with the ConvNeXt-L config: 3 input
# projections, 6 encoder layers, one FPN level, 9 decoder layers, 3-layer MLPs.
# template -> how many indexed copies it has.
PD = "sem_seg_head.pixel_decoder."
PR = "sem_seg_head.predictor."
REFERENCE_TEMPLATES = {
    **{PD + f"input_proj.#.{i}.{p}": 3 for i in (0, 1) for p in ("weight", "bias")},
    PD + "transformer.level_embed": 1,
    **{PD + f"transformer.encoder.layers.#.{m}.{p}": 6
       for m in ("self_attn.sampling_offsets", "self_attn.attention_weights",
                 "self_attn.value_proj", "self_attn.output_proj", "norm1", "linear1", "linear2",
                 "norm2") for p in ("weight", "bias")},
    PD + "mask_features.weight": 1, PD + "mask_features.bias": 1,
    PD + "adapter_1.weight": 1, PD + "adapter_1.norm.weight": 1, PD + "adapter_1.norm.bias": 1,
    PD + "layer_1.weight": 1, PD + "layer_1.norm.weight": 1, PD + "layer_1.norm.bias": 1,
    **{PR + f"transformer_self_attention_layers.#.{p}": 9
       for p in ("self_attn.in_proj_weight", "self_attn.in_proj_bias",
                 "self_attn.out_proj.weight", "self_attn.out_proj.bias",
                 "norm.weight", "norm.bias")},
    **{PR + f"transformer_cross_attention_layers.#.{p}": 9
       for p in ("multihead_attn.in_proj_weight", "multihead_attn.in_proj_bias",
                 "multihead_attn.out_proj.weight", "multihead_attn.out_proj.bias",
                 "norm.weight", "norm.bias")},
    **{PR + f"transformer_ffn_layers.#.{p}": 9
       for p in ("linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias",
                 "norm.weight", "norm.bias")},
    PR + "decoder_norm.weight": 1, PR + "decoder_norm.bias": 1,
    PR + "query_feat.weight": 1, PR + "query_embed.weight": 1, PR + "level_embed.weight": 1,
    **{PR + f"mask_embed.layers.#.{p}": 3 for p in ("weight", "bias")},
    **{PR + f"class_embed.layers.#.{p}": 3 for p in ("weight", "bias")},
    **{PR + f"_mask_pooling_proj.#.{p}": 2 for p in ("weight", "bias")},
    PR + "logit_scale": 1,
    "void_embedding.weight": 1,
}


def _templates(keys):
    return Counter(re.sub(r"\.\d+\.", ".#.", k) for k in keys)


@pytest.fixture(scope="module")
def convnext_l_head():
    return FCCLIPHeadWeights(CONVNEXT_L)


def test_convnext_l_head_has_the_reference_keys_and_size(convnext_l_head):
    sd = convnext_l_head.state_dict()
    assert dict(_templates(sd)) == REFERENCE_TEMPLATES
    # shapes that pin the architecture constants
    assert sd[PR + "query_feat.weight"].shape == (250, 256)
    assert sd[PD + "input_proj.0.0.weight"].shape == (256, 1536, 1, 1)       # res5 first
    assert sd[PD + "input_proj.2.0.weight"].shape == (256, 384, 1, 1)        # res3 last
    assert sd[PD + "adapter_1.weight"].shape == (256, 192, 1, 1)             # res2 FPN level
    assert sd[PD + "transformer.encoder.layers.0.self_attn.sampling_offsets.weight"].shape \
        == (8 * 3 * 4 * 2, 256)
    assert sd[PD + "transformer.encoder.layers.0.linear1.weight"].shape == (1024, 256)
    assert sd[PR + "transformer_ffn_layers.0.linear1.weight"].shape == (2048, 256)
    assert sd[PR + "class_embed.layers.2.weight"].shape == (768, 256)
    assert sd["void_embedding.weight"].shape == (1, 768)
    n_params = sum(v.numel() for v in sd.values())
    assert 20.6e6 < n_params < 20.8e6          # 20.72 M parameters (docs/fcclip.md)


def _load(path, head, clip_model, engine):
    """The engine's loading rules (its key filter, its layout form) on these modules."""
    return load_reference_checkpoint(
        path, head, clip_model, setting=f"{engine.name}.checkpoint",
        layout=layout_of(head, clip_model, visual=engine.dense_output),
        is_inference_key=engine.is_inference_key)


@pytest.fixture(scope="module")
def tiny_clip():
    import open_clip

    return open_clip.create_model("ovseg-tiny-ConvNeXt", pretrained=None)


def test_full_synthetic_checkpoint_loads_strictly(convnext_l_head, tiny_clip, tmp_path):
    src = {k: torch.randn_like(v) for k, v in convnext_l_head.state_dict().items()}
    src["criterion.empty_weight"] = torch.ones(134)         # training state: skipped
    path = tmp_path / "fcclip_cocopan.safetensors"
    save_file(src, str(path))
    target = FCCLIPHeadWeights(CONVNEXT_L)
    report = _load(path, target, tiny_clip, FCClipEngine)
    assert report.head_keys == len(src) - 1 and report.skipped_keys == 1
    for k, v in target.state_dict().items():
        assert torch.equal(v, src[k]), k


def test_missing_and_unexpected_keys_are_listed(tiny_clip, tmp_path):
    spec = HeadSpec(in_channels=(16, 24, 32, 48), clip_embedding_dim=32, num_queries=4,
                    enc_layers=1, dec_layers=1)
    head = FCCLIPHeadWeights(spec)
    sd = dict(head.state_dict())
    del sd["void_embedding.weight"]
    sd["sem_seg_head.predictor.class_embed_old.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save({"model": sd, "iteration": 5}, path)      # detectron2 layout
    with pytest.raises(WeightsError) as err:
        _load(path, FCCLIPHeadWeights(spec), tiny_clip, FCClipEngine)
    msg = str(err.value)
    assert "missing keys (1): void_embedding.weight" in msg
    assert "unexpected keys (1): sem_seg_head.predictor.class_embed_old.weight" in msg
    assert "fcclip.checkpoint" in msg


def test_shape_mismatch_and_missing_file(tiny_clip, tmp_path):
    spec = HeadSpec(in_channels=(16, 24, 32, 48), clip_embedding_dim=32, num_queries=4,
                    enc_layers=1, dec_layers=1)
    sd = FCCLIPHeadWeights(spec).state_dict()
    path = tmp_path / "q4.pth"
    torch.save(sd, path)
    other = HeadSpec(in_channels=(16, 24, 32, 48), clip_embedding_dim=32, num_queries=6,
                     enc_layers=1, dec_layers=1)
    with pytest.raises(WeightsError, match="shape mismatches.*query_feat"):
        _load(path, FCCLIPHeadWeights(other), tiny_clip, FCClipEngine)
    with pytest.raises(WeightsError, match="does not exist.*'fcclip.checkpoint'"):
        _load(tmp_path / "nope.pth", FCCLIPHeadWeights(spec), tiny_clip, FCClipEngine)


def test_maftplus_checkpoint_needs_visual_trunk_and_loads_it(tiny_clip, tmp_path):
    spec = HeadSpec(in_channels=(16, 24, 32, 48), clip_embedding_dim=32, num_queries=4,
                    enc_layers=1, dec_layers=1)
    head = build_maftplus_head(spec)
    sd = dict(head.state_dict())
    assert {"cdt.cross_atten.multihead_attn.in_proj_weight", "cdt.cross_atten.norm.weight",
            "cdt.cross_atten.MLP.weight", "cdt.cross_atten.MLP.bias"} <= set(sd)
    path = tmp_path / "maft_no_visual.pth"
    torch.save(sd, path)
    with pytest.raises(WeightsError, match="missing keys.*backbone.clip_model.visual.trunk"):
        _load(path, build_maftplus_head(spec), tiny_clip, MAFTPlusEngine)
    visual = {f"backbone.clip_model.{k}": torch.randn_like(v)
              for k, v in tiny_clip.state_dict().items() if k.startswith("visual.")}
    teacher = {k.replace("backbone.", "backbone_t.", 1): v for k, v in visual.items()}
    torch.save({**sd, **visual, **teacher}, path)
    report = _load(path, build_maftplus_head(spec), tiny_clip, MAFTPlusEngine)
    assert report.clip_keys == len(visual) and report.skipped_keys == len(teacher)
    assert not report.text_overridden
    key = "visual.trunk.stem.0.weight"
    assert torch.equal(tiny_clip.state_dict()[key], visual["backbone.clip_model." + key])
