"""Depth decoding (REP 118) and every bad input's clear error (core/depth.py)."""
from types import SimpleNamespace

import numpy as np
import pytest

from ovseg_ros.core import image_codec as codec
from ovseg_ros.core.depth import (DepthError, Intrinsics, check_registered, decode_depth,
                                  depth_frame)
from ovseg_ros.testing import rgbd_scene as S


def info(p=None, k=None, d=(0.0,) * 5, model="plumb_bob", w=S.WIDTH, h=S.HEIGHT):
    k = list(S.camera_k().reshape(-1)) if k is None else k
    p = [S.FX, 0, S.CX, 0, 0, S.FY, S.CY, 0, 0, 0, 1, 0] if p is None else p
    return SimpleNamespace(k=k, p=p, d=list(d), distortion_model=model, width=w, height=h,
                           binning_x=0, binning_y=0,
                           roi=SimpleNamespace(width=0, height=0))


def payload(arr, enc):
    step, data = codec.encode(arr, enc)
    return dict(encoding=enc, height=arr.shape[0], width=arr.shape[1], step=step, data=data)


def frame(arr, enc, **kw):
    args = dict(frame_id="cam", stamp=1, colour_size=(S.HEIGHT, S.WIDTH),
                colour_frame_id="cam", camera_info=info())
    args.update(kw)
    return depth_frame(**payload(arr, enc), **args)


def test_16uc1_and_32fc1_give_the_same_metres():
    _, mm, _, _, _ = S.render(0)
    a = frame(mm, "16UC1")
    b = frame(S.depth_32f(mm), "32FC1")
    np.testing.assert_array_equal(a.metres, b.metres)
    assert a.metres.dtype == np.float32 and a.stats.valid == mm.size
    assert a.intrinsics.source == "P" and a.intrinsics.fx == S.FX


def test_invalid_values_are_masked_and_counted():
    m = np.full((4, 5), 2.0, np.float32)
    m[0, 0], m[0, 1], m[0, 2], m[0, 3], m[0, 4], m[1, 0] = np.nan, np.inf, -np.inf, -1, 500, 0
    out, st = decode_depth(**payload(m, "32FC1"))
    assert np.isnan(out[0]).all() and np.isnan(out[1, 0]) and (out[1:, 1:] == 2.0).all()
    assert (st.no_measurement, st.out_of_range, st.negative, st.absurd, st.valid) == \
        (2, 2, 1, 1, 14)
    mm = np.full((3, 3), 1500, np.uint16)
    mm[1, 1] = 0
    out, st = decode_depth(**payload(mm, "16UC1"))
    assert np.isnan(out[1, 1]) and st.no_measurement == 1 and out[0, 0] == np.float32(1.5)


@pytest.mark.parametrize("case,code,words", [
    ("colour", "encoding", "'rgb8'"),
    ("metres_in_16u", "units", "look like metres"),
    ("mm_in_32f", "units", "look like millimetres"),
    ("all_zero", "no_valid", "no valid measurement"),
    ("all_nan", "no_valid", "no valid measurement"),
    ("malformed", "malformed", "step"),
])
def test_bad_depth_images(case, code, words):
    if case == "colour":
        kw = payload(np.zeros((4, 4, 3), np.uint8), "rgb8")
    elif case == "metres_in_16u":
        kw = payload(np.full((4, 4), 2, np.uint16), "16UC1")
    elif case == "mm_in_32f":
        kw = payload(np.full((4, 4), 2000.0, np.float32), "32FC1")
    elif case == "all_zero":
        kw = payload(np.zeros((4, 4), np.uint16), "16UC1")
    elif case == "all_nan":
        kw = payload(np.full((4, 4), np.nan, np.float32), "32FC1")
    else:
        kw = payload(np.ones((4, 4), np.uint16), "16UC1")
        kw["step"] = 4
    with pytest.raises(DepthError, match=words) as e:
        decode_depth(**kw)
    assert e.value.code == code


