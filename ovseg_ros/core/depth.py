"""Registered depth images (REP 118) -> float32 metres, checked against the colour frame.

The depth contract (docs/node.md, "Depth and 3D"):

* encodings: ``16UC1`` (and ``mono16``, which some drivers use for the same data) in
  millimetres, 0 = no measurement; ``32FC1`` in metres, NaN = no measurement, +-Inf =
  out of range. Anything else (a colour encoding on the depth topic above all) is refused.
* registered: the depth image has the colour image's size and ``frame_id`` (the driver's
  aligned-to-colour stream, e.g. RealSense ``aligned_depth_to_color/image_raw``). A
  different size is refused, not rescaled: a depth image of another size is almost always
  the unregistered stream, whose pixels do not correspond to colour pixels whatever K says.
* intrinsics from the colour camera_info's **P** (the rectified projection, as
  image_geometry's PinholeCameraModel); K only when P is all zeros (drivers that publish
  no rectification fill P with zeros), which is said in ``Intrinsics.source``.
* distortion: the pinhole back-projection is exact for rectified images only. A
  camera_info whose D is all zeros (any model name) is accepted; non-zero D is refused
  unless the caller states that the images are rectified (``rectified=True``: the topics
  are ``image_rect`` from image_proc, whose camera_info still carries the raw D).
  Undistorting here would be a second, silent rectification.

``decode_depth`` returns metres with NaN wherever there is no usable measurement and
counts why (``DepthStats``): zero / NaN (no measurement), +-Inf (out of range), negative,
beyond ``max_range`` (absurd). Errors are ``DepthError`` with a ``code`` (encoding,
malformed, size, frame_id, units, no_valid, intrinsics, camera_info, distortion) so logs
can be rate-limited per kind.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from . import image_codec as codec

#: depth encodings and the factor to metres
DEPTH_ENCODINGS = {"16UC1": 1e-3, "mono16": 1e-3, "32FC1": 1.0}
#: valid depth beyond this many metres is masked as absurd (no RGB-D sensor reaches it)
DEFAULT_MAX_RANGE_M = 100.0
#: a 16UC1 image whose valid median is below this many millimetres holds metres, not mm
MIN_PLAUSIBLE_MEDIAN_MM = 20.0
#: a 32FC1 image whose valid median is above this many metres holds millimetres
MAX_PLAUSIBLE_MEDIAN_M = 100.0
#: the units check takes the median of the valid pixels on every n-th row and column
UNITS_GRID = 4
#: ... when at least this many valid pixels lie there (else of all of them)
UNITS_MIN_SAMPLE = 1024


class DepthError(ValueError):
    """A depth image or camera_info cannot be used; the message names the fact and the fix."""

    def __init__(self, message: str, code: str = "other"):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of the (rectified) colour image, in pixels."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    source: str = "P"       # "P", "K" (P was all zeros) or "given"

    def __post_init__(self):
        vals = (self.fx, self.fy, self.cx, self.cy)
        if not all(np.isfinite(v) for v in vals):
            raise DepthError(f"intrinsics are not finite: fx={self.fx} fy={self.fy} "
                             f"cx={self.cx} cy={self.cy}", code="intrinsics")
        if self.fx <= 0 or self.fy <= 0:
            raise DepthError(f"focal lengths must be > 0, got fx={self.fx} fy={self.fy} "
                             "(camera not calibrated?)", code="intrinsics")
        if self.width <= 0 or self.height <= 0:
            raise DepthError(f"intrinsics need the image size, got {self.width}x{self.height}",
                             code="intrinsics")

    def scaled_to(self, width: int, height: int) -> "Intrinsics":
        """The same camera at another resolution (pixel centres: c' = (c + 0.5) s - 0.5)."""
        sx, sy = width / self.width, height / self.height
        return Intrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5,
                          (self.cy + 0.5) * sy - 0.5, int(width), int(height), self.source)

    @classmethod
    def from_camera_info(cls, info, *, rectified: bool = False) -> "Intrinsics":
        """From a sensor_msgs/CameraInfo (rclpy or rosbags, or anything with k, p, d,
        distortion_model, width, height; binning and roi when present)."""
        if info is None:
            raise DepthError("no camera_info for the colour image: 3D needs its intrinsics "
                             "(publish <camera>/camera_info, or pass --fx --fy --cx --cy)",
                             code="camera_info")
        w, h = int(info.width), int(info.height)
        for name in ("binning_x", "binning_y"):
            if int(getattr(info, name, 0) or 0) > 1:
                raise DepthError(f"camera_info {name}={getattr(info, name)} is not handled; "
                                 "publish full-resolution images", code="camera_info")
        roi = getattr(info, "roi", None)
        if roi is not None and int(roi.width) and (int(roi.width), int(roi.height)) != (w, h):
            raise DepthError(f"camera_info roi {roi.width}x{roi.height} is not handled; "
                             "publish full images", code="camera_info")
        _check_distortion(str(getattr(info, "distortion_model", "") or ""),
                          np.asarray(getattr(info, "d", ()), np.float64), rectified)
        p = np.asarray(info.p, np.float64).reshape(-1)
        k = np.asarray(info.k, np.float64).reshape(-1)
        if p.size != 12 or k.size != 9:
            raise DepthError(f"camera_info P must have 12 and K 9 values, got {p.size} and "
                             f"{k.size}", code="intrinsics")
        if np.all(p == 0):
            m, src = k, "K"
            fx, fy, cx, cy = m[0], m[4], m[2], m[5]
            if np.all(k == 0):
                raise DepthError("camera_info P and K are all zeros (camera not calibrated)",
                                 code="intrinsics")
        else:
            fx, fy, cx, cy, src = p[0], p[5], p[2], p[6], "P"
        if not np.all(np.isfinite([fx, fy, cx, cy])):
            raise DepthError(f"camera_info {src} holds NaN/Inf: fx={fx} fy={fy} cx={cx} cy={cy}",
                             code="intrinsics")
        return cls(float(fx), float(fy), float(cx), float(cy), w, h, src)


