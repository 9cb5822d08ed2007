"""OVSeg's proposal head: MaskFormer with an FPN pixel decoder and a DETR decoder.

``sem_seg_head.pixel_decoder`` (MaskFormer's BasePixelDecoder): res5 -> 3x3 conv
(``layer_4``); then for res4, res3, res2: 1x1 lateral conv (``adapter_3..1``) +
nearest-upsampled coarser level, 3x3 conv (``layer_3..1``); every conv without
bias, GroupNorm(32), ReLU; a 3x3 conv with bias (``mask_features``) gives the
mask features at stride 4.

``sem_seg_head.predictor`` (DETR decoder on res5): 1x1 ``input_proj`` of res5
to ``hidden_dim``, sine positions, no encoder layers, ``dec_layers`` post-norm
decoder layers (self-attention, cross-attention, FFN with ReLU) from zero
targets with learned ``query_embed`` as query positions, a final LayerNorm.
``class_embed`` (MLP hidden -> embed_hidden -> CLIP width) gives each query's
embedding, scored by cosine against the text classifier; ``mask_embed`` (3-layer
MLP) dotted with the mask features gives each query's mask logits.

Attribute names follow the reference so the released ``sem_seg_head.*`` keys load
1:1; dropout is absent (inference only).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .pixel_decoder import ConvNorm
from .position_encoding import PositionEmbeddingSine


@dataclass(frozen=True)
class ProposalHeadSpec:
    in_channels: Tuple[int, ...]          # res2..res5 widths of the backbone
    embed_dim: int                        # CLIP embedding width (768 for ViT-L/14)
    num_queries: int = 100
    conv_dim: int = 256
    mask_dim: int = 256
    hidden_dim: int = 256
    nheads: int = 8
    dim_feedforward: int = 2048
    dec_layers: int = 6
    embed_hidden_dim: int = 1024
    embed_layers: int = 2


#: head sizes (config key ``ovseg.head_size``); "base" is the released model's
HEAD_SIZES: Dict[str, dict] = {
    "base": {},
    # tests: GroupNorm(32) needs conv_dim a multiple of 32
    "tiny": dict(conv_dim=32, mask_dim=32, hidden_dim=32, nheads=2, dim_feedforward=64,
                 dec_layers=2, embed_hidden_dim=48),
}


def head_spec(size: str, in_channels: Sequence[int], embed_dim: int, num_queries: int
              ) -> ProposalHeadSpec:
    if size not in HEAD_SIZES:
        raise ValueError(f"unknown head size {size!r}; available: {sorted(HEAD_SIZES)}")
    return ProposalHeadSpec(tuple(int(c) for c in in_channels), int(embed_dim),
                            int(num_queries), **HEAD_SIZES[size])


class BasePixelDecoder(nn.Module):
    def __init__(self, in_channels: Sequence[int], conv_dim: int, mask_dim: int):
        super().__init__()
        n = len(in_channels)
        for idx, c in enumerate(in_channels):
            if idx == n - 1:
                self.add_module(f"layer_{idx + 1}", ConvNorm(
                    c, conv_dim, kernel_size=3, padding=1, bias=False,
                    norm=nn.GroupNorm(32, conv_dim), activation=F.relu))
            else:
                self.add_module(f"adapter_{idx + 1}", ConvNorm(
                    c, conv_dim, kernel_size=1, bias=False, norm=nn.GroupNorm(32, conv_dim)))
                self.add_module(f"layer_{idx + 1}", ConvNorm(
                    conv_dim, conv_dim, kernel_size=3, padding=1, bias=False,
                    norm=nn.GroupNorm(32, conv_dim), activation=F.relu))
        self.num_levels = n
        self.mask_features = ConvNorm(conv_dim, mask_dim, kernel_size=3, padding=1)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """res2..res5 (finest first) -> mask features at the res2 stride."""
        n = self.num_levels
        y = getattr(self, f"layer_{n}")(feats[n - 1])
        for idx in range(n - 2, -1, -1):
            lateral = getattr(self, f"adapter_{idx + 1}")(feats[idx])
            y = lateral + F.interpolate(y, size=lateral.shape[-2:], mode="nearest")
            y = getattr(self, f"layer_{idx + 1}")(y)
        return self.mask_features(y)


class MLP(nn.Module):
    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:] + [out_dim]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class DecoderLayer(nn.Module):
    """DETR post-norm decoder layer (sequence-first tensors, L x B x C)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, tgt, memory, pos, query_pos):
        q = tgt + query_pos
        tgt = self.norm1(tgt + self.self_attn(q, q, value=tgt, need_weights=False)[0])
        tgt2 = self.multihead_attn(query=tgt + query_pos, key=memory + pos, value=memory,
                                   need_weights=False)[0]
        tgt = self.norm2(tgt + tgt2)
        return self.norm3(tgt + self.linear2(F.relu(self.linear1(tgt))))


