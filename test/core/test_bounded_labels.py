"""Labels from the candidates per tile (ovseg_ros/core/bounded_labels.py) against the argmax
over every synonym of the full operator (the path the engine took before): bit-identical
labels and maxima over several layouts, synonym counts, seeded cosines and ties."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ovseg_ros.core.bounded_labels import (bounded_argmax, confidence_from_max, first_max,
                                           tile_plan, tile_products_match)
from ovseg_ros.core.postprocess import SoftmaxArgmax
from ovseg_ros.core.preprocess import centred_padding, sliding_windows
from ovseg_ros.core.window_stitch import Layout, WindowStitch, interpolation_matrix
from ovseg_ros.testing.cosines import grid_cosines, unit_rows

LAYOUTS = [
    # resized frame, crop, stride, patch, output size
    ((336, 448), 336, 224, 16, (480, 640)),       # the default preset at 640 x 480: 1 x 2
    ((448, 336), 336, 224, 16, (640, 480)),       # portrait: 2 x 1
    ((500, 700), 336, 224, 16, (360, 500)),       # 2 x 3, last row/column shifted back
    ((50, 77), 224, 112, 16, (50, 77)),           # one window smaller than the crop, padded
    ((37, 53), 1000, 500, 14, (120, 160)),        # single window, odd sizes, upscaled
]


def make_stitch(resized, crop, stride, patch, size, scale=40.0):
    windows = sliding_windows(*resized, crop, stride)
    wh, ww = windows[0][1] - windows[0][0], windows[0][3] - windows[0][2]
    left, right, top, bottom = centred_padding(wh, ww, patch)
    padded = (wh + top + bottom, ww + left + right)
    grid = (padded[0] // patch, padded[1] // patch)
    return WindowStitch(Layout(grid, padded, (top, left), tuple(windows), resized, size), scale)


def synonym_classes(num_synonyms: int, gen: torch.Generator) -> torch.Tensor:
    """Classes of 1-3 synonyms, grouped (non-decreasing), as the vocabulary gives them."""
    per = torch.randint(1, 4, (num_synonyms,), generator=gen)
    return torch.repeat_interleave(torch.arange(num_synonyms), per)[:num_synonyms]


def cosines(kind: str, stitch: WindowStitch, num_synonyms: int, gen: torch.Generator):
    """S x (R gh) x (C gw) block matrices of seeded window cosines."""
    text = unit_rows(num_synonyms, 64, gen)
    return grid_cosines(kind, text, stitch.ay.shape[1], stitch.ax_t.shape[0], gen,
                        regions=5).contiguous()


def full_path(stitch, blocks, sc, chunk=7):
    """The argmax over every synonym: streamed softmax over the full operator's chunks."""
    acc = SoftmaxArgmax(sc, int(sc.max()) + 1)
    best = None
    for s0 in range(0, blocks.shape[0], chunk):
        z = stitch(blocks[s0:s0 + chunk])
        m = z.amax(0)
        best = m if best is None else torch.maximum(best, m)
        acc.update(z)
    labels, conf = acc.result()
    return labels, conf, best


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind,num_synonyms", [("scene", 1), ("scene", 40), ("random", 40),
                                               ("scene", 300)])
def test_labels_and_maxima_are_bit_identical_to_the_full_argmax(layout, kind, num_synonyms):
    stitch = make_stitch(*layout)
    gen = torch.Generator().manual_seed(sum(layout[4]) + num_synonyms + len(kind))
    blocks = cosines(kind, stitch, num_synonyms, gen)
    sc = synonym_classes(num_synonyms, gen)
    want, conf, best = full_path(stitch, blocks, sc)
    want13, _, best13 = full_path(stitch, blocks, sc, chunk=13)     # the engine's chunks
    assert torch.equal(want13, want) and torch.equal(best13, best)
    for tile in (24, 32):
        if not tile_plan(stitch, tile).exact:
            # the products' kernels for these shapes sum in another order: refused, so the
            # engine takes the full argmax (the default geometry is exact: test below)
            with pytest.raises(ValueError, match="bit for bit"):
                bounded_argmax(stitch, blocks, sc, tile)
            continue
        got = bounded_argmax(stitch, blocks, sc, tile)
        assert torch.equal(got.labels, want)
        assert torch.equal(got.best, best)
        assert got.candidates <= got.pairs
        if kind == "scene" and num_synonyms == 300:
            assert got.candidates < 0.5 * got.pairs      # the bounds do prune
        torch.testing.assert_close(confidence_from_max(stitch, blocks, got.best, 11), conf,
                                   rtol=1e-5, atol=0)


