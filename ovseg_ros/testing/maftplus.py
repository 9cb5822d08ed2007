"""MAFT+ helpers shared by the tests and scripts/compare_maftplus_reference.py."""
from __future__ import annotations

from typing import Tuple

import torch


def dense_map_and_outputs(engine, x: torch.Tensor) -> Tuple[torch.Tensor, tuple]:
    """(the stride-32 CLIP map the image graph builds for ``x`` (``norm_pre`` output, the
    reference's ``clip_vis_dense``), the image graph's outputs)."""
    seen = []
    hook = engine.image_model.visual.trunk.norm_pre.register_forward_hook(
        lambda m, a, out: seen.append(out))
    try:
        with torch.no_grad():
            outs = engine.image_model(x)
    finally:
        hook.remove()
    return seen[-1], outs


__all__ = ["dense_map_and_outputs"]
