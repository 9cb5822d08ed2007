"""Multi-scale deformable attention (Deformable DETR) in pure PyTorch.

Two exact forms of the sampling step, equal to 1e-5 (test/engines/test_deformable_attention.py):

- ``ms_deform_attn_sample``: ``F.grid_sample`` (bilinear, zero padding,
  align_corners=False, grid = 2*location - 1), the form of the CUDA kernel: a
  location (x, y) in [0, 1] addresses pixel-centre coordinates x*W - 0.5,
  y*H - 0.5 and out-of-map taps contribute zero. It exports to ONNX (GridSample),
  so ``MSDeformAttn`` uses it while tracing/exporting.
- ``ms_deform_attn_gather``: the eager path. Every level is framed by one zero
  pixel, so a tap outside its map is clamped onto the frame instead of masked;
  the 4 taps x L levels x P points of a query/head are one weighted bag of rows
  of the value table (``F.embedding_bag``, weights = bilinear x attention). On
  the CPU this is ~2.5x the grid_sample form (FC-CLIP's 683x512 pixel decoder:
  no per-level D x Lq x P sample tensor, no separate weighting and sum).
- ``ms_deform_attn_reference_order``: ``F.grid_sample`` per level, every level's
  samples stacked and weighted, then one sum over the L*P samples: the order of
  the reference implementation's pure-PyTorch path (what FC-CLIP / MAFT+ run
  without their CUDA op), so its fp32 result equals that path's bit for bit.
  Chosen by ``MSDeformAttn.sampling = "reference_order"`` (the engines'
  ``*.deformable_sampling``): a decoder near a decision boundary can turn the
  fp32 rounding difference between two exact summation orders into different
  labels (docs/fcclip.md), and this form takes that difference away when the
  output is compared with the reference's.

The whole block (projections, locations, attention weights, sampling) runs in
fp32 whatever the autocast: half precision loses sampling accuracy.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn


def _level_samples(value: torch.Tensor, spatial_shapes: Sequence[Tuple[int, int]],
                   sampling_locations: torch.Tensor):
    """Each level's bilinear samples, N*M x D x Lq x P (``F.grid_sample``, zero padding)."""
    n, _, m, d = value.shape
    value_list = value.split([int(h) * int(w) for h, w in spatial_shapes], dim=1)
    grids = 2.0 * sampling_locations - 1.0
    for lvl, (h, w) in enumerate(spatial_shapes):
        # (N, H*W, M, D) -> (N*M, D, H, W)
        v = value_list[lvl].flatten(2).transpose(1, 2).reshape(n * m, d, int(h), int(w))
        # (N, Lq, M, P, 2) -> (N*M, Lq, P, 2)
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)
        yield F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)


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
    attn = attention_weights.transpose(1, 2).reshape(n * m, 1, lq, num_levels, num_points)
    out = None
    for lvl, sampled in enumerate(_level_samples(value, spatial_shapes, sampling_locations)):
        # weighted sum level by level: no concatenation of all levels' samples
        part = (sampled * attn[..., lvl, :]).sum(-1)                 # N*M x D x Lq
        out = part if out is None else out + part
    return out.view(n, m * d, lq).transpose(1, 2).contiguous()


def ms_deform_attn_gather(value: torch.Tensor, spatial_shapes: Sequence[Tuple[int, int]],
                          sampling_locations: torch.Tensor,
                          attention_weights: torch.Tensor) -> torch.Tensor:
    """``ms_deform_attn_sample`` as one weighted gather (same arguments and result)."""
    n, _, m, d = value.shape
    _, lq, _, nl, _, _ = sampling_locations.shape
    dev = value.device
    shapes = [(int(h), int(w)) for h, w in spatial_shapes]
    padded, starts, rows_total = [], [], 0
    for v, (h, w) in zip(value.split([h * w for h, w in shapes], 1), shapes):
        padded.append(F.pad(v.reshape(n, h, w, m * d), (0, 0, 1, 1, 1, 1)).reshape(n, -1, m * d))
        starts.append(rows_total)
        rows_total += (h + 2) * (w + 2)
    table = torch.cat(padded, 1).reshape(-1, d)      # row = (b * S' + position) * M + head
    loc_dtype = sampling_locations.dtype
    size = torch.tensor([[w, h] for h, w in shapes], dtype=loc_dtype, device=dev)[:, None, :]
    # framed pixel coordinate: x*W - 0.5 + 1; integer part and bilinear fraction
    pix = sampling_locations * size + 0.5
    base = pix.floor()
    frac = pix - base                                                 # N Lq M L P 2
    itype = torch.int32 if n * rows_total * m < 2 ** 31 else torch.int64
    step = torch.tensor([0, 1], dtype=itype, device=dev)
    limit = torch.tensor([[w + 1, h + 1] for h, w in shapes], dtype=itype, device=dev)
    # both taps of each axis, far outside ones on the frame: N Lq M L P (x, y) (tap 0, 1)
    taps = torch.minimum((base.to(itype)[..., None] + step).clamp_min_(0), limit[:, None, :, None])
    row_stride = torch.tensor([(w + 2) * m for h, w in shapes], dtype=itype, device=dev)
    first_row = (torch.arange(n, dtype=itype, device=dev).view(n, 1, 1, 1, 1) * (rows_total * m)
                 + torch.tensor(starts, dtype=itype, device=dev).view(1, 1, 1, nl, 1) * m
                 + torch.arange(m, dtype=itype, device=dev).view(1, 1, m, 1, 1))
    ys = taps[..., 1, :] * row_stride[:, None, None] + first_row[..., None]   # N Lq M L P 2
    rows = ys[..., :, None] + taps[..., 0, None, :] * m                      # N Lq M L P 2 2
    # bilinear weights of the taps (1 - f, f) per axis, the attention folded into y
    lerp = torch.addcmul(torch.tensor([1.0, 0.0], dtype=loc_dtype, device=dev), frac[..., None],
                         torch.tensor([-1.0, 1.0], dtype=loc_dtype, device=dev))
    wy = lerp[..., 1, :] * attention_weights.to(loc_dtype)[..., None]
    weights = (wy[..., :, None] * lerp[..., 0, None, :]).to(table.dtype)
    out = F.embedding_bag(rows.reshape(n * lq * m, -1), table,
                          per_sample_weights=weights.reshape(n * lq * m, -1), mode="sum")
    return out.view(n, lq, m * d)


