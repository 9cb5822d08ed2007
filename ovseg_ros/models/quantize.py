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
of ``nn.MultiheadAttention`` (a parameter, not a module). ``split_self_attention``
first turns such self-attention modules into ``LinearSelfAttention`` (the same
arithmetic with two plain ``nn.Linear`` projections), so their projections are swapped
too: in a ViT-B block they are a third of the matmul FLOPs.

The API is ``torch.ao.quantization.quantize_dynamic``: torch 2.14 marks it deprecated
in favour of torchao's ``quantize_``, which is not a dependency of this project; the
deprecation warnings are silenced here, and only here, on purpose.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
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


class LinearSelfAttention(nn.Module):
    """An ``nn.MultiheadAttention`` used as self-attention, with its packed input projection
    and its output projection as plain ``nn.Linear`` modules (so ``linears_to_int8`` can swap
    them); the attention itself is ``scaled_dot_product_attention``, as torch's own fast
    path. Same call as the module it replaces; only self-attention (key and value are the
    query tensor), no key padding mask, no attention weights."""

    def __init__(self, mha: nn.MultiheadAttention):
        super().__init__()
        if not mha._qkv_same_embed_dim or mha.in_proj_weight is None or mha.bias_k is not None \
                or mha.add_zero_attn:
            raise ValueError("LinearSelfAttention takes an nn.MultiheadAttention with one packed "
                             "input projection, no bias_k/bias_v and no add_zero_attn")
        dim = mha.embed_dim
        bias = mha.in_proj_bias is not None
        self.num_heads = mha.num_heads
        self.batch_first = mha.batch_first
        self.in_proj = nn.Linear(dim, 3 * dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=mha.out_proj.bias is not None)
        with torch.no_grad():
            self.in_proj.weight.copy_(mha.in_proj_weight)
            self.out_proj.weight.copy_(mha.out_proj.weight)
            if bias:
                self.in_proj.bias.copy_(mha.in_proj_bias)
            if mha.out_proj.bias is not None:
                self.out_proj.bias.copy_(mha.out_proj.bias)
        self.to(mha.in_proj_weight.device)

    def forward(self, query, key, value, need_weights: bool = False, attn_mask=None,
                key_padding_mask=None):
        if key is not query or value is not query:
            raise ValueError("LinearSelfAttention is self-attention only: key and value must "
                             "be the query tensor")
        if need_weights or key_padding_mask is not None:
            raise ValueError("LinearSelfAttention returns no attention weights and takes no "
                             "key_padding_mask")
        x = query if self.batch_first else query.transpose(0, 1)
        b, n, dim = x.shape
        qkv = self.in_proj(x).view(b, n, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        o = self.out_proj(o.transpose(1, 2).reshape(b, n, dim))
        return (o if self.batch_first else o.transpose(0, 1)), None


def split_self_attention(root: nn.Module) -> int:
    """Replace every ``nn.MultiheadAttention`` under ``root`` by a ``LinearSelfAttention``
    (in place; only where the module is used as self-attention: the ViT blocks). Returns
    how many."""
    targets = [(parent, name, child) for parent in root.modules()
               for name, child in parent.named_children()
               if isinstance(child, nn.MultiheadAttention)]
    for parent, name, child in targets:
        setattr(parent, name, LinearSelfAttention(child))
    return len(targets)


def count_linears(module: nn.Module) -> int:
    """``nn.Linear`` modules (exact type) under ``module``: what ``linears_to_int8`` swaps."""
    return sum(1 for m in module.modules() if type(m) is nn.Linear)


def count_int8_linears(module: nn.Module) -> int:
    """Dynamic int8 linears under ``module``."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return sum(1 for m in module.modules() if isinstance(m, DynamicLinear))


__all__ = ["linears_to_int8", "split_self_attention", "LinearSelfAttention", "count_linears",
           "count_int8_linears", "quantized_engine"]
