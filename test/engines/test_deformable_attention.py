"""The grid_sample form of multi-scale deformable attention equals a plain loop
implementation of bilinear sampling (pixel centres at (i + 0.5) / size, zero
outside the map), and the gather form (the eager path) and the reference-order form
(the reference code's summation order) equal the grid_sample form."""
import math

import pytest
import torch

from ovseg_ros.models.deformable_attention import (MSDeformAttn, ms_deform_attn_gather,
                                                   ms_deform_attn_reference_order,
                                                   ms_deform_attn_sample, set_sampling)

torch.set_num_threads(1)


def _bilinear(img, x, y):
    """img D x H x W; (x, y) normalised in [0, 1] -> D: bilinear with zeros outside."""
    d, h, w = img.shape
    px, py = x * w - 0.5, y * h - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(d, dtype=torch.float64)
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            wx = 1 - abs(px - xi)
            wy = 1 - abs(py - yi)
            if 0 <= xi < w and 0 <= yi < h:
                out += wx * wy * img[:, yi, xi].double()
    return out


def _loop(value, shapes, locs, weights):
    n, _, m, d = value.shape
    _, lq, _, nl, npnt, _ = locs.shape
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    out = torch.zeros(n, lq, m * d, dtype=torch.float64)
    for b in range(n):
        for q in range(lq):
            for head in range(m):
                acc = torch.zeros(d, dtype=torch.float64)
                for lvl, (h, w) in enumerate(shapes):
                    img = value[b, starts[lvl]:starts[lvl + 1], head].t().reshape(d, h, w)
                    for p in range(npnt):
                        x, y = locs[b, q, head, lvl, p].tolist()
                        acc += weights[b, q, head, lvl, p].double() * _bilinear(img, x, y)
                out[b, q, head * d:(head + 1) * d] = acc
    return out


def test_grid_sample_form_matches_loop():
    g = torch.Generator().manual_seed(0)
    shapes = [(3, 5), (2, 2), (1, 3)]
    n, lq, m, d, p = 2, 4, 2, 3, 3
    s = sum(h * w for h, w in shapes)
    value = torch.randn(n, s, m, d, generator=g)
    # locations partly outside [0, 1] so zero padding is exercised
    locs = torch.rand(n, lq, m, len(shapes), p, 2, generator=g) * 1.4 - 0.2
    weights = torch.rand(n, lq, m, len(shapes), p, generator=g)
    weights = weights / weights.flatten(-2).sum(-1)[..., None, None]
    fast = ms_deform_attn_sample(value, shapes, locs, weights)
    ref = _loop(value, shapes, locs, weights)
    assert fast.shape == (n, lq, m * d)
    torch.testing.assert_close(fast.double(), ref, atol=1e-5, rtol=1e-5)


def _border_locations(shapes, n, lq, m, p, g):
    """Random locations in [-0.3, 1.3] plus, per level, taps exactly on pixel centres, on
    the map edges (0, 1), half a pixel outside, on the frame and far outside."""
    nl = len(shapes)
    locs = torch.rand(n, lq, m, nl, p, 2, generator=g) * 1.6 - 0.3
    for lvl, (h, w) in enumerate(shapes):
        special = []
        for size in (w, h):
            special.append(torch.tensor([0.0, 1.0, 0.5 / size, 1 - 0.5 / size, -0.5 / size,
                                         1 + 0.5 / size, -1.5 / size, 1 + 1.5 / size, -3.0,
                                         7.0, 0.25 / size, 1 - 0.25 / size]))
        k = min(special[0].numel(), lq)
        locs[0, :k, 0, lvl, 0, 0] = special[0][:k]
        locs[0, :k, 0, lvl, 0, 1] = special[1].flip(0)[:k]
    return locs


@pytest.mark.parametrize("shapes", [[(3, 5), (2, 2), (1, 3)], [(8, 11), (4, 6), (2, 3)],
                                    [(1, 1), (5, 1), (1, 7), (6, 4)]])
def test_gather_form_matches_grid_sample_and_loop(shapes):
    g = torch.Generator().manual_seed(len(shapes) + shapes[0][1])
    n, lq, m, d, p = 2, 12, 3, 4, 3
    s = sum(h * w for h, w in shapes)
    value = torch.randn(n, s, m, d, generator=g)
    locs = _border_locations(shapes, n, lq, m, p, g)
    weights = torch.rand(n, lq, m, len(shapes), p, generator=g)
    weights = weights / weights.flatten(-2).sum(-1)[..., None, None]
    fast = ms_deform_attn_gather(value, shapes, locs, weights)
    grid = ms_deform_attn_sample(value, shapes, locs, weights)
    assert fast.shape == grid.shape == (n, lq, m * d)
    torch.testing.assert_close(fast, grid, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast.double(), _loop(value, shapes, locs, weights),
                               atol=1e-5, rtol=1e-5)


def test_gather_form_at_pixel_decoder_size():
    """FC-CLIP's levels at 683x512 (strides 32, 16, 8), 8 heads of 32 channels, 4 points."""
    g = torch.Generator().manual_seed(3)
    shapes = [(16, 22), (32, 44), (64, 88)]
    s = sum(h * w for h, w in shapes)
    value = torch.randn(1, s, 8, 32, generator=g)
    locs = torch.rand(1, s, 8, 3, 4, 2, generator=g) * 1.2 - 0.1
    weights = torch.rand(1, s, 8, 3 * 4, generator=g).softmax(-1).view(1, s, 8, 3, 4)
    torch.testing.assert_close(ms_deform_attn_gather(value, shapes, locs, weights),
                               ms_deform_attn_sample(value, shapes, locs, weights),
                               atol=1e-5, rtol=1e-5)


