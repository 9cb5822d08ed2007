"""The bounded-resize rules (ovseg_ros/core/resize_bounds.py), torch-free: sizes, limits and
the notes a clamp leaves, for elongated, tiny and huge frames."""
from __future__ import annotations

import pytest

from ovseg_ros.core.preprocess import short_side_size, window_grid
from ovseg_ros.core.resize_bounds import capped, fit_long_side, shortest_edge

HOSTILE = [(3, 1000), (1000, 3), (2, 4000), (4000, 2), (1, 1), (2, 2), (2160, 3840),
           (1, 16384), (16384, 1)]


def _windows(crop: int, stride: int):
    def count(h: int, w: int) -> int:
        rows, cols = window_grid(h, w, crop, stride)
        return rows * cols
    return count


@pytest.mark.parametrize("shape", HOSTILE + [(480, 640)])
@pytest.mark.parametrize("short,max_size", [(128, 256), (800, 1333), (640, 2560)])
def test_shortest_edge_never_below_one_pixel_and_within_the_cap(shape, short, max_size):
    h, w = shape
    b = shortest_edge(h, w, short, max_size, setting="fcclip.max_size")
    assert min(b.size) >= 1
    assert max(b.size) <= max_size
    # the pixels the model sees are bounded by the settings, whatever the aspect ratio
    assert b.size[0] * b.size[1] <= min(short, max_size) * max_size
    capped_long = short * max(shape) / min(shape) > max_size
    short_px = max_size * min(shape) / max(shape) if capped_long else short
    assert bool(b.notes) == (int(short_px + 0.5) < 1)   # noted only when raised to 1 px


def test_shortest_edge_note_names_setting_limit_and_shapes():
    b = shortest_edge(2, 4000, 128, 256, setting="fcclip.max_size")
    assert b.size == (1, 256)
    (note,) = b.notes
    assert note.startswith("clamped by fcclip.max_size=256:")
    assert "2x4000" in note and "1x256" in note
    # the reference's own long-side cap on an ordinary wide frame is not a clamp
    assert shortest_edge(720, 1280, 800, 1333, setting="x").notes == ()
    assert shortest_edge(720, 1280, 800, 1333, setting="x").size == (750, 1333)


@pytest.mark.parametrize("shape", HOSTILE + [(480, 640), (720, 1280)])
@pytest.mark.parametrize("short,crop,stride,limit", [(112, 112, 56, 8), (336, 336, 112, 8),
                                                     (0, 336, 112, 8), (336, 336, 112, 1)])
def test_window_cap_holds_for_every_shape(shape, short, crop, stride, limit):
    count = _windows(crop, stride)
    nominal = short_side_size(*shape, short)
    b = capped(shape, nominal, lambda h, w: count(h, w) <= limit, setting="proxyclip.max_windows",
               limit=limit, cost=count, unit="windows")
    assert count(*b.size) <= limit
    assert min(b.size) >= 1
    assert b.size[0] <= nominal[0] and b.size[1] <= nominal[1]
    if b.size == nominal:
        assert b.notes == ()
    else:
        # the largest size of that aspect that fits: one pixel more on the long side does not
        long_nom, short_nom = max(nominal), min(nominal)
        longer = max(b.size) + 1
        other = max(1, int(short_nom * longer / long_nom + 0.5))
        bigger = (other, longer) if nominal[1] >= nominal[0] else (longer, other)
        assert count(*bigger) > limit
        (note,) = b.notes
        assert note.startswith(f"clamped by proxyclip.max_windows={limit}:")
        assert f"{shape[0]}x{shape[1]} frame" in note


def test_elongated_frame_of_the_issue():
    # 3 x 1000 at the tiny preset: 112 x 37333, 666 windows, before the cap
    count = _windows(112, 56)
    nominal = short_side_size(3, 1000, 112)
    assert nominal == (112, 37333) and count(*nominal) == 666
    b = capped((3, 1000), nominal, lambda h, w: count(h, w) <= 8, setting="proxyclip.max_windows",
               limit=8, cost=count, unit="windows")
    assert b.size == (2, 504) and count(*b.size) == 8
    assert "(8 windows) instead of 112x37333 (666 windows)" in b.notes[0]


def test_fit_long_side_is_the_largest_fitting_size():
    fits = lambda h, w: h * w <= 1000   # noqa: E731
    size = fit_long_side((100, 400), fits)
    assert fits(*size)
    longer = fit_long_side((100, 400), lambda h, w: True)
    assert longer == (100, 400)
    h, w = size
    assert not fits(max(1, int(100 * (w + 1) / 400 + 0.5)), w + 1)


def test_fit_long_side_refuses_an_impossible_predicate():
    with pytest.raises(ValueError, match="no size"):
        fit_long_side((10, 20), lambda h, w: False)
