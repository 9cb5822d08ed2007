"""The shared image codec (ovseg_ros/core/image_codec.py): round trips per encoding and the
refusal of hostile headers, without ROS; and that rclpy and rosbags messages decode alike."""
import re

import numpy as np
import pytest

from ovseg_ros.core import image_codec as C


def _array(enc, h=5, w=7, seed=0):
    e = C.ENCODINGS[enc]
    rng = np.random.default_rng(seed)
    shape = (h, w) if e.channels == 1 else (h, w, e.channels)
    if e.dtype.kind == "f":
        return rng.standard_normal(shape).astype(e.dtype)
    info = np.iinfo(e.dtype)
    return rng.integers(info.min, info.max, shape, dtype=e.dtype, endpoint=True)


def test_table_bytes_per_pixel():
    assert C.ENCODINGS["rgb8"].bytes_per_pixel == 3
    assert C.ENCODINGS["bgra8"].bytes_per_pixel == 4
    assert C.ENCODINGS["16UC1"].bytes_per_pixel == 2
    assert C.ENCODINGS["32FC1"].bytes_per_pixel == 4
    assert set(C.RGB_ENCODINGS) <= set(C.ENCODINGS)


@pytest.mark.parametrize("enc", sorted(C.ENCODINGS))
def test_round_trip_every_encoding(enc):
    arr = _array(enc)
    step, data = C.encode(arr, enc)
    assert step == 7 * C.ENCODINGS[enc].bytes_per_pixel and len(data) == step * 5
    back = C.decode(enc, 5, 7, step, data, False)
    assert back.dtype == C.ENCODINGS[enc].dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


@pytest.mark.parametrize("enc", ["16UC1", "32SC1", "32FC1"])
def test_big_endian_and_padded_rows(enc):
    arr = _array(enc, 3, 4, seed=1)
    dtype = C.ENCODINGS[enc].dtype.newbyteorder(">")
    pad = b"\xee" * 5
    data = b"".join(arr[r].astype(dtype).tobytes() + pad for r in range(3))
    step = 4 * dtype.itemsize + 5
    back = C.decode(enc, 3, 4, step, data, True)
    assert back.dtype.isnative
    np.testing.assert_array_equal(back, arr)


def test_decode_accepts_bytes_arrays_and_memoryviews():
    arr = _array("rgb8")
    step, data = C.encode(arr, "rgb8")
    for d in (data, bytearray(data), memoryview(data), np.frombuffer(data, np.uint8)):
        np.testing.assert_array_equal(C.decode("rgb8", 5, 7, step, d), arr)


def test_decoded_array_does_not_alias_the_message():
    buf = np.frombuffer(C.encode(_array("mono8"), "mono8")[1], np.uint8).copy()
    out = C.decode("mono8", 5, 7, 7, buf)
    buf[:] = 0
    assert out.any()


@pytest.mark.parametrize("enc", ["rgb8", "bgr8", "mono8"])
def test_rgb_frames_are_writable_and_own_their_pixels(enc):
    rgb = _array("rgb8", 4, 6, seed=4) | 1           # no zero pixel
    step, data = C.encode(C.from_rgb(rgb, enc), enc)
    buf = np.frombuffer(data, np.uint8).copy()
    out = C.decode_rgb(enc, 4, 6, step, buf)
    buf[:] = 0
    assert out.flags.writeable and out.all()


@pytest.mark.parametrize("enc", C.RGB_ENCODINGS)
def test_rgb_round_trip(enc):
    rgb = _array("rgb8", 6, 9, seed=2)
    step, data = C.encode(C.from_rgb(rgb, enc), enc)
    out = C.decode_rgb(enc, 6, 9, step, data, max_pixels=54)
    assert out.shape == (6, 9, 3) and out.dtype == np.uint8
    if enc == "mono8":
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    else:
        np.testing.assert_array_equal(out, rgb)


GOOD = dict(encoding="rgb8", height=4, width=6, step=18, data=b"\x01" * 72)


@pytest.mark.parametrize("change,code,needle", [
    (dict(encoding="yuv422"), "encoding", "unsupported image encoding 'yuv422'"),
    (dict(width=0), "empty", "image is empty: width=0"),
    (dict(height=-3), "empty", "height=-3"),
    (dict(step=17), "step", "step 17 is smaller than width*bytes_per_pixel = 6*3 = 18"),
    (dict(step=-1), "step", "step -1 is smaller"),
    (dict(data=b"\x01" * 71), "data_size", "data has 71 bytes but step*height = 18*4 = 72"),
    (dict(data=b"\x01" * 73), "data_size", "data has 73 bytes"),
    (dict(data=b""), "data_size", "data has 0 bytes"),
    # a lying header: huge size and 3 bytes; refused by size before any reshape
    (dict(height=1 << 20, width=1 << 20, step=3 << 20, data=b"abc"), "too_large",
     "above max_input_pixels=1000"),
])
def test_hostile_headers_are_refused(change, code, needle):
    fields = {**GOOD, **change}
    with pytest.raises(C.ImageCodecError, match=re.escape(needle)) as info:
        C.decode(fields["encoding"], fields["height"], fields["width"], fields["step"],
                 fields["data"], max_pixels=1000)
    assert info.value.code == code


