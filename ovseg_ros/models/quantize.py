"""int8 on the CPU: dynamic quantisation of an image path's ``nn.Linear`` layers.

``linears_to_int8(*roots)`` swaps every ``nn.Linear`` under the given modules, in place
and once (at load), for a dynamically quantised linear: weights stored as int8 (one
scale per output channel), activations quantised per call from their own range, the
product an int8 x int8 -> int32 matmul (fbgemm/oneDNN: VNNI on AVX-512 VNNI CPUs, AMX
where present), then rescaled to fp32. Everything else (norms, residual streams,
attention softmax, convolutions) keeps running in fp32, so only the heavy matmuls are
rounded. The engine chooses the roots: what must stay exact (ProxyCLIP's proxy
attention and CLIP head) is simply not under them.

Only the exact type ``nn.Linear`` is swapped (torch's ``quantize_dynamic`` rule): a
subclass such as ``nn.MultiheadAttention``'s ``out_proj``
(``NonDynamicallyQuantizableLinear``) stays fp32, as does the packed input projection
of ``nn.MultiheadAttention`` (a parameter, not a module).

The API is ``torch.ao.quantization.quantize_dynamic``: torch 2.14 marks it deprecated
in favour of torchao's ``quantize_``, which is not a dependency of this project; the
deprecation warnings are silenced here, and only here, on purpose.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

#: the deprecation notices torch raises for ``torch.ao.quantization`` and for creating
#: quantised tensors: the whole point of this module, said once in its docstring
_DEPRECATION_MESSAGES = (r"torch\.ao\.quantization is deprecated",
                         r"torch\.quantize_per_tensor, torch\.quantize_per_channel")


def quantized_engine() -> str:
    """The quantised-kernel library torch uses here (``x86``: fbgemm/oneDNN)."""
    return str(torch.backends.quantized.engine)


def linears_to_int8(*roots: nn.Module) -> int:
    """Swap every ``nn.Linear`` under ``roots`` for a dynamic int8 linear, in place.

    Returns how many were swapped; a root without any is an error (the caller named the
    wrong modules). The roots must be on the CPU: the quantised kernels are CPU-only.
    """
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    swapped = 0
    for root in roots:
        params = list(root.parameters())
        if any(p.device.type != "cpu" for p in params):
            raise ValueError("int8 dynamic quantisation runs on the CPU only; "
                             f"{type(root).__name__} has parameters on "
                             f"{sorted({str(p.device) for p in params})}")
        count = count_linears(root)
        if count == 0:
            raise ValueError(f"{type(root).__name__} holds no nn.Linear to quantise")
        with warnings.catch_warnings():
            for message in _DEPRECATION_MESSAGES:
                warnings.filterwarnings("ignore", message=message)
            # per-channel weight scales: a channel with large weights does not coarsen
            # every other channel's steps (same speed within noise here)
            quantize_dynamic(root, {nn.Linear: per_channel_dynamic_qconfig},
                             dtype=torch.qint8, inplace=True)
        swapped += count
    return swapped


def count_linears(module: nn.Module) -> int:
    """``nn.Linear`` modules (exact type) under ``module``: what ``linears_to_int8`` swaps."""
    return sum(1 for m in module.modules() if type(m) is nn.Linear)


def count_int8_linears(module: nn.Module) -> int:
    """Dynamic int8 linears under ``module``."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return sum(1 for m in module.modules() if isinstance(m, DynamicLinear))


__all__ = ["linears_to_int8", "count_linears", "count_int8_linears", "quantized_engine"]
