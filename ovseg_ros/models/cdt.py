"""MAFT+'s Content-Dependent Transfer (CDT).

The text classifier (one row per class embedding, void included) attends
over the image's stride-32 CLIP embeddings (sine positions on the keys), and
the result is added back, giving a per-image classifier:

  semantic checkpoint (maftp_l.pth):       t' = LN(t + Linear(attn(t, img)))
  panoptic checkpoint (maftp_l_pano.pth):  t' = t + LN(Linear(attn(t, img)))

Attribute names follow the reference (``cdt.cross_atten.multihead_attn``,
``.norm``, ``.MLP``).
"""
from __future__ import annotations

import torch
from torch import nn

from .position_encoding import PositionEmbeddingSine

CDT_VARIANTS = ("semantic", "panoptic")


class ShortcutCrossAttention(nn.Module):
    def __init__(self, d_model: int, nhead: int, variant: str = "semantic"):
        super().__init__()
        if variant not in CDT_VARIANTS:
            raise ValueError(f"CDT variant must be one of {CDT_VARIANTS}, got {variant!r}")
        self.variant = variant
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=0.0)
        self.norm = nn.LayerNorm(d_model)
        self.MLP = nn.Linear(d_model, d_model)
        nn.init.xavier_uniform_(self.multihead_attn.in_proj_weight)
        nn.init.xavier_uniform_(self.multihead_attn.out_proj.weight)
        if variant == "panoptic":
            # the reference starts the panoptic variant as an identity transfer
            nn.init.zeros_(self.MLP.weight)
            nn.init.zeros_(self.MLP.bias)

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """tgt K x B x D (queries = text rows), memory/pos HW x B x D."""
        out = self.multihead_attn(query=tgt, key=memory + pos, value=memory,
                                  need_weights=False)[0]
        if self.variant == "panoptic":
            return tgt + self.norm(self.MLP(out))
        return self.norm(tgt + self.MLP(out))


class ContentDependentTransfer(nn.Module):
    """(dense image embeddings B x D x h x w, text classifier K x D) -> B x K x D."""

    def __init__(self, d_model: int = 768, nhead: int = 8, variant: str = "semantic"):
        super().__init__()
        self.pe_layer = PositionEmbeddingSine(d_model // 2, normalize=True)
        self.cross_atten = ShortcutCrossAttention(d_model, nhead, variant)

    def forward(self, img_feat: torch.Tensor, text_classifier: torch.Tensor) -> torch.Tensor:
        b = img_feat.shape[0]
        text = text_classifier.unsqueeze(1).expand(-1, b, -1)               # K x B x D
        pos = self.pe_layer(img_feat).flatten(2).permute(2, 0, 1)          # HW x B x D
        memory = img_feat.flatten(2).permute(2, 0, 1)
        return self.cross_atten(text, memory, pos).transpose(0, 1)         # B x K x D


__all__ = ["ContentDependentTransfer", "CDT_VARIANTS"]


def build_maftplus_head(spec, variant: str = "semantic", nhead: int = 8) -> nn.Module:
    """FC-CLIP's head weights plus ``cdt`` (the MAFT+ checkpoint's non-CLIP keys)."""
    from .fcclip_head import FCCLIPHeadWeights

    head = FCCLIPHeadWeights(spec)
    head.cdt = ContentDependentTransfer(spec.clip_embedding_dim, nhead, variant)
    return head


__all__.append("build_maftplus_head")