def test_allowed_restricts_and_is_named():
    with pytest.raises(C.ImageCodecError, match=re.escape("supported: ['bgr8', 'mono8'")):
        C.decode("rgb8", 1, 1, 3, b"abc", allowed=("bgr8", "mono8"))
    with pytest.raises(C.ImageCodecError, match="unsupported image encoding '16UC1'"):
        C.decode_rgb("16UC1", 1, 1, 2, b"ab")


def test_encode_refuses_wrong_shapes_and_encodings():
    with pytest.raises(C.ImageCodecError, match=re.escape("16UC1 needs an H x W array")):
        C.encode(np.zeros((2, 2, 3), np.uint16), "16UC1")
    with pytest.raises(C.ImageCodecError, match=re.escape("rgba8 needs an H x W x 4 array")):
        C.encode(np.zeros((2, 2, 3), np.uint8), "rgba8")
    with pytest.raises(C.ImageCodecError, match="cannot encode to 'yuv422'"):
        C.encode(np.zeros((2, 2), np.uint8), "yuv422")
    with pytest.raises(C.ImageCodecError, match="not a colour image"):
        C.to_rgb(np.zeros((2, 2), np.uint16), "16UC1")


def test_encode_casts_to_the_sample_type():
    step, data = C.encode(np.array([[1, 65535]], np.int64), "16UC1")
    assert step == 4 and data == b"\x01\x00\xff\xff"


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_compressed_round_trip(fmt):
    yy, xx = np.mgrid[0:24, 0:32]
    rgb = np.stack([xx * 7, yy * 9, (xx + yy) * 4], axis=-1).astype(np.uint8)
    out = C.decode_compressed(C.encode_compressed(rgb, fmt), fmt, max_pixels=24 * 32)
    assert out.shape == rgb.shape
    if fmt == "png":
        np.testing.assert_array_equal(out, rgb)
    else:
        assert np.abs(out.astype(int) - rgb).mean() < 8


@pytest.mark.parametrize("data,fmt,code", [
    (b"", "png", "no_data"),
    (b"\x89PNG garbage", "png", "undecodable"),
    (b"abc", "theora", "format"),
])
def test_bad_compressed_payloads(data, fmt, code):
    with pytest.raises(C.ImageCodecError) as info:
        C.decode_compressed(data, fmt)
    assert info.value.code == code


def test_compressed_size_limit_applies_after_decoding():
    png = C.encode_compressed(np.zeros((10, 20, 3), np.uint8), "png")
    with pytest.raises(C.ImageCodecError, match="decoded image 20x10 has 200 pixels") as info:
        C.decode_compressed(png, "png", max_pixels=199)
    assert info.value.code == "too_large"
    with pytest.raises(C.ImageCodecError, match="cannot compress to 'bmp'"):
        C.encode_compressed(np.zeros((2, 2, 3), np.uint8), "bmp")


def test_rclpy_and_rosbags_messages_decode_alike():
    """Both message flavours carry the same fields; the codec reads both the same way."""
    sensor_msgs = pytest.importorskip("sensor_msgs.msg")
    from ovseg_ros.eval import bags as B
    from ovseg_ros.ros import image_conv as IC

    arr = _array("32SC1", 4, 5, seed=3)
    rcl = IC.array_to_image(arr, "32SC1")
    assert isinstance(rcl, sensor_msgs.Image)
    store = B.make_typestore(with_ovseg=False)
    hdr = store.types["std_msgs/msg/Header"](
        stamp=store.types["builtin_interfaces/msg/Time"](sec=1, nanosec=2), frame_id="f")
    bag = store.deserialize_cdr(store.serialize_cdr(B.numpy_to_image(store, arr, "32SC1", hdr),
                                                    B.IMAGE_TYPE), B.IMAGE_TYPE)
    assert rcl.step == bag.step and bytes(rcl.data) == bytes(bag.data)
    np.testing.assert_array_equal(C.decode_msg(rcl), C.decode_msg(bag))
    np.testing.assert_array_equal(IC.image_to_array(rcl), B.image_to_numpy(bag))
    # the same hostile message is refused on both sides, each with its own error type
    short = store.types[B.IMAGE_TYPE](header=hdr, height=4, width=5, encoding="32SC1",
                                      is_bigendian=0, step=20, data=np.zeros(79, np.uint8))
    with pytest.raises(B.BagError, match="data has 79 bytes.*malformed"):
        B.image_to_numpy(short)
    rcl.data = bytes(79)
    with pytest.raises(IC.ImageConversionError, match="data has 79 bytes") as info:
        IC.image_to_array(rcl)
    assert info.value.code == "data_size"
