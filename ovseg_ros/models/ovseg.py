"""OVSeg's modules in the released checkpoint's layout, its first image graph, and
strict loading of the released file.

``OVSegWeights`` has the reference model's attribute names, so its ``state_dict``
keys are the inference keys of ``ovseg_swinbase_vitL14_ft_mpt.pth``:

  backbone.*                       Swin-B (models/swin.py)
  sem_seg_head.pixel_decoder.*     FPN pixel decoder   (models/maskformer_head.py)
  sem_seg_head.predictor.*         DETR decoder, class_embed, mask_embed
  clip_adapter.clip_model.*        the whole fine-tuned CLIP ViT-L/14 in OpenAI's layout,
                                   plus visual.mask_embedding (models/mask_adapted_clip.py)
  clip_adapter.non_object_embedding   the learnt "no object" text embedding (1 x D)
  clip_adapter.pixel_mean / pixel_std CLIP's mean/std x 255 (buffers, 1 x 3 x 1 x 1)

``criterion.*`` (the training loss's class weights) is training state and skipped; which
keys are read is the engine module's rule (engines/ovseg.py), passed to the loader.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..core.stage_timing import mark
from ..weights import WeightsError
from ..weights.state_dict import inference_part, read_state_dict
from .maskformer_head import OpenVocabMaskFormerHead, ProposalHeadSpec
from .normalise import normalise_unit_image
from .swin import SwinSpec, SwinTransformer

log = logging.getLogger(__name__)

#: the reference's detectron2 config: ImageNet mean/std on 0..255 for the proposal stage
PIXEL_MEAN = (123.675, 116.280, 103.530)
PIXEL_STD = (58.395, 57.120, 57.375)
#: CLIP's mean/std (on 0..1) for the crops; the crop background is filled with the mean
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
SIZE_DIVISIBILITY = 32


class ClipAdapterWeights(nn.Module):
    def __init__(self, clip_model: nn.Module):
        super().__init__()
        self.clip_model = clip_model
        dim = int(clip_model.text_projection.shape[-1])
        width = int(clip_model.transformer.width)
        self.non_object_embedding = nn.Parameter(torch.randn(1, dim) * width ** -0.5)
        # float32 products, as the reference computes them (torch.Tensor(mean) * 255.0)
        self.register_buffer("pixel_mean", torch.tensor(CLIP_MEAN).reshape(1, 3, 1, 1) * 255.0)
        self.register_buffer("pixel_std", torch.tensor(CLIP_STD).reshape(1, 3, 1, 1) * 255.0)


class OVSegWeights(nn.Module):
    def __init__(self, swin: SwinSpec, head: ProposalHeadSpec, clip_model: nn.Module):
        super().__init__()
        self.backbone = SwinTransformer(swin)
        self.sem_seg_head = OpenVocabMaskFormerHead(head)
        self.clip_adapter = ClipAdapterWeights(clip_model)


class ProposalImageModel(nn.Module):
    """The first image graph (what the backend runs for the proposal stage).

    forward(images B x 3 x H x W RGB in [0, 1]) ->
      mask_logits  B x Q x Hp/4 x Wp/4   (Hp, Wp: H, W padded up to a multiple of 32)
      class_embed  B x Q x D             query embeddings (cosine with text outside)
    """

    def __init__(self, backbone: nn.Module, sem_seg_head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head
        # mean/std on the 0..255 scale, float32, as the reference's detectron2 buffers
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), False)

    def forward(self, images: torch.Tensor):
        x = normalise_unit_image(images, self.pixel_mean, self.pixel_std)
        h, w = x.shape[-2:]
        # zero padding after normalisation, bottom/right (detectron2's ImageList)
        x = F.pad(x, (0, (-w) % SIZE_DIVISIBILITY, 0, (-h) % SIZE_DIVISIBILITY))
        feats = self.backbone(x)
        mark("backbone")   # the engine's timer, inside its stage_timer
        mask_logits, class_embed = self.sem_seg_head(feats)
        mark("proposals")
        return mask_logits, class_embed


def check_state(state: Dict[str, torch.Tensor], layout: Dict[str, Tuple[int, ...]], *,
                where: str, keep: Callable[[str], bool]) -> Dict[str, torch.Tensor]:
    """The part of ``state`` that ``keep`` reads when it fits ``layout`` exactly; otherwise
    one WeightsError naming the missing, unexpected and mis-shaped keys."""
    kept, problems = inference_part(state, layout, keep)
    if problems:
        raise WeightsError(f"{where} does not fit the OVSeg model: " + "; ".join(problems) +
                           ". Check that the file is the released OVSeg checkpoint "
                           "(ovseg_swinbase_vitL14_ft_mpt.pth) and that ovseg.swin_model, "
                           "ovseg.clip_model, ovseg.head_size, ovseg.num_queries and "
                           "ovseg.mask_prompt_depth match it.")
    return kept


def load_ovseg_checkpoint(path: Path, weights: OVSegWeights, *, setting: str,
                          keep: Callable[[str], bool]) -> int:
    """Load the released file into ``weights`` with strict key and shape checking; ``keep``
    (the engine's rule) says which keys are read, any other one that is not in the layout
    is an error."""
    try:
        state = read_state_dict(path)
    except Exception as exc:
        raise WeightsError(f"cannot read checkpoint {str(path)!r} (config key '{setting}'): "
                           f"{type(exc).__name__}: {str(exc)[:300]}. Torch files are read with "
                           "weights_only=True; a file holding other Python objects must be "
                           "converted to safetensors first (see docs/ovseg.md).") from exc
    layout = {k: tuple(v.shape) for k, v in weights.state_dict().items()}
    kept = check_state(state, layout, where=f"checkpoint {str(path)!r} (config key '{setting}')",
                       keep=keep)
    weights.load_state_dict(kept, strict=True)
    log.info("loaded %s: %d tensors (%d training-only skipped)", path, len(kept),
             len(state) - len(kept))
    return len(kept)


__all__ = ["OVSegWeights", "ClipAdapterWeights", "ProposalImageModel",
           "normalise_unit_image",
           "check_state", "load_ovseg_checkpoint", "PIXEL_MEAN", "PIXEL_STD", "CLIP_MEAN",
           "CLIP_STD", "SIZE_DIVISIBILITY"]
