"""sensor_msgs Image / CompressedImage payloads <-> numpy, without ROS.

The node (rclpy messages) and the offline tools (``rosbags`` messages) read and
write the same message fields (encoding, height, width, step, data,
is_bigendian; format and data for compressed images), so both go through this
one module: one encoding table, one set of validation rules, one set of
error messages.

Validation happens before a byte of pixel data is interpreted, because a
malformed message (wrong step, short data, a lying header with an absurd size)
reaches a subscriber or a bag reader as it was sent. Errors are
``ImageCodecError`` with a ``code`` naming the kind of problem (encoding, empty,
too_large, step, data_size, shape, no_data, format, undecodable) so that logs
can be rate-limited per kind.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Dict, Optional, Tuple

import numpy as np


@dataclass(frozen=True)
class Encoding:
    """One raw image encoding: samples per pixel and the sample type."""

    channels: int
    dtype: np.dtype

    @property
    def bytes_per_pixel(self) -> int:
        return self.channels * self.dtype.itemsize


def _enc(channels: int, dtype) -> Encoding:
    return Encoding(channels, np.dtype(dtype))


#: every raw encoding this package reads or writes
ENCODINGS: Dict[str, Encoding] = {
    "rgb8": _enc(3, np.uint8), "bgr8": _enc(3, np.uint8),
    "rgba8": _enc(4, np.uint8), "bgra8": _enc(4, np.uint8),
    "mono8": _enc(1, np.uint8), "8UC1": _enc(1, np.uint8), "8UC3": _enc(3, np.uint8),
    "mono16": _enc(1, np.uint16), "16UC1": _enc(1, np.uint16),
    "32SC1": _enc(1, np.int32), "32FC1": _enc(1, np.float32),
}
#: the camera encodings that become an RGB frame (the node's accepted inputs)
RGB_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8")
#: what ``to_rgb`` accepts: the camera encodings, and 8UC3 read as RGB (as the bags do)
COLOUR_ENCODINGS = RGB_ENCODINGS + ("8UC3",)
#: compressed formats that can be decoded (matched as substrings of ``format``)
COMPRESSED_FORMATS = ("jpeg", "jpg", "png")


class ImageCodecError(ValueError):
    """An image payload cannot be decoded or encoded; the message says why and how to fix it."""

    def __init__(self, message: str, code: str = "other"):
        super().__init__(message)
        self.code = code


def _as_bytes(data) -> np.ndarray:
    """The message's ``data`` (bytes, array.array, memoryview or a uint8 array) as flat uint8."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise ImageCodecError(f"image data must be uint8 bytes, got a {data.dtype} array",
                                  code="data_size")
        return data.reshape(-1)
    return np.frombuffer(data, dtype=np.uint8)


def decode(encoding: str, height: int, width: int, step: int, data, is_bigendian=False, *,
           max_pixels: Optional[int] = None,
           allowed: Optional[Collection[str]] = None) -> np.ndarray:
    """A raw image payload -> HxW (one channel) or HxWxC array in native byte order (a copy).

    Checks, in order: the encoding (against ``allowed`` when given, else the table), a
    non-empty size, ``height*width <= max_pixels`` (before looking at the data, so a lying
    header is refused by its size), ``step >= width*bytes_per_pixel`` and
    ``len(data) == step*height``. Padding at the end of each row is cropped."""
    arr, fresh = _decode(encoding, height, width, step, data, is_bigendian, max_pixels, allowed)
    return arr if fresh else arr.copy()


def _decode(encoding, height, width, step, data, is_bigendian, max_pixels,
            allowed) -> Tuple[np.ndarray, bool]:
    """``decode`` without the final copy: (array, whether it is already a new array rather
    than a view of ``data``), so a colour conversion that makes a new array anyway saves one
    copy of every camera frame."""
    supported = ENCODINGS if allowed is None else allowed
    if encoding not in supported or encoding not in ENCODINGS:
        raise ImageCodecError(
            f"unsupported image encoding {encoding!r}; supported: {sorted(supported)} "
            "(convert in the camera driver or with image_proc)", code="encoding")
    enc = ENCODINGS[encoding]
    h, w, step = int(height), int(width), int(step)
    if h <= 0 or w <= 0:
        raise ImageCodecError(f"image is empty: width={w} height={h}", code="empty")
    if max_pixels is not None and h * w > max_pixels:
        raise ImageCodecError(
            f"image {w}x{h} has {h * w} pixels, above max_input_pixels={max_pixels} "
            "(raise the parameter or downscale the camera)", code="too_large")
    row = w * enc.bytes_per_pixel
    if step < row:
        raise ImageCodecError(
            f"step {step} is smaller than width*bytes_per_pixel = {w}*{enc.bytes_per_pixel} "
            f"= {row} for {encoding}", code="step")
    buf = _as_bytes(data)
    if buf.size != step * h:
        raise ImageCodecError(
            f"data has {buf.size} bytes but step*height = {step}*{h} = {step * h}",
            code="data_size")
    rows = buf.reshape(h, step)
    fresh = step != row                  # cropping the row padding copies
    rows = np.ascontiguousarray(rows[:, :row]) if fresh else rows
    dtype = enc.dtype.newbyteorder(">" if is_bigendian else "<")
    arr = rows.view(dtype).reshape(h, w, enc.channels)
    if not arr.dtype.isnative:
        arr, fresh = arr.astype(dtype.newbyteorder("=")), True
    return (arr[..., 0] if enc.channels == 1 else arr), fresh


def encode(arr: np.ndarray, encoding: str) -> Tuple[int, bytes]:
    """An HxW or HxWxC array -> (step, little-endian row-major bytes) for ``encoding``.

    The array is cast to the encoding's sample type (as a label image of int64 class
    ids becomes 16UC1); its shape must match the encoding's channel count."""
    step, out = encode_array(arr, encoding)
    return step, out.tobytes()


