"""The exact attention ways scripts/measure_attention.py times equal SDPA to rounding."""
import pytest
import torch
import torch.nn.functional as F

from ovseg_ros.tools.bench.attention_ways import (block_rows, blocked_attention,
                                                  explicit_attention, sdpa_widened)


def _qkv(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    # scores spread over about +-10, as in DINO's attention: a wrong softmax shows
    return [(torch.randn(shape, generator=g) * 1.5).to(dtype) for _ in range(3)]


@pytest.mark.parametrize("length", [1, 37, 253])
@pytest.mark.parametrize("block,group", [(None, 1), (16, 1), (16, 3), (48, 6)])
def test_blocked_equals_sdpa_fp32(length, block, group):
    """fp32: equal to SDPA to fp32 rounding, for lengths that are not multiples of the
    block and groups that do not divide the slices."""
    q, k, v = _qkv((2, 3, length, 64), torch.float32)
    ref = F.scaled_dot_product_attention(q, k, v)
    out = blocked_attention(q, k, v, block=block, group=group)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=2e-6)


def test_blocked_other_head_size_and_scale():
    """A head size whose 1/sqrt(D) is not a power of two, an explicit scale, and a value
    head size other than the key's."""
    q, k, _ = _qkv((1, 2, 45, 48), torch.float32)
    v = torch.randn(1, 2, 45, 24)
    for scale in (None, 0.3):
        ref = F.scaled_dot_product_attention(q, k, v, scale=scale)
        torch.testing.assert_close(blocked_attention(q, k, v, scale=scale, block=16), ref,
                                   rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("length", [37, 253])
def test_bf16_ways_as_close_as_bf16_sdpa(length):
    """bf16 inputs: each exact way stays within the bf16 output rounding of the fp32
    result on the same inputs, as SDPA's own bf16 kernel does; explicit bf16 (scores
    rounded to bf16) is the one that is not exact."""
    q, k, v = _qkv((2, 3, length, 64), torch.bfloat16)
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    # bf16 keeps 8 significant bits: one output rounding is <= 2^-9 relative, the bf16
    # probabilities (product with v) add about as much again
    bound = 2 ** -7 * ref.abs().max().item()

    def err(out):
        assert out.dtype == torch.bfloat16 and out.shape == ref.shape
        return (out.float() - ref).abs().max().item()

    assert err(F.scaled_dot_product_attention(q, k, v)) <= bound
    assert err(blocked_attention(q, k, v, block=16, group=4)) <= bound
    pv32 = err(blocked_attention(q, k, v, block=16, pv_dtype=torch.float32))
    assert pv32 <= 2 ** -8 * ref.abs().max().item()         # only the output rounding
    assert err(sdpa_widened(q, k, v)) <= 2 ** -8 * ref.abs().max().item()
    assert err(explicit_attention(q, k, v)) > pv32


def test_block_rows_fits_the_budget():
    assert block_rows(1765) == 32                 # 32 x 1765 fp32 = 226 KiB <= 256 KiB
    assert block_rows(1765, slices=24, budget=4 << 20) == 16
    assert block_rows(100_000) == 16              # never below one register tile
    assert block_rows(253, budget=1 << 20) % 16 == 0


def test_bad_shapes_name_them():
    q = torch.zeros(1, 2, 5, 8)
    with pytest.raises(ValueError, match=r"k \(1, 2, 6, 4\)"):
        blocked_attention(q, torch.zeros(1, 2, 6, 4), torch.zeros(1, 2, 6, 4))
    with pytest.raises(ValueError, match="one length"):
        sdpa_widened(q, torch.zeros(1, 2, 6, 8), torch.zeros(1, 2, 7, 8))
