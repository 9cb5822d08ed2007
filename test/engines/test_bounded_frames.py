"""Every engine's work per frame is bounded whatever the input's shape (tiny presets).

Measured in counts, not time: the pixels each frame sends through the image model
(a forward pre-hook on the real module the backend runs), the sliding windows, and the
largest tensor any torch operation allocates while the frame is segmented (a dispatch
mode that sees every op's outputs). Elongated (3x1000, 1000x3, 2x4000, 4000x2) and tiny
(1x1, 2x2) frames stay within 4x a 640x480 frame's model input and largest tensor; a 4K
frame's and a 1x16384 frame's model input is bounded likewise and their largest tensor
stays under the ceiling stated in docs/node.md; a longer side is refused. Every output
is at the input's size, the published products build for every shape, and a clamped
frame batched with an ordinary one gives what it gives alone.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ovseg_ros import InputError, InputLimitError, load_segmenter
from ovseg_ros.core.products import build_products
from ovseg_ros.presets import TINY_FCCLIP, TINY_OVSEG, TINY_PROXYCLIP

TINY_MAFTPLUS = {"engine": "maftplus", "random_init": True,
                 "maftplus.clip_model": "ovseg-tiny-ConvNeXt", "maftplus.short_side": 128,
                 "maftplus.max_size": 256, "maftplus.num_queries": 20}
PRESETS = {"proxyclip": TINY_PROXYCLIP, "fcclip": TINY_FCCLIP, "maftplus": TINY_MAFTPLUS,
           "ovseg": TINY_OVSEG}
ELONGATED = [(3, 1000), (1000, 3), (2, 4000), (4000, 2)]
TINY = [(1, 1), (2, 2)]
BASE = (480, 640)
UHD = (2160, 3840)
#: largest single tensor a 4K frame may allocate (docs/node.md, "Bounded work per frame"):
#: post-processing at the input's size works on a few H x W float32 planes at a time (the
#: mask engines' class volume is one plane per class: 3 here)
UHD_TENSOR_CEILING = 4 * UHD[0] * UHD[1] * 4


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor (bytes) that any torch operation returns."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel() * t.element_size())
        return out


def _frame(shape):
    return np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)


@pytest.fixture(scope="module", params=sorted(PRESETS))
def engine(request, tmp_path_factory):
    cfg = dict(PRESETS[request.param], precision="fp32", num_threads=1,
               vocabulary=["person", "floor", "wall"],
               text_cache_dir=str(tmp_path_factory.mktemp("text")))
    seg = load_segmenter(cfg)
    seen = []
    # the pixels of every input the image model (the module the backend runs) receives
    seg.engine.image_model.register_forward_pre_hook(
        lambda _m, args: seen.append(int(args[0].shape[0] * args[0].shape[-2] *
                                         args[0].shape[-1])))
    return request.param, seg, seen


def _measure(seg, seen, shape):
    seen.clear()
    mode = LargestTensor()
    with mode:
        pred = seg.predict(_frame(shape))
    return pred, sum(seen), mode.largest


@pytest.fixture(scope="module")
def baseline(engine):
    _, seg, seen = engine
    pred, pixels, largest = _measure(seg, seen, BASE)
    assert pixels > 0 and largest > 0 and not pred.clamped
    return pixels, largest


@pytest.mark.parametrize("shape", ELONGATED + TINY)
def test_hostile_shapes_cost_at_most_4x_a_vga_frame(engine, baseline, shape):
    name, seg, seen = engine
    pred, pixels, largest = _measure(seg, seen, shape)
    assert pred.semantic.shape == shape and pred.panoptic.shape == shape
    assert pred.confidence.shape == shape
    assert pixels <= 4 * baseline[0], (name, shape, pixels, baseline[0])
    assert largest <= 4 * baseline[1], (name, shape, largest, baseline[1])


@pytest.mark.parametrize("shape", [UHD, (1, 16384), (16384, 1)])
def test_huge_frames_are_bounded_too(engine, baseline, shape):
    # 4K, and the longest sides max_input_side accepts
    name, seg, seen = engine
    pred, pixels, largest = _measure(seg, seen, shape)
    assert pred.semantic.shape == shape
    assert pixels <= 4 * baseline[0], (name, pixels, baseline[0])
    assert largest <= UHD_TENSOR_CEILING, (name, largest)


@pytest.mark.parametrize("shape", ELONGATED)
def test_elongated_frames_say_when_clamped(engine, shape):
    name, seg, _ = engine
    pred = seg.predict(_frame(shape))
    if name == "proxyclip":
        # 112 x 37333 (666 windows) or more before the cap
        assert pred.clamped
        (note,) = pred.notes
        assert note.startswith("clamped by proxyclip.max_windows=8:")
        assert f"{shape[0]}x{shape[1]} frame" in note
        windows = seg.engine.window_layout(*shape)[1]
        assert len(windows) <= seg.config["proxyclip.max_windows"]
    elif max(shape) / min(shape) > 1000:
        # the long-side cap rounds the short side to 0 px; it is raised to 1 and noted
        assert pred.clamped
        assert pred.notes[0].startswith(f"clamped by {name}.max_size=256:")
    else:
        assert pred.notes == ()


@pytest.mark.parametrize("shape", ELONGATED + TINY)
def test_products_build_at_every_shape(engine, shape):
    _, seg, _ = engine
    rgb = _frame(shape)
    pred = seg.predict(rgb)
    products = build_products(pred, rgb, pred.vocabulary, overlay_alpha=0.5,
                              random_weights=True)
    assert products.semantic.shape == shape and products.colored.shape == (*shape, 3)
    assert products.confidence.shape == shape


def test_refusal_names_shape_setting_and_limit(engine):
    _, seg, _ = engine
    limited = seg.config.replace(max_input_pixels=1000)
    seg_config, seg.config = seg.config, limited
    try:
        with pytest.raises(InputLimitError) as info:
            seg.predict(_frame((2, 4000)))
    finally:
        seg.config = seg_config
    err = info.value
    assert isinstance(err, InputError)
    assert err.shape == (2, 4000) and err.setting == "max_input_pixels"
    assert err.limit == 1000 and err.value == 8000
    assert str(err) == ("image 4000x2 (height 2, width 4000) has 8000 pixels, above "
                        "max_input_pixels=1000")


def test_a_side_above_max_input_side_is_refused(engine):
    _, seg, _ = engine
    with pytest.raises(InputLimitError) as info:
        seg.predict_batch([_frame((2, 2)), _frame((1, 16385))])
    err = info.value
    assert err.shape == (1, 16385) and err.setting == "max_input_side"
    assert err.limit == 16384 and err.value == 16385
    assert "above max_input_side=16384" in str(err) and "16385x1" in str(err)


def test_a_clamped_frame_in_a_batch_equals_it_alone(engine):
    # the node batches the cameras' frames: a clamped frame next to an ordinary one
    _, seg, _ = engine
    frames = [_frame((60, 80)), _frame((3, 1000))]
    batch = seg.predict_batch(frames)
    for rgb, got in zip(frames, batch):
        alone = seg.predict(rgb)
        np.testing.assert_array_equal(got.semantic, alone.semantic)
        assert got.notes == alone.notes
    assert not batch[0].notes
    assert bool(batch[1].notes) == (seg.config["engine"] == "proxyclip")
