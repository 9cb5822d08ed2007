"""Pieces every mask-classification engine shares: mask pooling and the cosine classifier.

FC-CLIP, MAFT+ (and any later mask-transformer engine) classify a mask by the
cosine between an embedding of the mask and each text row, scaled by CLIP's
learned temperature; the embedding of a mask is the average of a dense
feature map inside the binarised mask. One definition of each, here.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

#: CLIP caps its learned temperature exp(logit_scale) at 100 (open_clip's training clamp)
MAX_LOGIT_SCALE = 100.0


def mask_pooling(features: torch.Tensor, mask_logits: torch.Tensor) -> torch.Tensor:
    """Average of ``features`` (B x C x H x W) inside each binarised mask (logit > 0)
    -> B x Q x C. Masks are resized (bilinear) to the feature size when they differ."""
    if features.shape[-2:] != mask_logits.shape[-2:]:
        mask_logits = F.interpolate(mask_logits, size=features.shape[-2:], mode="bilinear",
                                    align_corners=False)
    mask = (mask_logits > 0).to(features.dtype)
    denom = mask.sum(dim=(-1, -2), keepdim=True) + 1e-8
    return torch.einsum("bchw,bqhw->bqc", features, mask / denom)


def logit_scale_value(logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's temperature from its stored log: clamp(exp(logit_scale), max=100)."""
    return torch.clamp(logit_scale.exp(), max=MAX_LOGIT_SCALE)


def cosine_logits(embeddings: torch.Tensor, classifier: torch.Tensor,
                  logit_scale: torch.Tensor) -> torch.Tensor:
    """clamp(exp(logit_scale), max=100) * cos(embedding, classifier row): B x Q x K.

    ``embeddings`` B x Q x D are normalised here; ``classifier`` rows are used
    as given (K x D shared by the batch, or B x K x D per image, as MAFT+'s
    transferred classifier, which the reference does not re-normalise).
    """
    scale = logit_scale_value(logit_scale)
    return scale * F.normalize(embeddings, dim=-1) @ classifier.transpose(-1, -2)


def class_max(logits: torch.Tensor, synonym_class: torch.Tensor, num_classes: int) -> torch.Tensor:
    """... x S synonym logits -> ... x K: each class takes its best synonym."""
    index = synonym_class.to(logits.device).expand(*logits.shape[:-1], -1)
    out = torch.full((*logits.shape[:-1], num_classes), float("-inf"), dtype=logits.dtype,
                     device=logits.device)
    return out.scatter_reduce(-1, index, logits, reduce="amax", include_self=True)


__all__ = ["mask_pooling", "cosine_logits", "logit_scale_value", "MAX_LOGIT_SCALE", "class_max"]