def _check_distortion(model: str, d: np.ndarray, rectified: bool) -> None:
    """All-zero D (whatever the model name) means no distortion; else rectified or refused."""
    if rectified or d.size == 0 or np.all(d == 0):
        return
    raise DepthError(
        f"camera_info has distortion ({model or 'unnamed'}, D={np.round(d, 5).tolist()}): "
        "the pinhole back-projection needs rectified images; subscribe to image_rect and the "
        "registered depth (image_proc / depth_image_proc) and mark them rectified "
        "(depth_rectified: true), or use a driver's undistorted stream", code="distortion")


@dataclass
class DepthStats:
    """Pixels without a usable depth, by reason."""

    pixels: int = 0
    valid: int = 0
    no_measurement: int = 0     # 0 (16UC1) or NaN (32FC1)
    out_of_range: int = 0       # +-Inf (32FC1)
    negative: int = 0
    absurd: int = 0             # beyond max_range

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class DepthFrame:
    """A registered depth image in metres (NaN = invalid), ready for back-projection."""

    metres: np.ndarray             # H x W float32
    intrinsics: Intrinsics
    frame_id: str
    stamp: int                     # header stamp, ns
    stats: DepthStats = field(default_factory=DepthStats)

    @property
    def size(self):
        return self.metres.shape[:2]


def decode_depth(encoding: str, height: int, width: int, step: int, data, is_bigendian=False,
                 *, max_range: float = DEFAULT_MAX_RANGE_M):
    """A depth Image payload -> (H x W float32 metres with NaN for invalid, DepthStats)."""
    if encoding in codec.COLOUR_ENCODINGS or encoding not in DEPTH_ENCODINGS:
        raise DepthError(f"depth image has encoding {encoding!r}: a depth topic carries 16UC1 "
                         "(mm) or 32FC1 (m); is a colour topic remapped onto depth?",
                         code="encoding")
    try:
        raw = codec.decode(encoding, height, width, step, data, is_bigendian)
    except codec.ImageCodecError as exc:
        raise DepthError(f"malformed depth image: {exc}", code="malformed") from exc
    return depth_to_metres(raw, encoding, max_range=max_range)


def depth_to_metres(raw: np.ndarray, encoding: str, *, max_range: float = DEFAULT_MAX_RANGE_M):
    """A decoded depth array (uint16 mm or float32 m) -> (float32 metres, DepthStats)."""
    stats = DepthStats(pixels=int(raw.size))
    if encoding in ("16UC1", "mono16"):
        raw = np.asarray(raw)
        if raw.dtype != np.uint16:
            raise DepthError(f"{encoding} depth must be uint16, got {raw.dtype}", code="encoding")
        zero = raw == 0
        stats.no_measurement = int(np.count_nonzero(zero))
        if stats.no_measurement < raw.size:
            med = _plausibility_median(raw, ~zero)
            if med < MIN_PLAUSIBLE_MEDIAN_MM:
                raise DepthError(
                    f"16UC1 depth has a median of {med:g} (millimetres by REP 118, i.e. "
                    f"{med:g} mm): below {MIN_PLAUSIBLE_MEDIAN_MM:g} mm, the values look like "
                    "metres; publish millimetres in 16UC1 or metres in 32FC1", code="units")
        # a division (correctly rounded), not * 1e-3: the same float as a 32FC1 publisher's
        m = raw.astype(np.float32) / np.float32(1000.0)
        m[zero] = np.nan
    elif encoding == "32FC1":
        m = np.array(raw, dtype=np.float32, copy=True)
        nan = np.isnan(m)
        inf = np.isinf(m)
        stats.no_measurement = int(np.count_nonzero(nan))
        stats.out_of_range = int(np.count_nonzero(inf))
        # exact zeros in 32FC1 are "no measurement" too (depth_image_proc's convention)
        zero = m == 0
        stats.no_measurement += int(np.count_nonzero(zero))
        bad = nan | inf | zero
        if not bad.all():
            med = _plausibility_median(m, ~bad)
            if med > MAX_PLAUSIBLE_MEDIAN_M:
                raise DepthError(
                    f"32FC1 depth has a median of {med:g} (metres by REP 118): above "
                    f"{MAX_PLAUSIBLE_MEDIAN_M:g} m, the values look like millimetres; divide "
                    "by 1000 or publish 16UC1", code="units")
        m[bad] = np.nan
    else:
        raise DepthError(f"unsupported depth encoding {encoding!r}; use 16UC1 or 32FC1",
                         code="encoding")
    with np.errstate(invalid="ignore"):
        neg = m < 0
        far = m > max_range
    stats.negative = int(np.count_nonzero(neg))
    stats.absurd = int(np.count_nonzero(far))
    if stats.negative or stats.absurd:
        m[neg | far] = np.nan
    stats.valid = int(stats.pixels - stats.no_measurement - stats.out_of_range
                      - stats.negative - stats.absurd)
    if stats.valid == 0:
        raise DepthError(f"depth image has no valid measurement ({stats.as_dict()}): all zero / "
                         "NaN? Is the sensor covered or the emitter off?", code="no_valid")
    return m, stats


