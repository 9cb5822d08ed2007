"""Loading the reference FC-CLIP / MAFT+ checkpoints with strict key checking.

The modules keep the reference attribute names, so checkpoint keys map 1:1:
  * head keys (``sem_seg_head.*``, ``void_embedding.weight``, MAFT+ ``cdt.*``):
    every one required, none extra;
  * ``backbone.clip_model.*``: CLIP parameters (FC-CLIP's frozen copy, MAFT+'s
    fine-tuned visual trunk), loaded over the open_clip model; for MAFT+ the
    whole visual tower is required;
  * ``criterion.*`` and ``backbone_t.*`` (MAFT+'s frozen teacher) are training
    state and are skipped.
Anything else, a missing key or a shape mismatch is a WeightsError listing the keys.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List

import torch
from torch import nn

from ..weights import WeightsError, load_state_dict_file

log = logging.getLogger(__name__)

CLIP_PREFIX = "backbone.clip_model."
TRAINING_ONLY_PREFIXES = ("criterion.", "backbone_t.")


@dataclass(frozen=True)
class CheckpointReport:
    head_keys: int
    clip_keys: int
    skipped_keys: int
    #: CLIP keys outside the visual tower were replaced (the text encoder may differ)
    text_overridden: bool


def _listing(keys: Iterable[str], limit: int = 15) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_reference_checkpoint(path: Path, head: nn.Module, clip_model: nn.Module, *,
                              setting: str, require_visual: bool) -> CheckpointReport:
    """Load ``path`` into ``head`` (strict) and ``clip_model`` (the CLIP keys present)."""
    if not path.is_file():
        raise WeightsError(f"checkpoint file {str(path)!r} does not exist; set the config key "
                           f"'{setting}' to the released checkpoint (.pth or .safetensors). "
                           "(For a demo without weights set random_init: true; outputs are then "
                           "meaningless and flagged random_weights.)")
    try:
        state = load_state_dict_file(path)
    except Exception as exc:
        raise WeightsError(f"cannot read checkpoint {str(path)!r} (config key '{setting}'): "
                           f"{type(exc).__name__}: {str(exc)[:300]}. Torch files are read with "
                           "weights_only=True; a file holding other Python objects must be "
                           "converted to safetensors first (see docs/fcclip.md).") from exc
    head_sd = head.state_dict()
    clip_sd = clip_model.state_dict()
    head_part: Dict[str, torch.Tensor] = {}
    clip_part: Dict[str, torch.Tensor] = {}
    unexpected: List[str] = []
    skipped = 0
    for key, value in state.items():
        if key in head_sd:
            head_part[key] = value
        elif key.startswith(CLIP_PREFIX) and key[len(CLIP_PREFIX):] in clip_sd:
            clip_part[key[len(CLIP_PREFIX):]] = value
        elif key.startswith(TRAINING_ONLY_PREFIXES):
            skipped += 1
        else:
            unexpected.append(key)
    missing = [k for k in head_sd if k not in head_part]
    if require_visual:
        missing += [CLIP_PREFIX + k for k in clip_sd
                    if k.startswith("visual.") and k not in clip_part]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
    shapes = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(ref[k2].shape)}"
              for part, ref, prefix in ((head_part, head_sd, ""), (clip_part, clip_sd, CLIP_PREFIX))
              for k2, v in part.items() for k in [prefix + k2]
              if tuple(v.shape) != tuple(ref[k2].shape)]
    if shapes:
        problems.append(f"shape mismatches ({len(shapes)}): {_listing(shapes, 8)}")
    if problems:
        raise WeightsError(f"checkpoint {str(path)!r} (config key '{setting}') does not fit the "
                           "model: " + "; ".join(problems) + ". Check that the file is the "
                           "matching release and that the CLIP model / num_queries settings match "
                           "it (ConvNeXt-L: convnext_large_d_320).")
    head.load_state_dict(head_part, strict=True)
    if clip_part:
        clip_model.load_state_dict(clip_part, strict=False)
    text_overridden = any(not k.startswith("visual.") for k in clip_part)
    log.info("loaded %s: %d head tensors, %d CLIP tensors, %d training-only tensors skipped",
             path, len(head_part), len(clip_part), skipped)
    return CheckpointReport(len(head_part), len(clip_part), skipped, text_overridden)


__all__ = ["load_reference_checkpoint", "CheckpointReport", "CLIP_PREFIX"]
