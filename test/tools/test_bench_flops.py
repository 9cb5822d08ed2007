"""The bench's FLOP count includes the CPU attention that FlopCounterMode alone misses."""
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ovseg_ros.tools.bench.flops import count_call_flops


def test_cpu_sdpa_is_counted():
    b, h, n, d = 2, 3, 40, 16
    q = torch.randn(b, h, n, d)
    expected = 4 * b * h * n * n * d               # q k^T and p v, 2 FLOPs per MAC
    assert count_call_flops(lambda: F.scaled_dot_product_attention(q, q, q)) == expected


def test_multihead_attention_fast_path_is_counted_and_restored():
    """nn.MultiheadAttention in inference runs one fused op FlopCounterMode has no
    formula for; counted, its projections and attention are all there."""
    n, c, heads = 30, 32, 4
    mha = nn.MultiheadAttention(c, heads, batch_first=True).eval()
    x = torch.randn(1, n, c)
    with torch.inference_mode():
        with FlopCounterMode(display=False) as plain:
            mha(x, x, x, need_weights=False)
        counted = count_call_flops(lambda: mha(x, x, x, need_weights=False))
    projections = 2 * n * c * 3 * c + 2 * n * c * c
    assert plain.get_total_flops() < projections        # what the bench used to report
    assert counted == projections + 4 * n * n * c
    assert torch.backends.mha.get_fastpath_enabled()