def _plausibility_median(values: np.ndarray, ok: np.ndarray) -> float:
    """Median of the valid values on every UNITS_GRID-th row and column, of all valid values
    when fewer than UNITS_MIN_SAMPLE lie there (small or sparse images): the units check
    compares it with thresholds a factor 1000 from real depths, and the full median was
    three quarters of the decoding time of a 640 x 480 image."""
    sub = values[::UNITS_GRID, ::UNITS_GRID][ok[::UNITS_GRID, ::UNITS_GRID]]
    return float(np.median(sub if sub.size >= UNITS_MIN_SAMPLE else values[ok]))


def check_registered(depth_size: Sequence[int], depth_frame_id: str, colour_size: Sequence[int],
                     colour_frame_id: str) -> None:
    """Refuse depth that is not registered to the colour image (size or frame differ)."""
    dh, dw = int(depth_size[0]), int(depth_size[1])
    ch, cw = int(colour_size[0]), int(colour_size[1])
    if (dh, dw) != (ch, cw):
        raise DepthError(
            f"depth image is {dw}x{dh} but the colour image is {cw}x{ch}: the depth is not "
            "registered to colour; subscribe to the driver's aligned-to-colour depth (e.g. "
            "/camera/aligned_depth_to_color/image_raw) or depth_image_proc/register",
            code="size")
    if depth_frame_id != colour_frame_id:
        raise DepthError(
            f"depth frame_id {depth_frame_id!r} differs from the colour frame_id "
            f"{colour_frame_id!r}: the depth is not registered to colour; use the driver's "
            "aligned-to-colour depth topic", code="frame_id")


def depth_frame(encoding: str, height: int, width: int, step: int, data, *, frame_id: str,
                stamp: int, colour_size: Sequence[int], colour_frame_id: str, camera_info,
                is_bigendian=False, rectified: bool = False,
                max_range: float = DEFAULT_MAX_RANGE_M,
                intrinsics: Optional[Intrinsics] = None) -> DepthFrame:
    """Everything in order: decode, check registration, intrinsics (from ``camera_info``
    unless ``intrinsics`` is given), and their size against the colour image."""
    metres, stats = decode_depth(encoding, height, width, step, data, is_bigendian,
                                 max_range=max_range)
    check_registered(metres.shape, frame_id, colour_size, colour_frame_id)
    intr = intrinsics or Intrinsics.from_camera_info(camera_info, rectified=rectified)
    if (intr.height, intr.width) != tuple(int(s) for s in colour_size[:2]):
        raise DepthError(
            f"camera_info is for {intr.width}x{intr.height} but the images are "
            f"{int(colour_size[1])}x{int(colour_size[0])}: use the camera_info of the colour "
            "stream the depth is aligned to", code="camera_info")
    return DepthFrame(metres=metres, intrinsics=intr, frame_id=frame_id, stamp=int(stamp),
                      stats=stats)


def depth_frame_from_msg(msg, *, colour_size, colour_frame_id: str, camera_info,
                         rectified: bool = False,
                         max_range: float = DEFAULT_MAX_RANGE_M) -> DepthFrame:
    """``depth_frame`` from the fields of a depth Image message (rclpy or rosbags)."""
    st = msg.header.stamp
    return depth_frame(msg.encoding, msg.height, msg.width, msg.step, msg.data,
                       frame_id=msg.header.frame_id,
                       stamp=int(st.sec) * 1_000_000_000 + int(st.nanosec),
                       colour_size=colour_size, colour_frame_id=colour_frame_id,
                       camera_info=camera_info, is_bigendian=msg.is_bigendian,
                       rectified=rectified, max_range=max_range)


__all__ = ["DepthError", "DepthFrame", "DepthStats", "Intrinsics", "DEPTH_ENCODINGS",
           "decode_depth", "depth_to_metres", "check_registered", "depth_frame",
           "depth_frame_from_msg", "DEFAULT_MAX_RANGE_M"]
