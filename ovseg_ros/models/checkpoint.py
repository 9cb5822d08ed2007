"""The inference layout of the reference FC-CLIP / MAFT+ checkpoints and strict loading.

The modules keep the reference attribute names, so checkpoint keys map 1:1. A
released training file holds more than inference needs; its keys fall in three
groups (the engine module's ``is_inference_key`` sorts them, ``checkpoint_layout`` lists
the inference ones with their shapes; engines/fcclip.py, engines/maftplus.py):
  * head keys (``sem_seg_head.*``, ``void_embedding.weight``, MAFT+ ``cdt.*``) and,
    for MAFT+, its fine-tuned visual tower ``backbone.clip_model.visual.*``:
    every one required, with the module's shape;
  * training state, skipped: ``criterion.*``, MAFT+'s frozen teacher ``backbone_t.*``,
    and the frozen CLIP parameters (FC-CLIP's whole ``backbone.clip_model.*``, MAFT+'s
    text tower): both references freeze them, so they equal the open_clip weights the
    engine loads from ``clip_pretrained`` anyway;
  * anything else is unexpected.
A missing key, an unexpected key or a shape mismatch is a WeightsError listing the
keys. ``ovseg-weights convert`` / ``verify`` apply the same rules with the same reader
and check (ovseg_ros/weights/state_dict.py), so a converted file always loads.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch import nn

from ..weights import WeightsError
from ..weights.state_dict import Layout, LayoutReport, compare_layout, inference_part, \
    read_state_dict

log = logging.getLogger(__name__)

CLIP_PREFIX = "backbone.clip_model."
VISUAL_PREFIX = CLIP_PREFIX + "visual."


def layout_of(head: nn.Module, clip_model: nn.Module, *, visual: bool) -> Layout:
    """Inference keys and shapes: the head's state dict, plus the CLIP visual tower under
    ``backbone.clip_model.visual.`` when the checkpoint carries a fine-tuned one."""
    layout = {k: tuple(v.shape) for k, v in head.state_dict().items()}
    if visual:
        layout.update({CLIP_PREFIX + k: tuple(v.shape) for k, v in clip_model.state_dict().items()
                       if k.startswith("visual.")})
    return layout


@dataclass(frozen=True)
class CheckpointReport:
    head_keys: int
    clip_keys: int
    skipped_keys: int
    #: CLIP keys outside the visual tower were replaced (never, with the layouts above)
    text_overridden: bool


def load_reference_checkpoint(path: Path, head: nn.Module, clip_model: nn.Module, *,
                              setting: str, layout: Layout,
                              is_inference_key: Callable[[str], bool]) -> CheckpointReport:
    """Load ``path`` into ``head`` and (its ``backbone.clip_model.visual.*``) ``clip_model``.

    ``layout`` / ``is_inference_key`` are the engine's (``checkpoint_layout(cfg)``,
    ``is_inference_key``): the rules are the engine module's, the reading and the strict
    check are here.
    """
    if not path.is_file():
        raise WeightsError(f"checkpoint file {str(path)!r} does not exist; set the config key "
                           f"'{setting}' to the released checkpoint (.pth or .safetensors). "
                           "(For a demo without weights set random_init: true; outputs are then "
                           "meaningless and flagged random_weights.)")
    try:
        state = read_state_dict(path)
    except Exception as exc:
        raise WeightsError(f"cannot read checkpoint {str(path)!r} (config key '{setting}'): "
                           f"{type(exc).__name__}: {str(exc)[:300]}. Torch files are read with "
                           "weights_only=True; convert a file holding other Python objects "
                           "once with `ovseg-weights convert` (docs/weights.md).") from exc
    kept, problems = inference_part(state, layout, is_inference_key)
    skipped = len(state) - len(kept)
    if problems:
        raise WeightsError(f"checkpoint {str(path)!r} (config key '{setting}') does not fit the "
                           "model: " + "; ".join(problems) + ". Check that the file is the "
                           "matching release and that the CLIP model / num_queries settings match "
                           "it (ConvNeXt-L: convnext_large_d_320).")
    head_part = {k: v for k, v in kept.items() if not k.startswith(CLIP_PREFIX)}
    clip_part = {k[len(CLIP_PREFIX):]: v for k, v in kept.items() if k.startswith(CLIP_PREFIX)}
    head.load_state_dict(head_part, strict=True)
    if clip_part:
        clip_model.load_state_dict(clip_part, strict=False)
    text_overridden = any(not k.startswith("visual.") for k in clip_part)
    log.info("loaded %s: %d head tensors, %d CLIP tensors, %d training-only tensors skipped",
             path, len(head_part), len(clip_part), skipped)
    return CheckpointReport(len(head_part), len(clip_part), skipped, text_overridden)


__all__ = ["load_reference_checkpoint", "CheckpointReport", "CLIP_PREFIX", "VISUAL_PREFIX",
           "LayoutReport", "compare_layout", "layout_of", "Layout"]
