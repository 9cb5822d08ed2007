"""Mask2Former's masked-attention transformer decoder with FC-CLIP's class head.

Per layer: masked cross-attention to one pixel-decoder level (round robin
s32, s16, s8) -> self-attention -> FFN, all post-norm. The attention mask of
a layer comes from the previous layer's masks resized to that level: a query
attends where sigmoid(mask) >= 0.5, and a query whose mask is empty attends
everywhere. Predictions are also made on the initial (learned) queries.

The class head returns *embeddings* (before the cosine with the text
classifier), so the module never depends on the vocabulary; see
``models/classifier.py`` for the cosine and the mask pooling.

Attribute names match the reference ``sem_seg_head.predictor.*`` keys.
"""
from __future__ import annotations

import math
from typing import List

import torch
import torch.nn.functional as F
from torch import nn

from .classifier import cosine_logits, mask_pooling  # noqa: F401  (shared; re-exported)
from .position_encoding import PositionEmbeddingSine


class SelfAttentionLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=0.0)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt, query_pos):
        q = k = tgt + query_pos
        return self.norm(tgt + self.self_attn(q, k, value=tgt, need_weights=False)[0])


class CrossAttentionLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=0.0)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt, memory, attn_mask, pos, query_pos):
        out = self.multihead_attn(query=tgt + query_pos, key=memory + pos, value=memory,
                                  attn_mask=attn_mask, need_weights=False)[0]
        return self.norm(tgt + out)


class FFNLayer(nn.Module):
    def __init__(self, d_model: int, dim_feedforward: int):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt):
        return self.norm(tgt + self.linear2(F.relu(self.linear1(tgt))))


class MLP(nn.Module):
    """Linear layers with ReLU between them."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MultiScaleMaskedTransformerDecoder(nn.Module):
    num_feature_levels = 3

    def __init__(self, in_channels: int = 256, hidden_dim: int = 256, num_queries: int = 250,
                 nheads: int = 8, dim_feedforward: int = 2048, dec_layers: int = 9,
                 mask_dim: int = 256, clip_embedding_dim: int = 768):
        super().__init__()
        self.num_heads = nheads
        self.num_layers = dec_layers
        self.num_queries = num_queries
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2, normalize=True)
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads) for _ in range(dec_layers))
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads) for _ in range(dec_layers))
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward) for _ in range(dec_layers))
        self.decoder_norm = nn.LayerNorm(hidden_dim)
        self.query_feat = nn.Embedding(num_queries, hidden_dim)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.level_embed = nn.Embedding(self.num_feature_levels, hidden_dim)
        # The reference projects only when channels differ (ENFORCE_INPUT_PROJ False);
        # empty Sequentials keep the module indices without parameters.
        self.input_proj = nn.ModuleList(
            nn.Conv2d(in_channels, hidden_dim, kernel_size=1) if in_channels != hidden_dim
            else nn.Sequential() for _ in range(self.num_feature_levels))
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        # FC-CLIP class head: mask-pooled pixel features + query -> CLIP embedding space
        self._mask_pooling_proj = nn.Sequential(nn.LayerNorm(hidden_dim),
                                                nn.Linear(hidden_dim, hidden_dim))
        self.class_embed = MLP(hidden_dim, hidden_dim, clip_embedding_dim, 3)
        self.logit_scale = nn.Parameter(torch.ones([]) * math.log(1 / 0.07))
        for layers in (self.transformer_self_attention_layers,
                       self.transformer_cross_attention_layers, self.transformer_ffn_layers):
            for p in layers.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)

    def _masks(self, output: torch.Tensor, mask_features: torch.Tensor):
        """Queries (Q x B x C) -> (normed queries B x Q x C, mask logits B x Q x H x W)."""
        decoder_output = self.decoder_norm(output).transpose(0, 1)
        mask_embed = self.mask_embed(decoder_output)
        return decoder_output, torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features)

    def _attn_mask(self, mask_logits: torch.Tensor, size) -> torch.Tensor:
        """Boolean (B*heads) x Q x h*w mask: True = may not attend (sigmoid < 0.5);
        a query whose whole row is masked attends everywhere instead."""
        m = F.interpolate(mask_logits, size=size, mode="bilinear", align_corners=False)
        # sigmoid, not "logit < 0": fp32 sigmoid rounds to exactly 0.5 for |x| < ~6e-8,
        # and the reference leaves those pixels open (scripts/compare_fcclip_reference.py)
        blocked = m.flatten(2).sigmoid() < 0.5
        blocked = blocked & ~blocked.all(dim=-1, keepdim=True)
        return blocked.unsqueeze(1).repeat(1, self.num_heads, 1, 1).flatten(0, 1).detach()

    def _class_embed(self, mask_features: torch.Tensor, masks: torch.Tensor,
                     decoder_output: torch.Tensor) -> torch.Tensor:
        pooled = self._mask_pooling_proj(mask_pooling(mask_features, masks))
        return self.class_embed(pooled + decoder_output)

    def forward(self, x: List[torch.Tensor], mask_features: torch.Tensor,
                intermediate: bool = False):
        """x: [s32, s16, s8] levels (B x C x h x w); mask_features B x C x H/4 x W/4.
        Returns (mask logits B x Q x H/4 x W/4, class embeddings B x Q x D).

        With ``intermediate`` both are lists with one entry per prediction (the learned
        queries, then every layer), as the reference's aux outputs + final output;
        used to compare layer by layer, never at inference."""
        src, pos, sizes = [], [], []
        for i in range(self.num_feature_levels):
            sizes.append(x[i].shape[-2:])
            pos.append(self.pe_layer(x[i]).flatten(2).permute(2, 0, 1))
            src.append((self.input_proj[i](x[i]).flatten(2)
                        + self.level_embed.weight[i][None, :, None]).permute(2, 0, 1))
        bs = src[0].shape[1]
        query_embed = self.query_embed.weight.unsqueeze(1).repeat(1, bs, 1)
        output = self.query_feat.weight.unsqueeze(1).repeat(1, bs, 1)
        decoder_output, masks = self._masks(output, mask_features)
        all_masks, all_embeds = [], []
        if intermediate:
            all_masks.append(masks)
            all_embeds.append(self._class_embed(mask_features, masks, decoder_output))
        for i in range(self.num_layers):
            level = i % self.num_feature_levels
            attn_mask = self._attn_mask(masks, sizes[level])
            output = self.transformer_cross_attention_layers[i](
                output, src[level], attn_mask, pos[level], query_embed)
            output = self.transformer_self_attention_layers[i](output, query_embed)
            output = self.transformer_ffn_layers[i](output)
            decoder_output, masks = self._masks(output, mask_features)
            if intermediate:
                all_masks.append(masks)
                all_embeds.append(self._class_embed(mask_features, masks, decoder_output))
        if intermediate:
            return all_masks, all_embeds
        # Only the last layer's class prediction is used at inference (the others feed
        # auxiliary losses in training), so the class head runs once.
        return masks, self._class_embed(mask_features, masks, decoder_output)


__all__ = ["MultiScaleMaskedTransformerDecoder", "MLP", "mask_pooling", "cosine_logits"]
