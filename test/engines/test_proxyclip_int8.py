"""``precision: int8`` (ProxyCLIP, torch backend, CPU): dynamic int8 linears in both trunks.

The modules of ``models/quantize.py`` on plain torch modules, then a real int8 predict on
the tiny ProxyCLIP (random open_clip/timm models): which linears are quantised, what stays
fp32, what describe() says, labels against fp32 on photos, and the clear refusals.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

from ovseg_ros import ConfigError, load_segmenter
from ovseg_ros.backends.base import BackendSpec, ExportSpec, check_precision
from ovseg_ros.backends.torch_backend import TorchBackend
from ovseg_ros.models.quantize import (LinearSelfAttention, count_int8_linears, count_linears,
                                       linears_to_int8, split_self_attention)

VOCAB = ["person", "chair", "table", "floor", "wall", "sky", "cat", "cup"]


# --- the modules ----------------------------------------------------------------------------------
@pytest.mark.parametrize("batch_first", [True, False])
def test_linear_self_attention_is_the_multihead_attention_it_replaces(batch_first):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(32, 4, batch_first=batch_first).eval()
    x = torch.randn(3, 10, 32) if batch_first else torch.randn(10, 3, 32)
    mask = torch.randn(10, 10)
    with torch.no_grad():
        want = mha(x, x, x, need_weights=False)[0]
        want_masked = mha(x, x, x, need_weights=False, attn_mask=mask)[0]
        split = LinearSelfAttention(mha).eval()
        got, weights = split(x, x, x, need_weights=False)
        got_masked = split(x, x, x, need_weights=False, attn_mask=mask)[0]
    assert weights is None
    assert type(split.in_proj) is nn.Linear and type(split.out_proj) is nn.Linear
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_masked, want_masked, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="self-attention only"):
        split(x, x.clone(), x)
    with pytest.raises(ValueError, match="no attention weights"):
        split(x, x, x, need_weights=True)


def test_split_then_quantise_swaps_every_projection_and_nothing_else():
    torch.manual_seed(0)
    keep = nn.Linear(16, 16)
    model = nn.Sequential(nn.LayerNorm(16), nn.MultiheadAttention(16, 2, batch_first=True))
    assert count_linears(model) == 0           # out_proj is a subclass, in_proj a parameter
    assert split_self_attention(model) == 1
    assert isinstance(model[1], LinearSelfAttention) and count_linears(model) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")         # torch's deprecation notices stay silenced
        assert linears_to_int8(model) == 2
    assert count_int8_linears(model) == 2 and isinstance(model[1].in_proj, DynamicLinear)
    assert type(keep) is nn.Linear and isinstance(model[0], nn.LayerNorm)
    with pytest.raises(ValueError, match="holds no nn.Linear"):
        linears_to_int8(nn.Sequential(nn.LayerNorm(4)))


def test_int8_linear_stays_close_to_fp32():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.Linear(256, 64)).eval()
    x = torch.randn(4, 50, 64)
    with torch.no_grad():
        want = mlp(x)
        linears_to_int8(mlp)
        got = mlp(x)
    assert got.dtype == torch.float32
    err = (got - want).norm() / want.norm()
    assert 0 < err < 0.03                      # rounded (not exact), but close


# --- the engine -----------------------------------------------------------------------------------
def _photo(name: str) -> np.ndarray:
    import cv2
    import skimage.data

    rgb = np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])
    return cv2.resize(rgb, (224, 168), interpolation=cv2.INTER_AREA)


def test_int8_predict_quantises_the_trunks_and_keeps_the_labels(tiny_config):
    """A real int8 predict: every linear of CLIP's blocks 0..L-2 and of the VFM's blocks is a
    dynamic int8 linear, the last CLIP block (values, out_proj) and the head stay fp32, and
    labels on photos agree with fp32 (measured: 99.35-99.65 % on astronaut and coffee)."""
    cfg = dict(tiny_config, vocabulary=VOCAB)
    fp32 = load_segmenter(cfg)
    seg = load_segmenter(dict(cfg, precision="int8"))
    m = seg.engine.image_model
    clip_blocks, vfm_blocks = len(m.clip.blocks), len(m.vfm.vit.blocks)
    assert count_int8_linears(m.clip.blocks) == 4 * clip_blocks     # in, out, fc, proj
    assert count_int8_linears(m.vfm.vit.blocks) == 4 * vfm_blocks   # qkv, proj, fc1, fc2
    assert count_int8_linears(m) == 4 * (clip_blocks + vfm_blocks)
    assert isinstance(m.clip.last.attn, nn.MultiheadAttention)       # values + head: fp32
    assert m.clip.last.attn.in_proj_weight.dtype == torch.float32
    assert m.clip.visual.proj.dtype == torch.float32
    info = seg.describe()
    assert info["precision"] == "int8"
    assert info["stage_precision"] == {"trunks": "int8", "proxy_attention_head": "fp32",
                                       "post": "fp32", "text": "fp32"}
    assert info["backends"]["image"]["int8_linears"] == count_int8_linears(m)
    for name in ("astronaut", "coffee"):
        a, b = fp32.predict(_photo(name), scores=True), seg.predict(_photo(name), scores=True)
        assert len(np.unique(a.semantic)) > 1, name          # labels that can disagree
        assert b.scores.dtype == np.float32
        assert (a.semantic == b.semantic).mean() >= 0.98, name
        assert not np.array_equal(a.scores, b.scores), name  # int8 really ran


# --- refusals -------------------------------------------------------------------------------------
@pytest.mark.parametrize("engine", ["ovseg", "fcclip", "maftplus"])
def test_engines_without_int8_refuse_it_naming_what_they_support(engine):
    with pytest.raises(ConfigError, match=rf"'precision': int8 is not supported by engine "
                                          rf"'{engine}' \(it supports fp32, fp16, bf16, or auto\)"):
        load_segmenter({"engine": engine, "precision": "int8", "random_init": True})


def test_int8_needs_the_torch_backend_and_the_cpu(tiny_config):
    with pytest.raises(ConfigError, match="int8 needs backend 'torch'.*'onnxruntime'"):
        load_segmenter(dict(tiny_config, precision="int8", backend="onnxruntime"))
    with pytest.raises(ConfigError, match="int8 runs on the CPU only.*'cuda'.*fp16"):
        load_segmenter(dict(tiny_config, precision="int8", device="cuda"))
    with pytest.raises(ConfigError, match="int8 runs on the CPU only.*cuda"):
        check_precision("int8", torch.device("cuda"))
    assert check_precision("int8", torch.device("cpu")) is None     # fp32 in and out


def test_torch_backend_refuses_int8_without_an_int8_form():
    export = ExportSpec(nn.Sequential(nn.Linear(4, 4)), model_id="toy|a")
    with pytest.raises(ConfigError, match="int8 is not available for 'toy'"):
        TorchBackend(export, BackendSpec(precision="int8"))
    calls = []
    export = ExportSpec(nn.Sequential(nn.Linear(4, 4)), model_id="toy|a",
                        quantize_int8=lambda: calls.append(1) or 1)
    with pytest.raises(ConfigError, match="int8 runs eagerly.*torch_compile"):
        TorchBackend(export, BackendSpec(precision="int8", torch_compile=True))
    assert not calls                                  # refused before anything was changed
    backend = TorchBackend(export, BackendSpec(precision="int8"))
    assert calls == [1] and backend.describe()["int8_linears"] == 1
