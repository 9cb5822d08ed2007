"""MAFT+: FC-CLIP's architecture with a fine-tuned CLIP visual trunk.

Inference differs from FC-CLIP in the vocabulary path only:
  * class scores come from the mask-pooled CLIP embeddings alone (no in-vocabulary
    classifier, no geometric ensemble); the in-vocabulary head still gives P(void);
  * the text classifier (void row included) first passes the Content-Dependent
    Transfer: it cross-attends over the image's stride-32 CLIP embeddings
    (models/cdt.py), giving a per-image classifier (not re-normalised, as the
    reference). The dense embeddings it attends over are the reference's channel-major
    reshape of the CLIP map (``maftplus.cdt_per_pixel: false``, what the released
    weights were trained with; models/fcclip_head.dense_vectors);
  * semantic labels with the semantic checkpoint (``cdt_variant: semantic``): sigmoid of
    the masks at the padded size, class scores resized afterwards (its eval config);
    the panoptic variant resizes the mask logits first, as FC-CLIP.
Defaults: 100 queries, object threshold 0.2, overlap 0.7. The checkpoint holds
the head, ``cdt.*`` and the fine-tuned ``backbone.clip_model.visual.*``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from ..core.postprocess import MaskSemantic, class_chunk, fold_argmax
from ..core.types import VocabularyState
from ..config import Config
from ..models.cdt import build_maftplus_head
from ..models.checkpoint import CLIP_PREFIX, VISUAL_PREFIX
from ..models.classifier import cosine_logits
from ..registry import register_engine
from ..weights.sources import Release
# MAFT+ is FC-CLIP's engine with another classifier: the one engine module that imports
# another (test/core/test_architecture.py, ENGINE_VARIANTS)
from .fcclip import TRAINING_ONLY_PREFIXES, FCClipEngine


@register_engine("maftplus")
class MAFTPlusEngine(FCClipEngine):
    name = "maftplus"
    group = "maftplus"
    checkpoint_setting = "maftplus.checkpoint"
    docs = "docs/fcclip.md"
    releases = (
        Release("maftplus", "maftp_l.pth", "MAFT+ Large, semantic",
                "1EQo5guVuKkSSZj4bv0FQN_4X9h_Rwfe5",
                "github.com/jiaosiyu1999/MAFT-Plus README, pretrained weights",
                settings=(("maftplus.cdt_variant", "semantic"),)),
        Release("maftplus", "maftp_l_pano.pth", "MAFT+ Large, panoptic",
                "1znk_uco8fwvbA0kndy4kGyVp22KbQr6g",
                "github.com/jiaosiyu1999/MAFT-Plus README, pretrained weights (panoptic)",
                settings=(("maftplus.cdt_variant", "panoptic"),)),
    )
    dense_output = True

    @classmethod
    def _make_head(cls, spec, cfg: Config) -> torch.nn.Module:
        return build_maftplus_head(spec, cfg["maftplus.cdt_variant"])

    @classmethod
    def is_inference_key(cls, key: str) -> bool:
        """Head, CDT and the fine-tuned visual tower; the frozen text tower and the
        teacher ``backbone_t.*`` are dropped."""
        if key.startswith(TRAINING_ONLY_PREFIXES):
            return False
        if key.startswith(CLIP_PREFIX):
            return key.startswith(VISUAL_PREFIX)
        return True

    @classmethod
    def _image_model_options(cls, cfg: Config) -> dict:
        return {"dense_per_pixel": cfg["maftplus.cdt_per_pixel"]}

    def _model_id(self) -> str:
        form = "pixel" if self.cfg["maftplus.cdt_per_pixel"] else "ref"
        return super()._model_id() + f"-cdt-{self.cfg['maftplus.cdt_variant']}-{form}"

    def _semantic(self, probs: torch.Tensor, mask_logits: torch.Tensor, resized, original,
                  scores: bool, budget: int) -> MaskSemantic:
        """The semantic checkpoint's eval config (semantic inference only) keeps the masks
        at the padded size: sigmoid there, the class scores summed over every query there
        (one product), and the class scores cropped and resized afterwards
        (sem_seg_postprocess), argmax last. Done in that order, so the labels are the
        reference's bit for bit: resizing each query's mask first is the same sum only to
        rounding, and moved 1-2 pixels per photo (docs/fcclip.md). Memory: the Q padded
        masks plus the K class scores at padded and original size, in class chunks when
        K x H x W exceeds ``budget`` (each class's sum and resize is its own, so a chunk
        computes what the whole volume would, but the product's kernel may differ: the
        reference runs all K at once, which the comparison's vocabularies fit). The
        panoptic config resizes the mask logits first, as FC-CLIP does."""
        if self.cfg["maftplus.cdt_variant"] != "semantic":
            return super()._semantic(probs, mask_logits, resized, original, scores, budget)
        masks = self._to_padded(mask_logits).sigmoid()[0]            # Q x Hp x Wp
        h, w = original
        k = probs.shape[1]
        k_chunk = class_chunk(k, max(h * w, masks.shape[-2] * masks.shape[-1]), budget)
        best: Optional[torch.Tensor] = None
        labels: Optional[torch.Tensor] = None
        denom = torch.zeros((h, w), dtype=torch.float32, device=probs.device)
        kept = []
        for c0 in range(0, k, k_chunk):
            vol = torch.einsum("qc,qhw->chw", probs[:, c0:c0 + k_chunk], masks)
            vol = self._to_original(vol[None], resized, original)     # c x H x W
            denom += vol.sum(0)
            chunk_best, labels = fold_argmax(vol, c0, best, labels)
            best = chunk_best if best is None else torch.maximum(best, chunk_best)
            if scores:
                kept.append(vol)
        denom = denom.clamp_min(1e-12)
        out = torch.cat(kept).div_(denom) if scores else None
        return MaskSemantic(labels, (best / denom).float(), out)

    def classify(self, outputs: Tuple[torch.Tensor, ...], vocab: VocabularyState) -> torch.Tensor:
        _, class_embed, clip_embed, dense_embed = outputs
        classifier = self._classifier(vocab)
        in_logits = self._per_class(cosine_logits(
            class_embed.float(), classifier, self.head.sem_seg_head.predictor.logit_scale), vocab)
        transferred = self.head.cdt(dense_embed.float(), classifier)           # B x (S+1) x D
        out_logits = self._per_class(cosine_logits(
            clip_embed.float(), transferred, self.clip_model.logit_scale), vocab)
        return self._with_void(out_logits[..., :-1], in_logits)


__all__ = ["MAFTPlusEngine"]
