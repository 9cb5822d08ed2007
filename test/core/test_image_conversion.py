"""Image message <-> numpy conversion and its validation (no DDS, no model)."""
import re

import numpy as np
import pytest

pytest.importorskip("sensor_msgs.msg")
import cv2  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from ovseg_ros.ros.image_conv import (ImageConversionError, array_to_image,  # noqa: E402
                                      compressed_to_rgb, image_to_array, image_to_rgb,
                                      resize_to, rgb_to_compressed, rgb_to_image)

BIG = 1 << 24


def _photo(h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("enc", ["rgb8", "bgr8", "rgba8", "bgra8"])
def test_colour_encodings_round_trip(enc):
    rgb = _photo()
    msg = rgb_to_image(rgb, enc)
    assert msg.encoding == enc and msg.width == 64 and msg.height == 48
    np.testing.assert_array_equal(image_to_rgb(msg, BIG), rgb)


def test_mono8_becomes_grey_rgb():
    rgb = _photo()
    msg = rgb_to_image(rgb, "mono8")
    out = image_to_rgb(msg, BIG)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    assert out.shape == (48, 64, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)


def test_padded_rows_are_cropped():
    rgb = _photo(5, 7)
    padded = np.zeros((5, 32), np.uint8)           # step 32 > 7*3 = 21
    padded[:, :21] = rgb.reshape(5, 21)
    msg = Image(height=5, width=7, encoding="rgb8", step=32, data=padded.tobytes())
    np.testing.assert_array_equal(image_to_rgb(msg, BIG), rgb)


@pytest.mark.parametrize("kwargs,needle", [
    (dict(encoding="yuv422"), "unsupported image encoding 'yuv422'"),
    (dict(encoding="16UC1"), "unsupported image encoding"),
    (dict(width=0), "empty"),
    (dict(height=0), "empty"),
    (dict(step=10), "step 10 is smaller"),
    (dict(data=b"\x00" * 11), "data has 11 bytes but step*height"),
    (dict(width=5000, height=5000, step=15000), "above max_input_pixels"),
])
def test_bad_images_are_rejected_with_reason(kwargs, needle):
    good = dict(height=4, width=6, encoding="rgb8", step=18, data=b"\x01" * 72)
    good.update(kwargs)
    msg = Image(**good)
    with pytest.raises(ImageConversionError, match=re.escape(needle)):
        image_to_rgb(msg, max_pixels=1000 if "width" in kwargs and kwargs["width"] == 5000
                     else BIG)


def test_max_pixels_checked_before_data():
    # a lying header (huge size, 3 bytes of data) is refused by its size, not by a reshape error
    msg = Image(height=100000, width=100000, encoding="mono8", step=100000, data=b"abc")
    with pytest.raises(ImageConversionError, match="max_input_pixels=16777216"):
        image_to_rgb(msg, BIG)


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_decodes(fmt):
    yy, xx = np.mgrid[0:32, 0:40]      # smooth content: what JPEG is made for
    rgb = np.stack([xx * 6, yy * 7, (xx + yy) * 3], axis=-1).astype(np.uint8)
    msg = rgb_to_compressed(rgb, fmt)
    out = compressed_to_rgb(msg, BIG)
    assert out.shape == rgb.shape
    if fmt == "png":
        np.testing.assert_array_equal(out, rgb)
    else:
        assert np.abs(out.astype(int) - rgb).mean() < 8


@pytest.mark.parametrize("data,fmt,needle", [
    (b"", "jpeg", "no data"),
    (b"\xff\xd8\xff\xe0garbage" * 10, "jpeg", "could not be decoded"),
    (b"\x00\x01\x02", "rgb8; jpeg compressed bgr8", "could not be decoded"),
    (b"xyz", "theora", "not supported"),
])
def test_bad_compressed_rejected(data, fmt, needle):
    with pytest.raises(ImageConversionError, match=needle):
        compressed_to_rgb(CompressedImage(format=fmt, data=data), BIG)


def test_compressed_too_large_rejected():
    msg = rgb_to_compressed(np.zeros((40, 50, 3), np.uint8), "png")
    with pytest.raises(ImageConversionError, match="above max_input_pixels=100"):
        compressed_to_rgb(msg, 100)


@pytest.mark.parametrize("arr,enc", [
    (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000, "16UC1"),
    (np.arange(-6, 6, dtype=np.int32).reshape(3, 4) * 100000, "32SC1"),
    (np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4), "32FC1"),
    (_photo(3, 4), "rgb8"),
])
def test_output_images_round_trip(arr, enc):
    msg = array_to_image(arr, enc)
    assert msg.step == arr.strides[0] and msg.is_bigendian == 0
    np.testing.assert_array_equal(image_to_array(msg), arr)


def test_resize_labels_nearest_keeps_values():
    lab = np.array([[0, 1], [2, 65535]], np.uint16)
    big = resize_to(lab, (4, 6))
    assert big.shape == (4, 6) and set(np.unique(big)) == {0, 1, 2, 65535}
    pan = np.array([[0, 7], [123456, 9]], np.int32)
    assert set(np.unique(resize_to(pan, (3, 5)))) <= {0, 7, 123456, 9}