class Wrapped(torch.nn.Module):
    """One deformable-attention block over fixed values and reference points (traceable)."""

    def __init__(self):
        super().__init__()
        self.attn = MSDeformAttn(d_model=8, n_levels=2, n_heads=2, n_points=2)
        self.register_buffer("src", torch.randn(1, 22, 8))
        self.register_buffer("ref", torch.rand(1, 22, 2, 2))

    def forward(self, query):
        return self.attn(query, self.ref, self.src, [(4, 4), (2, 3)])


def test_module_traces_the_grid_sample_form():
    """While tracing (ONNX export) the module records GridSample, in eager it gathers."""
    run = Wrapped().eval()
    with torch.no_grad():
        traced = torch.jit.trace(run, (torch.randn(1, 22, 8),))
        kinds = {node.kind() for node in traced.inlined_graph.nodes()}
        assert "aten::grid_sampler" in kinds and "aten::embedding_bag" not in kinds
        q = torch.randn(1, 22, 8)
        torch.testing.assert_close(traced(q), run(q), atol=1e-5, rtol=1e-5)


def test_module_offsets_are_in_pixels_of_each_level():
    """MSDeformAttn: location = reference + offset / (W_l, H_l); checked against the loop."""
    torch.manual_seed(1)
    attn = MSDeformAttn(d_model=8, n_levels=2, n_heads=2, n_points=2).eval()
    with torch.no_grad():
        attn.sampling_offsets.weight.normal_(0, 0.3)
        attn.attention_weights.weight.normal_(0, 0.3)
    shapes = [(4, 4), (2, 3)]
    s = sum(h * w for h, w in shapes)
    src = torch.randn(1, s, 8)
    query = torch.randn(1, 5, 8)
    ref = torch.rand(1, 5, 2, 2)
    with torch.no_grad():
        out = attn(query, ref, src, shapes)
        value = attn.value_proj(src).view(1, s, 2, 4)
        off = attn.sampling_offsets(query).view(1, 5, 2, 2, 2, 2)
        w = attn.attention_weights(query).view(1, 5, 2, 4).softmax(-1).view(1, 5, 2, 2, 2)
        locs = torch.empty_like(off)
        for lvl, (h, wd) in enumerate(shapes):
            locs[:, :, :, lvl, :, 0] = ref[:, :, None, lvl, None, 0] + off[:, :, :, lvl, :, 0] / wd
            locs[:, :, :, lvl, :, 1] = ref[:, :, None, lvl, None, 1] + off[:, :, :, lvl, :, 1] / h
        expected = attn.output_proj(_loop(value, shapes, locs, w).float())
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_bad_head_count_is_rejected():
    with pytest.raises(ValueError, match="divisible"):
        MSDeformAttn(d_model=10, n_heads=4)


@pytest.mark.parametrize("shapes", [[(3, 5), (2, 2), (1, 3)], [(16, 22), (32, 44), (64, 88)]])
def test_reference_order_form_matches_loop_and_sums_all_levels_at_once(shapes):
    g = torch.Generator().manual_seed(7)
    n, lq, m, d, p = 1, 40, 2, 4, 4
    s = sum(h * w for h, w in shapes)
    value = torch.randn(n, s, m, d, generator=g)
    locs = _border_locations(shapes, n, lq, m, p, g)
    weights = torch.rand(n, lq, m, len(shapes), p, generator=g)
    weights = weights / weights.flatten(-2).sum(-1)[..., None, None]
    got = ms_deform_attn_reference_order(value, shapes, locs, weights)
    torch.testing.assert_close(got.double(), _loop(value, shapes, locs, weights),
                               atol=1e-5, rtol=1e-5)
    # the order itself: every level's weighted samples in one reduction (what the
    # reference's pure-PyTorch path computes), bit for bit
    samples = torch.cat([
        torch.nn.functional.grid_sample(
            value.split([h * w for h, w in shapes], 1)[lvl][0].permute(1, 2, 0)
            .reshape(m, d, h, w), 2 * locs[0, :, :, lvl].transpose(0, 1) - 1,
            mode="bilinear", padding_mode="zeros", align_corners=False)
        for lvl, (h, w) in enumerate(shapes)], -1)                   # M x D x Lq x L*P
    one_sum = (samples * weights[0].permute(1, 0, 2, 3).reshape(m, 1, lq, -1)).sum(-1)
    assert torch.equal(got[0], one_sum.permute(2, 0, 1).reshape(lq, m * d))


def test_set_sampling_picks_the_form_in_eager_and_traced_runs():
    torch.manual_seed(2)
    run = Wrapped().eval()
    assert run.attn.sampling == "gather"
    q = torch.randn(1, 22, 8)
    with torch.no_grad():
        fast = run(q)
        set_sampling(run, "reference_order")
        assert run.attn.sampling == "reference_order"
        ordered = run(q)
        traced = torch.jit.trace(run, (q,))
        kinds = {node.kind() for node in traced.inlined_graph.nodes()}
    torch.testing.assert_close(ordered, fast, atol=1e-5, rtol=1e-5)
    # traced: grid_sample, levels stacked before the one sum
    assert {"aten::grid_sampler", "aten::stack"} <= kinds
    assert "aten::embedding_bag" not in kinds
    with pytest.raises(ValueError, match="must be one of"):
        set_sampling(run, "cuda_kernel")
