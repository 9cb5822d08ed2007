"""Multi-scale deformable attention (Deformable DETR) in pure PyTorch.

The sampling step is written with ``F.grid_sample`` (bilinear, zero padding,
align_corners=False, grid = 2*location - 1), which is the exact form of the
CUDA kernel: a location (x, y) in [0, 1] addresses pixel-centre coordinates
x*W - 0.5, y*H - 0.5 and out-of-map taps contribute zero. It runs in fp32
(half precision loses sampling accuracy) and exports to ONNX (GridSample).
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn


def ms_deform_attn_sample(value: torch.Tensor, spatial_shapes: Sequence[Tuple[int, int]],
                          sampling_locations: torch.Tensor,
                          attention_weights: torch.Tensor) -> torch.Tensor:
    """Weighted sum of bilinear samples of every level.

    value:               N x S x M x D   (S = sum of H_l*W_l, M heads, D channels per head)
    spatial_shapes:      [(H_l, W_l)] in the order the levels are concatenated in ``value``
    sampling_locations:  N x Lq x M x L x P x 2   (x, y) normalised to [0, 1]
    attention_weights:   N x Lq x M x L x P       (softmax over L*P already applied)
    returns              N x Lq x M*D
    """
    n, _, m, d = value.shape
    _, lq, _, num_levels, num_points, _ = sampling_locations.shape
    sizes = [int(h) * int(w) for h, w in spatial_shapes]
    value_list = value.split(sizes, dim=1)
    grids = 2.0 * sampling_locations - 1.0
    attn = attention_weights.transpose(1, 2).reshape(n * m, 1, lq, num_levels, num_points)
    out = None
    for lvl, (h, w) in enumerate(spatial_shapes):
        # (N, H*W, M, D) -> (N*M, D, H, W)
        v = value_list[lvl].flatten(2).transpose(1, 2).reshape(n * m, d, int(h), int(w))
        # (N, Lq, M, P, 2) -> (N*M, Lq, P, 2)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)
        sampled = F.grid_sample(v, g, mode="bilinear", padding_mode="zeros",
                                align_corners=False)                # N*M x D x Lq x P
        # weighted sum level by level: no concatenation of all levels' samples
        part = (sampled * attn[..., lvl, :]).sum(-1)                 # N*M x D x Lq
        out = part if out is None else out + part
    return out.view(n, m * d, lq).transpose(1, 2).contiguous()


class MSDeformAttn(nn.Module):
    """Deformable attention over L feature levels, M heads, P points per level."""

    def __init__(self, d_model: int = 256, n_levels: int = 3, n_heads: int = 8, n_points: int = 4):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model, self.n_levels = d_model, n_levels
        self.n_heads, self.n_points = n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Offsets start as a ring of directions (one per head), growing with the point
        # index, so an untrained layer already looks around each reference point.
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        ring = torch.stack([angles.cos(), angles.sin()], -1)
        ring = ring / ring.abs().max(-1, keepdim=True)[0]
        ring = ring.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        ring = ring * torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(ring.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor, value_in: torch.Tensor,
                spatial_shapes: Sequence[Tuple[int, int]]) -> torch.Tensor:
        """query N x Lq x C; reference_points N x Lq x L x 2 in [0, 1] (x, y);
        value_in N x S x C (levels concatenated in ``spatial_shapes`` order)."""
        n, lq, _ = query.shape
        m, nl, p = self.n_heads, self.n_levels, self.n_points
        value = self.value_proj(value_in).view(n, value_in.shape[1], m, self.d_model // m)
        offsets = self.sampling_offsets(query).view(n, lq, m, nl, p, 2)
        weights = self.attention_weights(query).view(n, lq, m, nl * p).softmax(-1)
        weights = weights.view(n, lq, m, nl, p)
        # offsets are in pixels of each level: divide by (W_l, H_l)
        normalizer = torch.tensor([[float(w), float(h)] for h, w in spatial_shapes],
                                  dtype=query.dtype, device=query.device)
        locations = reference_points[:, :, None, :, None, :] \
            + offsets / normalizer[None, None, None, :, None, :]
        out = ms_deform_attn_sample(value, spatial_shapes, locations, weights)
        return self.output_proj(out)


__all__ = ["MSDeformAttn", "ms_deform_attn_sample"]