class TransformerDecoder(nn.Module):
    def __init__(self, num_layers: int, d_model: int, nhead: int, dim_feedforward: int):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(d_model, nhead, dim_feedforward)
                                    for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt, memory, pos, query_pos):
        for layer in self.layers:
            tgt = layer(tgt, memory, pos, query_pos)
        return self.norm(tgt)


class DETRTransformer(nn.Module):
    """Encoder-free DETR transformer (MaskFormer with ENC_LAYERS 0): only ``decoder.*``."""

    def __init__(self, d_model: int, nhead: int, num_decoder_layers: int, dim_feedforward: int):
        super().__init__()
        self.decoder = TransformerDecoder(num_decoder_layers, d_model, nhead, dim_feedforward)

    def forward(self, src, query_embed, pos):
        b = src.shape[0]
        memory = src.flatten(2).permute(2, 0, 1)            # HW x B x C
        pos = pos.flatten(2).permute(2, 0, 1)
        query_pos = query_embed.unsqueeze(1).repeat(1, b, 1)
        hs = self.decoder(torch.zeros_like(query_pos), memory, pos, query_pos)
        return hs.transpose(0, 1)                           # B x Q x C


class OpenVocabPredictor(nn.Module):
    def __init__(self, spec: ProposalHeadSpec):
        super().__init__()
        in_ch = spec.in_channels[-1]
        self.pe_layer = PositionEmbeddingSine(spec.hidden_dim // 2, normalize=True)
        self.transformer = DETRTransformer(spec.hidden_dim, spec.nheads, spec.dec_layers,
                                           spec.dim_feedforward)
        self.query_embed = nn.Embedding(spec.num_queries, spec.hidden_dim)
        self.input_proj = ConvNorm(in_ch, spec.hidden_dim, kernel_size=1) \
            if in_ch != spec.hidden_dim else nn.Sequential()
        self.mask_embed = MLP(spec.hidden_dim, spec.hidden_dim, spec.mask_dim, 3)
        self.class_embed = MLP(spec.hidden_dim, spec.embed_hidden_dim, spec.embed_dim,
                               spec.embed_layers)

    def forward(self, res5: torch.Tensor, mask_features: torch.Tensor):
        pos = self.pe_layer(res5).to(res5.dtype)
        hs = self.transformer(self.input_proj(res5), self.query_embed.weight, pos)
        class_embed = self.class_embed(hs)
        mask_logits = torch.einsum("bqc,bchw->bqhw", self.mask_embed(hs), mask_features)
        return mask_logits, class_embed


class OpenVocabMaskFormerHead(nn.Module):
    def __init__(self, spec: ProposalHeadSpec):
        super().__init__()
        self.pixel_decoder = BasePixelDecoder(spec.in_channels, spec.conv_dim, spec.mask_dim)
        self.predictor = OpenVocabPredictor(spec)

    def forward(self, feats: Dict[str, torch.Tensor]):
        levels = [feats[f"res{i + 2}"] for i in range(len(feats))]
        mask_features = self.pixel_decoder(levels)
        return self.predictor(levels[-1], mask_features)


__all__ = ["ProposalHeadSpec", "HEAD_SIZES", "head_spec", "BasePixelDecoder",
           "OpenVocabMaskFormerHead", "OpenVocabPredictor", "MLP"]