def encode_array(arr: np.ndarray, encoding: str) -> Tuple[int, np.ndarray]:
    """``encode`` without the final copy: (step, C-contiguous little-endian array whose
    buffer is the image data), for writers that copy the buffer themselves."""
    if encoding not in ENCODINGS:
        raise ImageCodecError(f"cannot encode to {encoding!r}; supported: {sorted(ENCODINGS)}",
                              code="encoding")
    enc = ENCODINGS[encoding]
    arr = np.asarray(arr)
    want = 2 if enc.channels == 1 else 3
    if arr.ndim != want or (want == 3 and arr.shape[2] != enc.channels):
        shape = "H x W" if enc.channels == 1 else f"H x W x {enc.channels}"
        raise ImageCodecError(f"{encoding} needs an {shape} array, got shape {arr.shape}",
                              code="shape")
    out = np.ascontiguousarray(arr.astype(enc.dtype.newbyteorder("<"), copy=False))
    return int(out.shape[1]) * enc.bytes_per_pixel, out


def to_rgb(arr: np.ndarray, encoding: str) -> np.ndarray:
    """A decoded 8-bit colour or mono image -> HxWx3 uint8 RGB (a new array for all but rgb8)."""
    if encoding not in COLOUR_ENCODINGS:
        raise ImageCodecError(f"image encoding {encoding!r} is not a colour image; use one of "
                              f"{list(RGB_ENCODINGS)}", code="encoding")
    if encoding in ("rgb8", "8UC3"):
        return arr
    import cv2   # SIMD channel swaps: this runs on every camera frame of the node

    conv = {"bgr8": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB,
            "bgra8": cv2.COLOR_BGRA2RGB, "mono8": cv2.COLOR_GRAY2RGB}[encoding]
    return cv2.cvtColor(np.ascontiguousarray(arr), conv)


def from_rgb(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """An HxWx3 uint8 RGB frame -> the array of one of the RGB_ENCODINGS (mono8: luma)."""
    if encoding not in RGB_ENCODINGS:
        raise ImageCodecError(f"cannot encode an RGB frame to {encoding!r}; use one of "
                              f"{list(RGB_ENCODINGS)}", code="encoding")
    if encoding == "rgb8":
        return rgb
    import cv2

    conv = {"bgr8": cv2.COLOR_RGB2BGR, "rgba8": cv2.COLOR_RGB2RGBA,
            "bgra8": cv2.COLOR_RGB2BGRA, "mono8": cv2.COLOR_RGB2GRAY}[encoding]
    return cv2.cvtColor(np.ascontiguousarray(rgb), conv)


def decode_rgb(encoding: str, height: int, width: int, step: int, data, is_bigendian=False, *,
               max_pixels: Optional[int] = None) -> np.ndarray:
    """A camera image payload (one of RGB_ENCODINGS) -> HxWx3 uint8 RGB, validated."""
    arr, fresh = _decode(encoding, height, width, step, data, is_bigendian, max_pixels,
                         RGB_ENCODINGS)
    if encoding == "rgb8":
        return arr if fresh else arr.copy()
    return to_rgb(arr, encoding)         # a new array: no copy of the payload first


def decode_compressed(data, fmt: str, *, max_pixels: Optional[int] = None) -> np.ndarray:
    """A jpeg/png CompressedImage payload -> HxWx3 uint8 RGB.

    ``fmt`` is the message's ``format`` field; an empty one is tried as jpeg/png, anything
    naming neither is refused before decoding."""
    import cv2

    buf = _as_bytes(data)
    if buf.size == 0:
        raise ImageCodecError("compressed image has no data", code="no_data")
    low = (fmt or "").lower()
    if low and not any(k in low for k in COMPRESSED_FORMATS):
        raise ImageCodecError(
            f"compressed format {fmt!r} is not supported; publish jpeg or png", code="format")
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if img is None:
        raise ImageCodecError(
            f"compressed payload of {buf.size} bytes (format {fmt!r}) could not be decoded",
            code="undecodable")
    h, w = img.shape[:2]
    if max_pixels is not None and h * w > max_pixels:
        raise ImageCodecError(
            f"decoded image {w}x{h} has {h * w} pixels, above max_input_pixels={max_pixels}",
            code="too_large")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def encode_compressed(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """An HxWx3 uint8 RGB frame -> jpeg (``quality`` 0-100) or png bytes."""
    import cv2

    low = fmt.lower()
    if low not in COMPRESSED_FORMATS:
        raise ImageCodecError(f"cannot compress to {fmt!r}; use jpeg or png", code="format")
    ext = ".png" if low == "png" else ".jpg"
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR),
                           params)
    if not ok:
        raise ImageCodecError(f"cannot encode {np.shape(rgb)} as {fmt}", code="format")
    return buf.tobytes()


def decode_msg(msg, *, max_pixels: Optional[int] = None,
               allowed: Optional[Collection[str]] = None) -> np.ndarray:
    """``decode`` applied to the fields of an Image message (rclpy or rosbags)."""
    return decode(msg.encoding, msg.height, msg.width, msg.step, msg.data, msg.is_bigendian,
                  max_pixels=max_pixels, allowed=allowed)


__all__ = ["Encoding", "ENCODINGS", "RGB_ENCODINGS", "COLOUR_ENCODINGS", "COMPRESSED_FORMATS",
           "ImageCodecError", "decode", "encode", "to_rgb", "from_rgb", "decode_rgb",
           "decode_compressed", "encode_compressed", "decode_msg"]