def test_ties_take_the_first_synonym_like_the_full_argmax():
    stitch = make_stitch(*LAYOUTS[0])
    gen = torch.Generator().manual_seed(3)
    base = cosines("scene", stitch, 30, gen)
    # exact copies of synonyms 4 and 9 later on, synonym 0 copied over synonym 1 (its class
    # neighbour), and a constant synonym everywhere equal to a constant copy
    blocks = torch.cat([base, base[4:5], base[9:10], torch.full_like(base[:2], 0.9)])
    blocks[1] = blocks[0]
    sc = torch.arange(blocks.shape[0])
    want, _, best = full_path(stitch, blocks, sc, chunk=5)
    got = bounded_argmax(stitch, blocks, sc, 32)
    assert torch.equal(got.labels, want)
    assert torch.equal(got.best, best)
    assert int((want == 32).sum()) > 0 and int((want == 33).sum()) == 0   # the earlier copy
    assert int((want == 1).sum()) == 0 and int((want == 31).sum()) == 0


def test_negative_weights_are_bounded_too():
    """Bicubic weights (some negative) in place of the bilinear ones: the bound holds."""
    stitch = make_stitch(*LAYOUTS[0])
    rows, cols = stitch.ay.shape[1], stitch.ax_t.shape[0]
    h, w = stitch.layout.size

    def cubic(n_in, n_out):
        eye = torch.eye(n_in)[None, :, :, None]
        return F.interpolate(eye, size=(n_out, 1), mode="bicubic",
                             align_corners=False)[0, :, :, 0].t().contiguous()

    stitch.ay = 40.0 * cubic(rows, h)
    stitch.ax_t = cubic(cols, w).t().contiguous()
    stitch.plans.clear()
    assert bool((stitch.ay < 0).any())
    gen = torch.Generator().manual_seed(5)
    blocks = cosines("scene", stitch, 60, gen)
    sc = synonym_classes(60, gen)
    want, _, best = full_path(stitch, blocks, sc)
    got = bounded_argmax(stitch, blocks, sc, 32)
    assert torch.equal(got.labels, want)
    assert torch.equal(got.best, best)


def test_first_max_equals_torch_max_on_ties():
    z = torch.tensor([[1.0, 2.0, 3.0], [1.0, 5.0, 3.0], [0.0, 5.0, 3.0]])
    best, idx = first_max(z)
    want = z.max(0)
    assert torch.equal(best, want.values) and torch.equal(idx, want.indices)
    assert idx.tolist() == [0, 1, 0]


def test_plan_is_cached_and_the_default_geometry_is_exact():
    """The default preset's geometry at the default tile gives the full operator's values
    on this machine (else the engine would take the full argmax)."""
    stitch = make_stitch(*LAYOUTS[0])
    assert tile_plan(stitch, 32) is tile_plan(stitch, 32)
    plan = tile_plan(stitch, 32)
    covered = torch.zeros(stitch.layout.size, dtype=torch.int32)
    for t in plan.tiles:
        covered[t.ys, t.xs] += 1
        # the support holds every non-zero weight of the tile
        assert int((stitch.ay[t.ys] != 0).sum()) == int((t.ay != 0).sum())
    assert bool((covered == 1).all())
    assert plan.exact and tile_products_match(stitch, plan)
    assert interpolation_matrix(3, 3).equal(torch.eye(3))


def test_bad_input_is_refused():
    stitch = make_stitch(*LAYOUTS[3])
    blocks = cosines("scene", stitch, 4, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="3 entries for 4 synonyms"):
        bounded_argmax(stitch, blocks, torch.tensor([0, 0, 1]))
    with pytest.raises(ValueError, match="tile must be >= 1"):
        tile_plan(stitch, 0)
