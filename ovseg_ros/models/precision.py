"""Mixed precision for the image paths: matrix products in bf16/fp16, the rest in fp32.

``matmul_weights_to(module, dtype)`` stores only the weights that feed matrix
products (``nn.Linear``, convolutions, the packed input projection of
``nn.MultiheadAttention``) in the low-precision dtype, once. Norms, embeddings,
position grids, layer scales and every residual stream stay fp32, so under
``torch.autocast`` only the inputs and outputs of the heavy matmuls are rounded,
while sums over blocks (the residual stream) keep fp32 precision. Storing the
weights once avoids autocast's per-call weight casts (on the CPU: ~35 % of the
bf16 run time of ProxyCLIP when every weight was fp32).

``fp32_region(x)`` disables autocast for the precision-sensitive steps (proxy
attention, heads, similarities), which then run on fp32 inputs.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

_MATMUL_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)


def matmul_weights_to(module: nn.Module, dtype: torch.dtype,
                      keep: Iterable[nn.Module] = ()) -> nn.Module:
    """Store the matmul weights (and their biases) of ``module`` in ``dtype``, except in
    the modules of ``keep`` (and their children), which stay as they are."""
    kept = set()
    for k in keep:
        kept.update(id(m) for m in k.modules())
    for m in module.modules():
        if id(m) in kept:
            continue
        if isinstance(m, _MATMUL_MODULES):
            for p in m.parameters(recurse=False):
                p.data = p.data.to(dtype)
        elif isinstance(m, nn.MultiheadAttention):
            # its out_proj is an nn.Linear child, handled on its own
            for name in ("in_proj_weight", "in_proj_bias", "q_proj_weight", "k_proj_weight",
                         "v_proj_weight"):
                p = getattr(m, name, None)
                if p is not None:
                    p.data = p.data.to(dtype)
    return module


def fp32_region(x: torch.Tensor):
    """A region without autocast on ``x``'s device: its ops run in their inputs' dtype."""
    return torch.autocast(device_type=x.device.type, enabled=False)


__all__ = ["matmul_weights_to", "fp32_region"]
