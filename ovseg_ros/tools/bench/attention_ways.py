"""Exact attention computed other ways than the CPU flash kernel, for
``scripts/measure_attention.py``.

``F.scaled_dot_product_attention`` on the CPU runs a flash kernel (key/value blocks
streamed through an online softmax, one OpenMP region per call). These are the exact
alternatives measured against it (docs/benchmarks/cpu.md, "Attention on the CPU"); none
beat it on the measured AMD EPYC (AVX512-BF16, no AMX), so the trunks keep SDPA and
nothing here runs in the engines. They stay as the measured record and as the reference
form for a future kernel: a test holds them equal to SDPA.

- ``blocked_attention``: one group of (batch x head) slices and one block of queries at
  a time: the block's full score rows (sized to stay in the L2 cache) from one product,
  the softmax in place, a second product with v. A full row per block needs no online
  rescaling. Scores and softmax are fp32 whatever the input dtype (bf16 inputs are
  widened exactly; torch has no bf16 x bf16 -> fp32 matmul on the CPU, so the score
  product cannot use the bf16 units without rounding the scores to bf16); the product
  with v runs in ``pv_dtype`` (default v's dtype: bf16 probabilities for bf16 inputs, as
  the flash kernel does).
- ``sdpa_widened``: SDPA on inputs widened to fp32, output rounded back (bf16 inputs).
- ``explicit_attention``: q k^T over all heads, softmax, @ v in the input dtype: for bf16
  the scores are rounded to bf16 (not exact; for the record).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

#: bytes of one product's fp32 score rows; a block of queries is sized to fit (one core's
#: L2 cache on the measured AMD EPYC is 1 MiB: the scores, the query block and part of k, v)
SCORE_BLOCK_BYTES = 256 * 1024
#: query blocks are multiples of this (the matmul kernels' register tiles)
BLOCK_MULTIPLE = 16


def block_rows(seq_len: int, budget: int = SCORE_BLOCK_BYTES, slices: int = 1) -> int:
    """Queries per block so that ``slices x rows x seq_len`` fp32 scores take at most
    ``budget`` bytes (at least BLOCK_MULTIPLE rows)."""
    rows = budget // (4 * max(1, seq_len) * max(1, slices))
    return max(BLOCK_MULTIPLE, rows // BLOCK_MULTIPLE * BLOCK_MULTIPLE)


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dim() < 3 or q.shape[:-2] != k.shape[:-2] or k.shape[:-1] != v.shape[:-1] \
            or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"attention: q {tuple(q.shape)}, k {tuple(k.shape)}, v "
                         f"{tuple(v.shape)} must be ... x L x D with equal leading shapes, q "
                         "and k of one head size, k and v of one length")


def blocked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      scale: Optional[float] = None, block: Optional[int] = None,
                      pv_dtype: Optional[torch.dtype] = None, group: int = 1) -> torch.Tensor:
    """softmax(q k^T * scale) v for q, k, v of shape ... x L x D (no mask), in q's dtype.

    ``group`` (batch x head) slices go through each product together (fewer, larger
    calls); ``block`` queries per product (default: ``block_rows`` for the group).
    """
    _check(q, k, v)
    lead = q.shape[:-2]
    lq, d = q.shape[-2:]
    lk, dv = v.shape[-2:]
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    pv_dtype = v.dtype if pv_dtype is None else pv_dtype
    # the scale goes on q once: a power of two for head sizes 16, 64, 256 (exact),
    # otherwise one fp32 rounding of q
    qs = q.reshape(-1, lq, d).float() * scale
    kt = k.reshape(-1, lk, d).float().transpose(1, 2)
    vv = v.reshape(-1, lk, dv).to(pv_dtype)
    n = qs.shape[0]
    group = min(max(1, int(group)), n)
    block = block_rows(lk, slices=group) if block is None else int(block)
    out = torch.empty(n, lq, dv, dtype=q.dtype, device=q.device)
    for g in range(0, n, group):
        h = slice(g, min(g + group, n))
        for s in range(0, lq, block):
            e = min(s + block, lq)
            sc = torch.bmm(qs[h, s:e], kt[h])                       # fp32 scores
            torch.ops.aten._softmax.out(sc, -1, False, out=sc)      # in place, row by row
            out[h, s:e] = torch.bmm(sc.to(pv_dtype), vv[h])
    return out.reshape(*lead, lq, dv)


def sdpa_widened(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SDPA on q, k, v widened to fp32 (exact for bf16), the output in q's dtype."""
    _check(q, k, v)
    return F.scaled_dot_product_attention(q.float(), k.float(), v.float()).to(q.dtype)


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v in the input dtype, all heads at once (bf16: scores
    rounded to bf16, so not exact)."""
    _check(q, k, v)
    s = (q * (q.shape[-1] ** -0.5)) @ k.transpose(-1, -2)
    return s.softmax(-1) @ v


__all__ = ["blocked_attention", "sdpa_widened", "explicit_attention", "block_rows",
           "SCORE_BLOCK_BYTES", "BLOCK_MULTIPLE"]
