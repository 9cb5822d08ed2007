"""Mask2Former's multi-scale deformable-attention pixel decoder.

res5, res4, res3 are projected to ``conv_dim`` (1x1 conv + GroupNorm(32)),
given sine positions plus a learned level embedding, and refined by a stack of
deformable-attention encoder layers (post-norm). One FPN level adds res2;
a 1x1 conv gives the mask features at stride 4.

Attribute names match the reference (``input_proj``, ``transformer.level_embed``,
``transformer.encoder.layers.N.*``, ``adapter_1``, ``layer_1``, ``mask_features``).
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .deformable_attention import MSDeformAttn
from .position_encoding import PositionEmbeddingSine


class ConvNorm(nn.Conv2d):
    """Conv2d with an optional ``norm`` submodule and activation (detectron2's Conv2d
    layout, so its state-dict keys are ``weight``, ``bias``, ``norm.weight``, ``norm.bias``)."""

    def __init__(self, *args, norm: nn.Module = None, activation=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x


def _conv_fp32_norm(layer: ConvNorm, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` with the norm and activation on the fp32 convolution output (under
    autocast the convolution alone rounds; a no-op difference in fp32)."""
    x = nn.Conv2d.forward(layer, x).float()
    x = layer.norm(x) if layer.norm is not None else x
    return layer.activation(x) if layer.activation is not None else x


class MSDeformAttnEncoderLayer(nn.Module):
    def __init__(self, d_model: int = 256, d_ffn: int = 1024, n_levels: int = 3,
                 n_heads: int = 8, n_points: int = 4):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src, pos, reference_points, spatial_shapes):
        src = self.norm1(src + self.self_attn(src + pos, reference_points, src, spatial_shapes))
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class MSDeformAttnEncoder(nn.Module):
    def __init__(self, num_layers: int, **layer_kwargs):
        super().__init__()
        self.layers = nn.ModuleList(MSDeformAttnEncoderLayer(**layer_kwargs)
                                    for _ in range(num_layers))

    @staticmethod
    def reference_points(spatial_shapes: Sequence[Tuple[int, int]], batch: int,
                         num_levels: int, device) -> torch.Tensor:
        """Pixel centres of every level, normalised to [0, 1]: N x S x L x 2 (x, y).
        Without padding the valid ratios are 1, so a point is the same on all levels."""
        refs = []
        for h, w in spatial_shapes:
            ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
            xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
            ref = torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)], -1)
            refs.append(ref.reshape(-1, 2))
        ref = torch.cat(refs, 0)
        return ref[None, :, None, :].expand(batch, -1, num_levels, -1)

    def forward(self, src, spatial_shapes, pos):
        ref = self.reference_points(spatial_shapes, src.shape[0], len(spatial_shapes), src.device)
        for layer in self.layers:
            src = layer(src, pos, ref, spatial_shapes)
        return src


class MSDeformAttnTransformerEncoderOnly(nn.Module):
    def __init__(self, d_model: int = 256, nhead: int = 8, num_encoder_layers: int = 6,
                 dim_feedforward: int = 1024, num_feature_levels: int = 3, enc_n_points: int = 4):
        super().__init__()
        self.encoder = MSDeformAttnEncoder(num_encoder_layers, d_model=d_model,
                                           d_ffn=dim_feedforward, n_levels=num_feature_levels,
                                           n_heads=nhead, n_points=enc_n_points)
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        nn.init.normal_(self.level_embed)
        for name, p in self.named_parameters():
            if p.dim() > 1 and "self_attn" not in name:
                nn.init.xavier_uniform_(p)

    def forward(self, srcs: List[torch.Tensor], pos_embeds: List[torch.Tensor]):
        shapes = [(int(s.shape[2]), int(s.shape[3])) for s in srcs]
        src_flat = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos_flat = torch.cat([p.flatten(2).transpose(1, 2) + self.level_embed[i].view(1, 1, -1)
                              for i, p in enumerate(pos_embeds)], 1)
        return self.encoder(src_flat, shapes, pos_flat), shapes


class MSDeformAttnPixelDecoder(nn.Module):
    """features {'res2'..'res5'} -> (mask_features, multi_scale_features [s32, s16, s8])."""

    def __init__(self, in_channels: Dict[str, int], conv_dim: int = 256, mask_dim: int = 256,
                 nheads: int = 8, dim_feedforward: int = 1024, enc_layers: int = 6,
                 n_points: int = 4, gn_groups: int = 32):
        super().__init__()
        self.transformer_in_features = ["res3", "res4", "res5"]
        # index 0 projects res5 (low to high resolution order, as the reference)
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_channels[f], conv_dim, kernel_size=1),
                          nn.GroupNorm(gn_groups, conv_dim))
            for f in self.transformer_in_features[::-1])
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight)
            nn.init.zeros_(proj[0].bias)
        self.transformer = MSDeformAttnTransformerEncoderOnly(
            d_model=conv_dim, nhead=nheads, num_encoder_layers=enc_layers,
            dim_feedforward=dim_feedforward, num_feature_levels=3, enc_n_points=n_points)
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, kernel_size=1)
        # one extra FPN level (res2 -> stride 4); GN convs carry no bias
        self.adapter_1 = ConvNorm(in_channels["res2"], conv_dim, kernel_size=1, bias=False,
                                  norm=nn.GroupNorm(gn_groups, conv_dim))
        self.layer_1 = ConvNorm(conv_dim, conv_dim, kernel_size=3, padding=1, bias=False,
                                norm=nn.GroupNorm(gn_groups, conv_dim), activation=F.relu)
        for conv in (self.mask_features, self.adapter_1, self.layer_1):
            nn.init.kaiming_uniform_(conv.weight, a=1)   # c2_xavier_fill
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def forward(self, features: Dict[str, torch.Tensor]):
        """Under bf16 autocast the projections, FFNs and convolutions round to bf16 while
        the residual stream, the norms, the sampling locations and the deformable
        sampling stay fp32 (MSDeformAttn); without autocast everything is fp32."""
        srcs, pos = [], []
        for idx, name in enumerate(self.transformer_in_features[::-1]):
            x = features[name].float()
            conv, norm = self.input_proj[idx]
            srcs.append(norm(conv(x).float()))
            pos.append(self.pe_layer(x))
        memory, shapes = self.transformer(srcs, pos)
        b = memory.shape[0]
        outs = [z.transpose(1, 2).reshape(b, -1, h, w)
                for z, (h, w) in zip(memory.split([h * w for h, w in shapes], dim=1), shapes)]
        lateral = _conv_fp32_norm(self.adapter_1, features["res2"].float())
        fpn = lateral + F.interpolate(outs[-1], size=lateral.shape[-2:], mode="bilinear",
                                      align_corners=False)
        fpn = _conv_fp32_norm(self.layer_1, fpn)
        return self.mask_features(fpn).float(), [o.float() for o in outs[:3]]


__all__ = ["MSDeformAttnPixelDecoder", "ConvNorm"]