def ms_deform_attn_reference_order(value: torch.Tensor,
                                   spatial_shapes: Sequence[Tuple[int, int]],
                                   sampling_locations: torch.Tensor,
                                   attention_weights: torch.Tensor) -> torch.Tensor:
    """``ms_deform_attn_sample`` summed in the reference's order (same arguments and
    result): the samples of all levels are stacked to N*M x D x Lq x L*P and weighted, and
    one reduction sums them (the level-by-level form rounds after each level's sum)."""
    n, _, m, d = value.shape
    _, lq, _, num_levels, num_points, _ = sampling_locations.shape
    samples = list(_level_samples(value, spatial_shapes, sampling_locations))
    attn = attention_weights.transpose(1, 2).reshape(n * m, 1, lq, num_levels * num_points)
    out = (torch.stack(samples, dim=-2).flatten(-2) * attn).sum(-1)      # N*M x D x Lq
    return out.view(n, m * d, lq).transpose(1, 2).contiguous()


#: ``MSDeformAttn.sampling`` -> (eager form, form while tracing/exporting)
SAMPLING_FORMS = {"gather": (ms_deform_attn_gather, ms_deform_attn_sample),
                  "reference_order": (ms_deform_attn_reference_order,
                                      ms_deform_attn_reference_order)}


def set_sampling(module: nn.Module, form: str) -> None:
    """Every ``MSDeformAttn`` inside ``module`` samples in ``form`` (``SAMPLING_FORMS``)."""
    if form not in SAMPLING_FORMS:
        raise ValueError(f"deformable sampling must be one of {sorted(SAMPLING_FORMS)}, "
                         f"got {form!r}")
    for sub in module.modules():
        if isinstance(sub, MSDeformAttn):
            sub.sampling = form


def _exporting() -> bool:
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()


class MSDeformAttn(nn.Module):
    """Deformable attention over L feature levels, M heads, P points per level.

    ``sampling`` (``SAMPLING_FORMS``): ``"gather"`` (default) samples with
    ``ms_deform_attn_gather`` in eager runs and the ``grid_sample`` form while exporting;
    ``"reference_order"`` uses ``ms_deform_attn_reference_order`` in both."""

    #: the sampling form (set_sampling); a plain attribute, not part of the state dict
    sampling = "gather"

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
        # fp32 even under autocast, projections included: the value rows are what is
        # sampled and the output projection adds to the residual stream; a bf16 offset of
        # a few pixels is off by a hundredth of a pixel per unit. (Under bf16 the FFNs and
        # convolutions around this block round, FCCLIPImageModel.set_weight_dtype.)
        with torch.autocast(device_type=query.device.type, enabled=False):
            query, value_in = query.float(), value_in.float()
            value = self.value_proj(value_in).view(n, value_in.shape[1], m, self.d_model // m)
            offsets = self.sampling_offsets(query).view(n, lq, m, nl, p, 2)
            weights = self.attention_weights(query).view(n, lq, m, nl * p).softmax(-1)
            weights = weights.view(n, lq, m, nl, p)
            # offsets are in pixels of each level: divide by (W_l, H_l)
            normalizer = torch.tensor([[float(w), float(h)] for h, w in spatial_shapes],
                                      dtype=query.dtype, device=query.device)
            locations = reference_points[:, :, None, :, None, :] \
                + offsets / normalizer[None, None, None, :, None, :]
            eager, traced = SAMPLING_FORMS[self.sampling]
            sample = traced if _exporting() else eager
            return self.output_proj(sample(value, spatial_shapes, locations, weights))


__all__ = ["MSDeformAttn", "SAMPLING_FORMS", "ms_deform_attn_sample", "ms_deform_attn_gather",
           "ms_deform_attn_reference_order", "set_sampling"]
