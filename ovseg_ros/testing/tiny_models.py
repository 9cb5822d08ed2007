"""Tiny CLIP and ViT architectures for tests and random-weight demos.

Importing this module registers
  * the open_clip model configs ``ovseg-tiny-ViT`` (a VisionTransformer CLIP with a
    small text tower) and ``ovseg-tiny-ConvNeXt`` (JSON in ``ovseg_ros/testing/model_configs``),
  * the timm trunk ``ovseg_tiny_convnext`` the latter uses, and
  * the timm models ``ovseg_tiny_vit_patch8`` (patch 8, one CLS token, like DINO) and
    ``ovseg_tiny_vit_reg4_patch8`` (patch 8, CLS + 4 register tokens and a
    position embedding without prefix entries, like DINOv2-reg).

They have no pretrained weights: build them with ``random_init: true``. They are
real open_clip/timm modules, so every code path (position-embedding resizing,
prefix tokens, the text tokenizer) runs exactly as with the full-size models.

Production code never imports this module: ``ovseg_ros.weights`` registers it on
demand when a config names a tiny model (``register_tiny_models_if_named``: names
starting with ``ovseg-tiny-`` or ``ovseg_tiny_``), and the tests
(test/conftest.py), the demo and the benchmark use those names.
"""
from __future__ import annotations

from pathlib import Path

import open_clip
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer, _create_vision_transformer

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"

TINY_CLIP_MODEL = "ovseg-tiny-ViT"
TINY_VFM_MODEL = "ovseg_tiny_vit_patch8"
TINY_VFM_REG_MODEL = "ovseg_tiny_vit_reg4_patch8"
#: OVSeg's mask-adapted CLIP, small: 224 crops, patch 14, QuickGELU, 77-token context
#: (OpenAI layout; widths of 64 so OpenAI's heads = width // 64 rule holds)
TINY_OVSEG_CLIP_MODEL = "ovseg-tiny-ViT-14"


# open_clip scans the directory and keeps every *.json as a model config.
if TINY_CLIP_MODEL not in open_clip.list_models():
    open_clip.add_model_config(MODEL_CONFIG_DIR)


def _tiny_vit(variant: str, pretrained: bool, defaults: dict, kwargs: dict
              ) -> VisionTransformer:
    # timm's own builder, so a local checkpoint (pretrained_cfg_overlay=dict(file=...))
    # loads exactly as for the full-size models; there is nothing to download.
    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    if pretrained and not overlay.get("file"):
        raise ValueError(f"{variant} has no published weights: use random_init: true or a "
                         "local checkpoint file")
    args = dict(defaults)
    args.update(kwargs)
    return _create_vision_transformer(variant, pretrained=pretrained, use_naflex=False, **args)


@register_model
def ovseg_tiny_vit_patch8(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """DINO-like: 64x64 native input, patch 8, 2 blocks of width 48, CLS token."""
    return _tiny_vit("ovseg_tiny_vit_patch8", pretrained,
                     dict(img_size=64, patch_size=8, embed_dim=48, depth=2, num_heads=2,
                          num_classes=0), kwargs)


@register_model
def ovseg_tiny_vit_reg4_patch8(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """DINOv2-reg-like: CLS + 4 register tokens, position embedding for patches only."""
    return _tiny_vit("ovseg_tiny_vit_reg4_patch8", pretrained,
                     dict(img_size=64, patch_size=8, embed_dim=48, depth=2, num_heads=2,
                          num_classes=0, reg_tokens=4, no_embed_class=True, init_values=1e-5),
                     kwargs)


# --- FC-CLIP / MAFT+ test backbone ------------------------------------------------------
# ``ovseg-tiny-ConvNeXt`` (JSON in ovseg_ros/testing/model_configs) is laid out like open_clip's
# convnext_large_d_320 (timm ConvNeXt trunk, no extra pooling, MLP projection) with a
# four-stage trunk of one block each, so res2..res5 (strides 4..32) exist as in ConvNeXt-L.
TINY_CONVNEXT_CLIP_MODEL = "ovseg-tiny-ConvNeXt"
TINY_CONVNEXT_TRUNK = "ovseg_tiny_convnext"


@register_model
def ovseg_tiny_convnext(pretrained: bool = False, **kwargs):
    """ConvNeXt with depths (1, 1, 1, 1) and widths (16, 24, 32, 48)."""
    from timm.models.convnext import ConvNeXt

    if pretrained:
        raise ValueError("the tiny test ConvNeXt has no pretrained weights; use random_init: true")
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    args = dict(depths=(1, 1, 1, 1), dims=(16, 24, 32, 48))
    args.update(kwargs)
    model = ConvNeXt(**args)
    # open_clip's TimmModel reads the (pretrained) config timm attaches in create_model
    model.pretrained_cfg = model.default_cfg = {"input_size": (3, 64, 64), "pool_size": (2, 2),
                                                "num_classes": 0}
    return model
