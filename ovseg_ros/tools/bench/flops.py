"""FLOPs of one call as torch executes it, attention included.

``torch.utils.flop_counter.FlopCounterMode`` has no formula for the CPU flash-attention
op (``aten._scaled_dot_product_flash_attention_for_cpu``) and sees
``nn.MultiheadAttention``'s inference fast path (``aten._native_multi_head_attention``)
as one op without a formula either: on the CPU it counted 0 FLOPs for every attention of
the ViTs, and 0 for CLIP's attention projections. For the default ProxyCLIP preset that
left out 289 of 1009 GFLOP per 640x480 frame (the figure published before was 721).
``count_call_flops`` gives the CPU flash op the formula torch uses for the GPU flash ops
and counts with the MHA fast path off (its projections then run as counted linears, its
attention as SDPA), so the count does not depend on the device.
"""
from __future__ import annotations

from typing import Any, Callable

_registered = False


def _register_cpu_flash_formula() -> None:
    """Give aten._scaled_dot_product_flash_attention_for_cpu torch's SDPA formula, once."""
    global _registered
    if _registered:
        return
    import torch
    from torch.utils import flop_counter

    op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    if op not in flop_counter.flop_registry:
        # the registry's entry for the GPU flash op already takes the call's arguments
        gpu = flop_counter.flop_registry[torch.ops.aten._scaled_dot_product_flash_attention]
        flop_counter.register_flop_formula(op, get_raw=True)(gpu)
    _registered = True


def count_call_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of ``fn()`` (matrix products, convolutions and attention)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    _register_cpu_flash_formula()
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with FlopCounterMode(display=False) as counter:
            fn()
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return int(counter.get_total_flops())


__all__ = ["count_call_flops"]
