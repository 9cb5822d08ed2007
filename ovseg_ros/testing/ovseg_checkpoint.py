"""Random-weight OVSeg checkpoints in the released file's layout (tests and comparisons).

``write_ovseg_checkpoint(config, path)`` builds the engine's modules for ``config``
(any config ``make_config`` takes; use the tiny models: ``ovseg.swin_model:
ovseg_tiny_swin``, ``ovseg.head_size: tiny``, ``ovseg.clip_model: ovseg-tiny-ViT-14``),
gives every parameter seeded noise and writes what the released
``ovseg_swinbase_vitL14_ft_mpt.pth`` holds: a torch file ``{"model": state_dict}``
with every inference key plus the training-only ``criterion.empty_weight``
(or a flat safetensors file). Nothing here is used by production code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import torch


def randomise(module: torch.nn.Module, seed: int = 0, scale: float = 0.5) -> None:
    """Add seeded noise to every parameter: std ``scale / sqrt(fan_in)`` for matrices and
    kernels (a layer's gain stays O(1), as in a trained network), ``scale / 4`` for vectors
    (biases, norm scales, embeddings)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            std = scale / p[0].numel() ** 0.5 if p.dim() > 1 else scale / 4
            p.add_(torch.randn(p.shape, generator=gen) * std)


def released_state_dict(config, seed: int = 0, scale: float = 0.5) -> Dict[str, torch.Tensor]:
    """The state dict a released OVSeg file would hold for ``config``, random weights."""
    from ..config import make_config
    from ..engines.ovseg import OVSegEngine

    cfg = make_config(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        weights = OVSegEngine._build(cfg)
    randomise(weights, seed, scale)
    sd = {k: v.detach().clone().contiguous() for k, v in weights.state_dict().items()}
    # the training loss's class weights (MaskFormer's SetCriterion): not an inference key
    sd["criterion.empty_weight"] = torch.ones(172)
    return sd


def write_ovseg_checkpoint(config, path, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Write ``released_state_dict(config, seed)`` to ``path`` (.pth: ``{"model": sd}`` as
    detectron2 saves it; .safetensors: flat) and return the state dict."""
    path = Path(path)
    sd = released_state_dict(config, seed)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(sd, str(path))
    else:
        torch.save({"model": sd, "iteration": 120000}, str(path))
    return sd


__all__ = ["randomise", "released_state_dict", "write_ovseg_checkpoint"]