def test_not_registered_is_refused_with_the_sizes_and_frames():
    with pytest.raises(DepthError, match=r"depth image is 320x240 but the colour image is "
                       r"640x480.*aligned") as e:
        check_registered((240, 320), "cam", (480, 640), "cam")
    assert e.value.code == "size"
    with pytest.raises(DepthError, match="'depth_optical'.*'color_optical'") as e:
        check_registered((480, 640), "depth_optical", (480, 640), "color_optical")
    assert e.value.code == "frame_id"
    _, mm, _, _, _ = S.render(0)
    with pytest.raises(DepthError) as e:
        frame(mm, "16UC1", frame_id="other")
    assert e.value.code == "frame_id"


def test_intrinsics_from_p_then_k_and_their_errors():
    p = [600.0, 0, 300, 0, 0, 610, 200, 0, 0, 0, 1, 0]
    i = Intrinsics.from_camera_info(info(p=p))
    assert (i.fx, i.fy, i.cx, i.cy, i.source) == (600, 610, 300, 200, "P")
    i = Intrinsics.from_camera_info(info(p=[0.0] * 12))
    assert (i.fx, i.cx, i.source) == (S.FX, S.CX, "K")
    for bad, words in (((0.0,) * 12, "all zeros"), ((np.nan,) * 12, "NaN")):
        with pytest.raises(DepthError, match=words) as e:
            Intrinsics.from_camera_info(info(p=list(bad), k=[bad[0]] * 9))
        assert e.value.code == "intrinsics"
    with pytest.raises(DepthError, match="focal") as e:
        Intrinsics.from_camera_info(info(p=[-5.0, 0, 1, 0, 0, 5, 1, 0, 0, 0, 1, 0]))
    with pytest.raises(DepthError, match="no camera_info") as e:
        Intrinsics.from_camera_info(None)
    assert e.value.code == "camera_info"
    _, mm, _, _, _ = S.render(0)
    with pytest.raises(DepthError, match="camera_info is for 320x240") as e:
        frame(mm, "16UC1", camera_info=info(w=320, h=240))
    assert e.value.code == "camera_info"


def test_distortion_needs_rectified_images():
    d = (0.1, -0.05, 0.0, 0.0, 0.01)
    with pytest.raises(DepthError, match="rectified") as e:
        Intrinsics.from_camera_info(info(d=d))
    assert e.value.code == "distortion"
    assert Intrinsics.from_camera_info(info(d=d), rectified=True).fx == S.FX
    # all-zero coefficients mean no distortion whatever the model's name
    assert Intrinsics.from_camera_info(info(model="rational_polynomial", d=(0.0,) * 8)).fx


def test_scaled_intrinsics_keep_pixel_centres():
    i = Intrinsics(S.FX, S.FY, S.CX, S.CY, S.WIDTH, S.HEIGHT)
    h = i.scaled_to(320, 240)
    assert (h.fx, h.cx, h.cy) == (S.FX / 2, 159.5, 119.5)


def test_the_units_check_of_a_full_frame_uses_its_grid_and_sparse_frames_all_pixels():
    from ovseg_ros.core.depth import depth_to_metres

    metres_as_mm = np.full((480, 640), 3, np.uint16)          # 3 "mm": metres in 16UC1
    with pytest.raises(DepthError, match="median of 3 ") as e:
        depth_to_metres(metres_as_mm, "16UC1")
    assert e.value.code == "units"
    sparse = np.zeros((480, 640), np.uint16)                   # valid only off the grid
    sparse[1::4, 1::4] = 1500
    sparse[1::8, 1::8] = 5                                     # a quarter of them absurd
    m, st = depth_to_metres(sparse, "16UC1")
    assert st.valid == 120 * 160 and np.nanmax(m) == np.float32(1.5)
    mm_as_m = np.full((480, 640), 1500.0, np.float32)          # millimetres in 32FC1
    mm_as_m[::4, ::4] = np.nan
    with pytest.raises(DepthError, match="median of 1500") as e:
        depth_to_metres(mm_as_m, "32FC1")
    assert e.value.code == "units"
