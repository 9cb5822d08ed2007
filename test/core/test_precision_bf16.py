"""The bf16 fast path: matmul weights in bf16, everything precision-sensitive in fp32.

``models/precision.py`` on plain modules, then FC-CLIP / MAFT+ on the tiny ConvNeXt
CLIP: the trunk's convolutions and MLPs store bf16 weights, the head (pixel decoder,
transformer decoder, CLIP's pooling head, CDT) stays fp32 and runs without autocast,
and the outputs stay close to fp32. ProxyCLIP's side is in test_proxyclip.py.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ovseg_ros import load_segmenter
from ovseg_ros.models.precision import fp32_region, matmul_weights_to

VOCAB = ["person", "chair", "table", "floor", "wall", "sky", "cat", "cup"]


def test_matmul_weights_to_casts_only_matmul_weights():
    torch.manual_seed(0)
    keep = nn.Linear(4, 4)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.LayerNorm(4), nn.Linear(4, 4),
                      nn.MultiheadAttention(4, 2), nn.Embedding(3, 4), keep)
    m.register_parameter("scale", nn.Parameter(torch.ones(4)))
    matmul_weights_to(m, torch.bfloat16, keep=[keep])
    assert m[0].weight.dtype == m[0].bias.dtype == torch.bfloat16
    assert m[2].weight.dtype == torch.bfloat16
    assert m[3].in_proj_weight.dtype == m[3].in_proj_bias.dtype == torch.bfloat16
    assert m[3].out_proj.weight.dtype == torch.bfloat16     # the MHA's own Linear child
    for p in (m[1].weight, m[4].weight, m.scale, keep.weight, keep.bias):
        assert p.dtype == torch.float32


def test_fp32_region_switches_autocast_off():
    lin = nn.Linear(4, 4)
    x = torch.rand(2, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert lin(x).dtype == torch.bfloat16
        with fp32_region(x):
            assert lin(x).dtype == torch.float32


def _cfg(tmp_path, engine: str, precision: str) -> dict:
    return {"engine": engine, "random_init": True, "precision": precision, "num_threads": 1,
            f"{engine}.clip_model": "ovseg-tiny-ConvNeXt", f"{engine}.short_side": 96,
            f"{engine}.max_size": 128, f"{engine}.num_queries": 20,
            "text_cache_dir": str(tmp_path / "text"), "vocabulary": VOCAB}


def _photo() -> np.ndarray:
    import cv2
    import skimage.data

    return cv2.resize(skimage.data.astronaut(), (128, 96), interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("engine", ["fcclip", "maftplus"])
def test_bf16_trunk_and_pixel_decoder_fp32_head(tmp_path, engine):
    fp32 = load_segmenter(_cfg(tmp_path, engine, "fp32"))
    bf16 = load_segmenter(_cfg(tmp_path, engine, "bf16"))
    m = bf16.engine.image_model
    trunk = m.visual.trunk
    block = trunk.stages[0].blocks[0]
    assert trunk.stem[0].weight.dtype == torch.bfloat16
    assert block.conv_dw.weight.dtype == torch.bfloat16
    assert block.mlp.fc1.weight.dtype == torch.bfloat16
    decoder = m.head.sem_seg_head.pixel_decoder
    layer = decoder.transformer.encoder.layers[0]
    # the pixel decoder's FFNs and convolutions: bf16
    for p in (layer.linear1.weight, layer.linear2.weight, decoder.input_proj[0][0].weight,
              decoder.layer_1.weight, decoder.mask_features.weight):
        assert p.dtype == torch.bfloat16
    # norms, layer scales, CLIP's pooling head, the deformable attention blocks, the
    # transformer decoder: fp32
    for p in (trunk.stem[1].weight, block.norm.weight, block.gamma,
              *m.visual.head.parameters(), *m.head.sem_seg_head.predictor.parameters(),
              *layer.self_attn.parameters(),
              layer.norm1.weight, decoder.input_proj[0][1].weight, decoder.layer_1.norm.weight,
              decoder.transformer.level_embed, *m.head.void_embedding.parameters()):
        assert p.dtype == torch.float32
    assert bf16.engine.text_precision == "fp32"
    # diagnostics name what rounds, and the eager sampler
    assert "pixel decoder FFNs" in bf16.engine.describe()["model"]["low_precision_scope"]
    assert "low_precision_scope" not in fp32.engine.describe()["model"]
    assert fp32.engine.describe()["model"]["deformable_sampling"] == "gather"

    rgb = _photo()
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    ref, got = fp32.engine.backend(x), bf16.engine.backend(x)
    assert all(o.dtype == torch.float32 for o in got)
    # measured (1 thread, CPU without native bf16): mask logits within 1.1 %, query class
    # embeddings (and MAFT+'s dense CLIP embeddings) within 0.5 % of their norm; the
    # ConvNeXt trunk's bf16 rounding was all that differed. With the pixel decoder's FFNs and
    # convolutions in bf16 too (AVX512-BF16 CPU, 1 thread): mask logits within 1.6 %, class
    # embeddings within 0.7 %, scores within 0.008. (The mask-pooled CLIP embeddings
    # are left out: a mask logit near 0 flips a pixel in or out of the binarised mask.)
    for i in [0, 1] + ([3] if engine == "maftplus" else []):
        assert float((ref[i] - got[i]).norm() / ref[i].norm()) < 0.03, i
    a, b = fp32.predict(rgb, scores=True), bf16.predict(rgb, scores=True)
    assert np.abs(a.scores - b.scores).max() < 0.05
    assert (a.semantic == b.semantic).mean() >= 0.99
