"""sensor_msgs Image / CompressedImage (rclpy) <-> numpy.

The decoding, the validation of malformed messages and the encoding table are
``ovseg_ros/core/image_codec.py``, shared with the bag tools; this module only
moves rclpy message fields in and out. Errors are ``ImageConversionError`` (the
codec's ``ImageCodecError``) with a message naming the field and the fix and a
``code`` naming the kind of problem.
"""
from __future__ import annotations

import array
from typing import Tuple

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from ..core import image_codec as codec

#: the camera encodings the node accepts
SUPPORTED_ENCODINGS = codec.RGB_ENCODINGS

#: the node's name for the codec's error (what its image callbacks catch)
ImageConversionError = codec.ImageCodecError


def image_to_rgb(msg: Image, max_pixels: int) -> np.ndarray:
    """Validate a sensor_msgs/Image and return an HxWx3 uint8 RGB array (a copy)."""
    return codec.decode_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.data,
                            msg.is_bigendian, max_pixels=max_pixels)


def compressed_to_rgb(msg: CompressedImage, max_pixels: int) -> np.ndarray:
    """Decode a sensor_msgs/CompressedImage (jpeg/png) to HxWx3 uint8 RGB."""
    return codec.decode_compressed(msg.data, msg.format, max_pixels=max_pixels)


def array_to_image(arr: np.ndarray, encoding: str, header=None) -> Image:
    """Build a sensor_msgs/Image from an HxW or HxWxC array (little-endian)."""
    step, buf = codec.encode_array(arr, encoding)
    # one copy into the message's array.array (bytes first, then array.array, was two)
    data = array.array("B")
    data.frombytes(memoryview(buf).cast("B"))
    msg = Image()
    if header is not None:
        msg.header = header
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = step
    msg.data = data
    return msg


def rgb_to_image(rgb: np.ndarray, encoding: str = "rgb8", header=None) -> Image:
    """Encode an RGB frame as one of the SUPPORTED_ENCODINGS (used by tests and the player)."""
    return array_to_image(codec.from_rgb(rgb, encoding), encoding, header)


def rgb_to_compressed(rgb: np.ndarray, fmt: str = "jpeg", header=None,
                      quality: int = 90) -> CompressedImage:
    msg = CompressedImage()
    if header is not None:
        msg.header = header
    msg.format = fmt
    msg.data = codec.encode_compressed(rgb, fmt, quality)
    return msg


def image_to_array(msg: Image) -> np.ndarray:
    """Decode an image message of any codec encoding (the node's outputs: 16UC1, 32SC1,
    32FC1, rgb8) to numpy, validated like an input."""
    return codec.decode_msg(msg)


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
