"""sensor_msgs Image / CompressedImage <-> numpy, with validation.

rclpy hands malformed messages (wrong step, short data, absurd sizes) to the
callback as they are, so every check the camera driver might have skipped
happens here, before a byte of pixel data is interpreted. Errors are
``ImageConversionError`` with a message naming the field and the fix.
"""
from __future__ import annotations

from typing import Tuple

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image

# encoding -> (channels, cv2 conversion to RGB or None)
SUPPORTED_ENCODINGS = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
}


class ImageConversionError(ValueError):
    """An image message cannot be turned into an RGB frame; the message says why.

    ``code`` names the kind of problem (encoding, empty, step, data_size, too_large,
    no_data, format, undecodable) so logs can be rate-limited per kind."""

    def __init__(self, message: str, code: str = "other"):
        super().__init__(message)
        self.code = code


def image_to_rgb(msg: Image, max_pixels: int) -> np.ndarray:
    """Validate a sensor_msgs/Image and return an HxWx3 uint8 RGB array (a copy)."""
    enc = msg.encoding
    if enc not in SUPPORTED_ENCODINGS:
        raise ImageConversionError(
            f"unsupported image encoding {enc!r}; supported: {sorted(SUPPORTED_ENCODINGS)} "
            "(convert in the camera driver or with image_proc)", code="encoding")
    channels, code = SUPPORTED_ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ImageConversionError(f"image is empty: width={w} height={h}", code="empty")
    if h * w > max_pixels:
        raise ImageConversionError(
            f"image {w}x{h} has {h * w} pixels, above max_input_pixels={max_pixels} "
            "(raise the parameter or downscale the camera)", code="too_large")
    row = w * channels
    if step < row:
        raise ImageConversionError(
            f"step {step} is smaller than width*channels = {w}*{channels} = {row} for {enc}",
            code="step")
    n = len(msg.data)
    if n != step * h:
        raise ImageConversionError(
            f"data has {n} bytes but step*height = {step}*{h} = {step * h}",
            code="data_size")
    buf = np.frombuffer(msg.data, dtype=np.uint8).reshape(h, step)[:, :row]
    img = buf.reshape(h, w, channels) if channels > 1 else buf.reshape(h, w)
    if code is None:
        return np.ascontiguousarray(img).copy()
    return cv2.cvtColor(np.ascontiguousarray(img), code)


def compressed_to_rgb(msg: CompressedImage, max_pixels: int) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (jpeg/png) to HxWx3 uint8 RGB."""
    n = len(msg.data)
    if n == 0:
        raise ImageConversionError("compressed image has no data", code="no_data")
    fmt = (msg.format or "").lower()
    if fmt and not any(k in fmt for k in ("jpeg", "jpg", "png")):
        raise ImageConversionError(
            f"compressed format {msg.format!r} is not supported; publish jpeg or png",
            code="format")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None:
        raise ImageConversionError(
            f"compressed payload of {n} bytes (format {msg.format!r}) could not be decoded",
            code="undecodable")
    h, w = img.shape[:2]
    if h * w > max_pixels:
        raise ImageConversionError(
            f"decoded image {w}x{h} has {h * w} pixels, above max_input_pixels={max_pixels}",
            code="too_large")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def array_to_image(arr: np.ndarray, encoding: str, header=None) -> Image:
    """Build a sensor_msgs/Image from an HxW or HxWxC array (native little-endian)."""
    arr = np.ascontiguousarray(arr)
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(arr.strides[0])
    msg.data = arr.tobytes()
    return msg


def rgb_to_image(rgb: np.ndarray, encoding: str = "rgb8", header=None) -> Image:
    """Encode an RGB frame as one of the SUPPORTED_ENCODINGS (used by tests and the player)."""
    if encoding == "rgb8":
        out = rgb
    elif encoding == "bgr8":
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    elif encoding == "rgba8":
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA)
    elif encoding == "bgra8":
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)
    elif encoding == "mono8":
        out = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    else:
        raise ImageConversionError(f"cannot encode to {encoding!r}")
    return array_to_image(out, encoding, header)


def rgb_to_compressed(rgb: np.ndarray, fmt: str = "jpeg", header=None,
                      quality: int = 90) -> CompressedImage:
    ext = ".png" if fmt == "png" else ".jpg"
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext == ".jpg" else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ImageConversionError(f"cannot encode {rgb.shape} as {fmt}")
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = fmt
    msg.data = buf.tobytes()
    return msg


def image_to_array(msg: Image) -> np.ndarray:
    """Decode one of the node's output images (16UC1, 32SC1, 32FC1, rgb8) to numpy."""
    dtypes = {"16UC1": (np.uint16, 1), "mono16": (np.uint16, 1), "32SC1": (np.int32, 1),
              "32FC1": (np.float32, 1), "rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3),
              "mono8": (np.uint8, 1)}
    if msg.encoding not in dtypes:
        raise ImageConversionError(f"cannot decode encoding {msg.encoding!r}")
    dtype, ch = dtypes[msg.encoding]
    dtype = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    h, w = msg.height, msg.width
    itemsize = dtype.itemsize * ch
    buf = np.frombuffer(msg.data, np.uint8).reshape(h, msg.step)[:, :w * itemsize]
    arr = np.ascontiguousarray(buf).view(dtype).reshape((h, w, ch) if ch > 1 else (h, w))
    return arr.astype(dtype.newbyteorder("="))


def resize_to(arr: np.ndarray, size: Tuple[int, int], nearest: bool = True) -> np.ndarray:
    """Resize HxW(xC) to (height, width); nearest for labels, linear for scores."""
    h, w = size
    if arr.shape[:2] == (h, w):
        return arr
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    if arr.dtype in (np.int32, np.int64) and nearest:
        # cv2 resizes int32 with INTER_NEAREST; int64 must be narrowed first
        return cv2.resize(arr.astype(np.int32), (w, h), interpolation=interp)
    return cv2.resize(arr, (w, h), interpolation=interp)
