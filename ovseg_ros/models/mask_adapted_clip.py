"""OVSeg's mask-adapted CLIP ViT with mask prompt tuning, on an open_clip model.

The released checkpoint holds the whole CLIP model under ``clip_adapter.clip_model.*``
in OpenAI's CLIP layout; open_clip's ``CLIP`` (built with QuickGELU, e.g.
``ViT-L-14-quickgelu``) has the same key names, so those keys load 1:1. The one
addition is ``visual.mask_embedding`` (``depth x grid^2 x width``), registered here
on open_clip's VisionTransformer so its key is ``...visual.mask_embedding`` too.

Mask prompt tuning (reference: third_party/CLIP/clip/model.py, VisionTransformer):
a patch counts as inside the region when any of its pixels is inside (the
average-pooled mask rounded up); after the patch embedding and after blocks
0..depth-2, the patch tokens outside the region are replaced by the learnt
per-depth, per-position ``mask_embedding``. The class token is never replaced;
the output is ``ln_post(class token) @ proj``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def add_mask_embedding(visual: nn.Module, depth: int) -> None:
    """Register ``mask_embedding`` (zeros, depth x grid^2 x width) on an open_clip ViT."""
    if not hasattr(visual, "conv1") or not hasattr(visual, "class_embedding"):
        raise ValueError("mask prompt tuning needs an open_clip VisionTransformer "
                         f"(got {type(visual).__name__})")
    if depth < 1:
        raise ValueError(f"mask prompt depth must be >= 1, got {depth}")
    layers = len(visual.transformer.resblocks)
    if depth > layers + 1:
        raise ValueError(f"mask prompt depth {depth} exceeds the {layers} blocks + 1 of the ViT")
    grid = visual.grid_size if isinstance(visual.grid_size, tuple) else (visual.grid_size,) * 2
    width = visual.conv1.out_channels
    visual.register_parameter("mask_embedding",
                              nn.Parameter(torch.zeros(depth, grid[0] * grid[1], width)))


def crop_size_of(visual: nn.Module) -> int:
    size = visual.image_size
    size = size if isinstance(size, (tuple, list)) else (size, size)
    if size[0] != size[1]:
        raise ValueError(f"the CLIP ViT must take square crops, has image size {size}")
    return int(size[0])


def patch_size_of(visual: nn.Module) -> int:
    return int(visual.conv1.kernel_size[0])


class MaskPromptedViT(nn.Module):
    """open_clip ViT + ``mask_embedding`` -> CLIP image embedding of masked crops.

    forward(crops N x 3 x S x S normalised, masks N x 1 x S x S in {0, 1}) -> N x D
    (not normalised), S = the ViT's image size.
    """

    def __init__(self, visual: nn.Module):
        super().__init__()
        if not isinstance(getattr(visual, "mask_embedding", None), nn.Parameter):
            raise ValueError("call add_mask_embedding(visual, depth) first")
        self.visual = visual
        self.patch = patch_size_of(visual)
        self.batch_first = bool(getattr(visual.transformer, "batch_first", True))

    def forward(self, crops: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        v = self.visual
        x = v.conv1(crops)
        n, width = x.shape[:2]
        x = x.reshape(n, width, -1).permute(0, 2, 1)                  # N x g^2 x W
        # any pixel of a patch inside -> the patch is inside (ceil of the average)
        m = F.max_pool2d(masks.to(x.dtype), self.patch, self.patch).reshape(n, -1, 1)
        m = (m > 0).to(x.dtype)
        emb = v.mask_embedding.to(x.dtype)
        depth = emb.shape[0]
        x = x * m + emb[0].unsqueeze(0) * (1 - m)
        cls = v.class_embedding.to(x.dtype) + torch.zeros(n, 1, width, dtype=x.dtype,
                                                          device=x.device)
        x = torch.cat([cls, x], 1) + v.positional_embedding.to(x.dtype)
        x = v.ln_pre(x)
        if not self.batch_first:
            x = x.transpose(0, 1)                                     # NLD -> LND
        tok = slice(1, None)
        for i, blk in enumerate(v.transformer.resblocks):
            x = blk(x)
            d = i + 1
            if d < depth:
                if self.batch_first:
                    x = torch.cat([x[:, :1], x[:, tok] * m + emb[d].unsqueeze(0) * (1 - m)], 1)
                else:
                    mt = m.transpose(0, 1)
                    x = torch.cat([x[:1], x[tok] * mt + emb[d].unsqueeze(1) * (1 - mt)], 0)
        cls_out = x[:, 0] if self.batch_first else x[0]
        out = v.ln_post(cls_out)
        return out @ v.proj if v.proj is not None else out


class CLIPCropModel(nn.Module):
    """The second image graph (what a backend runs for the CLIP stage).

    forward(x N x 4 x S x S): channels 0..2 the masked crops already normalised with
    CLIP's mean/std (the reference normalises before resizing), channel 3 the crop's
    binary mask (nearest-resized) -> N x D L2-normalised CLIP embeddings.
    """

    #: read by the ONNX exporter / ONNX Runtime backend (RGB + mask)
    input_channels = 4

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.vit = MaskPromptedViT(visual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.vit(x[:, :3], x[:, 3:4])
        return F.normalize(feats, dim=-1)


__all__ = ["add_mask_embedding", "MaskPromptedViT", "CLIPCropModel", "crop_size_of",
           "patch_size_of"]
