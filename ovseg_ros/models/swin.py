"""Swin Transformer backbone in the layout of OVSeg's released checkpoint.

timm's Swin cannot take these weights: its attribute names differ (the
patch-merging layer sits at the start of the next stage there), it fixes the
input size at construction, and it has no per-stage output norms. This module
keeps the reference's attribute names, so ``backbone.*`` keys of the released
file load 1:1 with strict checking:

  patch_embed.proj / patch_embed.norm
  layers.<i>.blocks.<j>.{norm1, attn.relative_position_bias_table,
                          attn.relative_position_index, attn.qkv, attn.proj,
                          norm2, mlp.fc1, mlp.fc2}
  layers.<i>.downsample.{norm, reduction}      (stages 0..2)
  norm0 .. norm3                                (output norms of res2..res5)

Behaviour that matters for identical numbers: the input is padded right/bottom
to a multiple of the patch size; every block pads its (normed) tokens with
zeros up to a multiple of the window size, and those padded tokens take part in
the window attention (only the cyclic shift is masked, with -100); patch
merging pads odd sizes with zeros. Any input size works (no fixed resolution).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class SwinSpec:
    embed_dim: int
    depths: Tuple[int, ...]
    num_heads: Tuple[int, ...]
    window_size: int
    patch_size: int = 4
    mlp_ratio: float = 4.0

    @property
    def channels(self) -> Tuple[int, ...]:
        return tuple(self.embed_dim * 2 ** i for i in range(len(self.depths)))


#: named architectures (config key ``ovseg.swin_model``)
SWIN_SPECS: Dict[str, SwinSpec] = {
    # OVSeg's Swin-B (ImageNet-22k, 384 pretraining: window 12)
    "swin_base_patch4_window12_384": SwinSpec(128, (2, 2, 18, 2), (4, 8, 16, 32), 12),
    # tests and random-weight demos: every code path (shifted windows, window padding,
    # odd-size patch merging) with a few thousand parameters per stage
    "ovseg_tiny_swin": SwinSpec(16, (2, 2, 2, 2), (1, 2, 2, 4), 7),
}


def swin_spec(name: str) -> SwinSpec:
    if name not in SWIN_SPECS:
        raise ValueError(f"unknown Swin model {name!r}; available: {sorted(SWIN_SPECS)}")
    return SWIN_SPECS[name]


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


def window_partition(x: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    """B x h x w x C -> (B * nW) x ws*ws x C (row-major windows). Sizes are plain ints and
    the batch stays -1, so an exported graph keeps only its batch dynamic."""
    c = x.shape[-1]
    x = x.view(-1, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def window_reverse(windows: torch.Tensor, ws: int, h: int, w: int) -> torch.Tensor:
    c = windows.shape[-1]
    x = windows.view(-1, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def relative_position_index(ws: int) -> torch.Tensor:
    """ws*ws x ws*ws index into the (2ws-1)^2 bias table (Swin's layout)."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij"))
    flat = coords.flatten(1)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += ws - 1
    rel[:, :, 1] += ws - 1
    rel[:, :, 0] *= 2 * ws - 1
    return rel.sum(-1)


class WindowAttention(nn.Module):
    def __init__(self, dim: int, window_size: int, num_heads: int):
        super().__init__()
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        # persistent: the released checkpoint holds it
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor = None) -> torch.Tensor:
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            # -1, not bw // nw: keeps the batch symbolic in exported graphs
            attn = attn.view(-1, nw, self.num_heads, n, n) + mask[None, :, None]
            attn = attn.view(-1, self.num_heads, n, n)
        attn = attn.softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(bw, n, c))


class SwinBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int,
                 mlp_ratio: float):
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, h: int, w: int, attn_mask: torch.Tensor) -> torch.Tensor:
        c = x.shape[-1]
        ws, shift = self.window_size, self.shift_size
        shortcut = x
        x = self.norm1(x).view(-1, h, w, c)
        pad_r, pad_b = (-w) % ws, (-h) % ws
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = h + pad_b, w + pad_r
        if shift > 0:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        x = self.attn(window_partition(x, ws, hp, wp), attn_mask if shift > 0 else None)
        x = window_reverse(x, ws, hp, wp)
        if shift > 0:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        x = x[:, :h, :w, :].reshape(-1, h * w, c)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        c = x.shape[-1]
        x = x.view(-1, h, w, c)
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]],
                      -1)
        return self.reduction(self.norm(x.reshape(x.shape[0], -1, 4 * c)))


def shift_attention_mask(hp: int, wp: int, ws: int, shift: int, device) -> torch.Tensor:
    """nW x ws*ws x ws*ws additive mask (0 / -100) of the shifted-window regions."""
    # region id 3 * i + j of the reference's slices (0, -ws), (-ws, -shift), (-shift, None)
    # along rows (i) and columns (j), from comparisons rather than slice assignments (an
    # empty slice, as when the padded size equals the window, has no ONNX form)
    def region(n: int) -> torch.Tensor:
        r = torch.arange(n, device=device)
        return (r >= n - ws).long() + (r >= n - shift).long()

    img = (region(hp)[:, None] * 3 + region(wp)[None, :]).float().view(1, hp, wp, 1)
    win = window_partition(img, ws, hp, wp).squeeze(-1)
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


class SwinStage(nn.Module):
    def __init__(self, dim: int, depth: int, num_heads: int, window_size: int,
                 mlp_ratio: float, downsample: bool):
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window_size, 0 if i % 2 == 0 else self.shift_size,
                      mlp_ratio) for i in range(depth))
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor, h: int, w: int):
        ws = self.window_size
        hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
        mask = shift_attention_mask(hp, wp, ws, self.shift_size, x.device).to(x.dtype)
        for blk in self.blocks:
            x = blk(x, h, w, mask)
        if self.downsample is None:
            return x, x, h, w
        return x, self.downsample(x, h, w), (h + 1) // 2, (w + 1) // 2


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.patch_size
        x = F.pad(x, (0, (-x.shape[-1]) % p, 0, (-x.shape[-2]) % p))
        x = self.proj(x)
        c, h, w = x.shape[1], int(x.shape[2]), int(x.shape[3])
        x = self.norm(x.flatten(2).transpose(1, 2))
        return x.transpose(1, 2).reshape(-1, c, h, w)


class SwinTransformer(nn.Module):
    """B x 3 x H x W (normalised) -> {"res2".."res5"}: B x C_i x H/4..H/32 (ceil)."""

    def __init__(self, spec: SwinSpec):
        super().__init__()
        self.spec = spec
        self.patch_embed = PatchEmbed(spec.patch_size, spec.embed_dim)
        n = len(spec.depths)
        self.layers = nn.ModuleList(
            SwinStage(spec.channels[i], spec.depths[i], spec.num_heads[i], spec.window_size,
                      spec.mlp_ratio, downsample=i < n - 1) for i in range(n))
        for i, c in enumerate(spec.channels):
            self.add_module(f"norm{i}", nn.LayerNorm(c))

    def forward(self, x: torch.Tensor) -> Dict[str, torch.Tensor]:
        x = self.patch_embed(x)
        # plain ints: the window layout is fixed for a given input size (constants when
        # traced for export)
        h, w = int(x.shape[-2]), int(x.shape[-1])
        x = x.flatten(2).transpose(1, 2)
        outs = {}
        for i, stage in enumerate(self.layers):
            x_out, x, h_out, w_out = stage(x, h, w)
            x_out = getattr(self, f"norm{i}")(x_out)
            outs[f"res{i + 2}"] = x_out.view(-1, h, w, self.spec.channels[i]) \
                .permute(0, 3, 1, 2).contiguous()
            h, w = h_out, w_out
        return outs


__all__ = ["SwinSpec", "SWIN_SPECS", "swin_spec", "SwinTransformer"]
