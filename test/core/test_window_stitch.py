"""The window-stitching operator (ovseg_ros/core/window_stitch.py) against the step-by-step
chain it replaces: bilinear upsampling per window, crop, sum of overlaps, division by the
count, bilinear resize to the input."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ovseg_ros.core.preprocess import centred_padding, sliding_windows
from ovseg_ros.core.window_stitch import Layout, StitchCache, WindowStitch, interpolation_matrix
from stitch_reference import step_chain


CASES = [
    # resized frame, crop, stride, patch, output size
    ((336, 448), 336, 224, 16, (480, 640)),       # the default preset at 640 x 480: 1 x 2
    ((448, 336), 336, 224, 16, (640, 480)),       # portrait: 2 x 1
    ((500, 700), 336, 224, 16, (720, 1000)),      # 2 x 3, last row/column shifted back
    ((96, 128), 64, 48, 8, (96, 128)),            # no resize
    ((50, 77), 224, 112, 16, (50, 77)),           # one window smaller than the crop, padded
    ((37, 53), 1000, 500, 14, (120, 160)),        # single window, odd sizes, upscaled
]


@pytest.mark.parametrize("resized,crop,stride,patch,size", CASES)
def test_operator_equals_the_step_chain(resized, crop, stride, patch, size):
    windows = sliding_windows(*resized, crop, stride)
    wh, ww = windows[0][1] - windows[0][0], windows[0][3] - windows[0][2]
    left, right, top, bottom = centred_padding(wh, ww, patch)
    padded = (wh + top + bottom, ww + left + right)
    grid = (padded[0] // patch, padded[1] // patch)
    gen = torch.Generator().manual_seed(sum(size))
    low = torch.randn((len(windows), 23) + grid, generator=gen)
    want = step_chain(low, padded, (top, left), windows, resized, size)
    op = WindowStitch(Layout(grid, padded, (top, left), tuple(windows), resized, size))
    got = op(op.block_matrix(low))
    assert got.shape == want.shape == (23,) + size
    # a few float32 ulps of the logits' magnitude, not more
    torch.testing.assert_close(got, want, rtol=0, atol=4e-6 * float(want.abs().max()))
    # chunks of synonyms give the same rows as one call
    blocks = op.block_matrix(low)
    torch.testing.assert_close(torch.cat([op(blocks[i:i + 5]) for i in range(0, 23, 5)]), got,
                               rtol=0, atol=1e-6 * float(want.abs().max()))


def test_scale_is_folded_in_and_matrices_are_the_interpolation_weights():
    m = interpolation_matrix(3, 7)
    assert m.shape == (7, 3)
    torch.testing.assert_close(m.sum(1), torch.ones(7))              # convex rows
    assert bool((m >= 0).all())
    x = torch.randn(1, 2, 3)
    torch.testing.assert_close(F.interpolate(x, size=7, mode="linear", align_corners=False),
                               (x @ m.t()))
    layout = Layout((4, 4), (32, 32), (0, 0), ((0, 32, 0, 32),), (32, 32), (40, 48))
    low = torch.randn(1, 3, 4, 4)
    one, hundred = WindowStitch(layout), WindowStitch(layout, scale=100.0)
    torch.testing.assert_close(hundred(hundred.block_matrix(low)),
                               100 * one(one.block_matrix(low)), rtol=1e-6, atol=1e-5)


def test_bad_layouts_are_refused():
    with pytest.raises(ValueError, match="full grid"):
        WindowStitch(Layout((2, 2), (16, 16), (0, 0), ((0, 16, 0, 16), (8, 24, 8, 24)),
                            (24, 24), (24, 24)))
    with pytest.raises(ValueError, match="cover"):
        WindowStitch(Layout((2, 2), (16, 16), (0, 0), ((0, 16, 0, 16),), (16, 40), (16, 40)))
    op = WindowStitch(Layout((2, 2), (16, 16), (0, 0), ((0, 16, 0, 16),), (16, 16), (16, 16)))
    with pytest.raises(ValueError, match="do not match"):
        op.block_matrix(torch.zeros(2, 3, 2, 2))


def test_cache_shares_operators_by_layout():
    cache = StitchCache(entries=2)
    a = Layout((2, 2), (16, 16), (0, 0), ((0, 16, 0, 16),), (16, 16), (20, 20))
    b = Layout((2, 2), (16, 16), (0, 0), ((0, 16, 0, 16),), (16, 16), (24, 24))
    op = cache.get(a, 100.0, "cpu")
    assert cache.get(a, 100.0, "cpu") is op
    assert cache.get(a, 50.0, "cpu") is not op
    cache.get(b, 100.0, "cpu")
    assert cache.get(a, 100.0, "cpu") is not op          # evicted: two entries only
