"""Depth and intrinsics from files, and the labelled cloud as PLY, for ``ovseg-segment``.

Depth files (registered to the colour image, same size):

    .png            16-bit PNG, millimetres (0 = no measurement), as 16UC1
    .npy            uint16 millimetres (16UC1) or float32/float64 metres (32FC1)
    .tif / .tiff    the same two (tifffile)

Intrinsics: ``--fx --fy --cx --cy`` (pixels, rectified image) or a camera_info YAML in
the camera_calibration / camera_info_manager format (image_width, image_height,
camera_matrix, distortion_model, distortion_coefficients, projection_matrix; P first,
K when P is all zeros, as core/depth.py).
"""
from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Optional, Sequence, Tuple

import numpy as np

from ..core.depth import DepthError, DepthFrame, Intrinsics, depth_to_metres

DEPTH_SUFFIXES = (".png", ".npy", ".tif", ".tiff")


def read_depth(path: Path) -> Tuple[np.ndarray, str]:
    """(array, REP 118 encoding) of a depth file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise DepthError(f"depth file {path} does not exist", code="file")
    if suffix == ".png":
        import cv2

        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise DepthError(f"cannot read depth PNG {path}", code="file")
    elif suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
    elif suffix in (".tif", ".tiff"):
        import tifffile

        arr = tifffile.imread(path)
    else:
        raise DepthError(f"depth file {path}: unknown type {suffix!r}; use {DEPTH_SUFFIXES}",
                         code="file")
    if arr.ndim != 2:
        raise DepthError(f"depth file {path} has shape {arr.shape}: a single-channel depth "
                         "image is expected (a colour PNG was given as depth?)",
                         code="encoding")
    if arr.dtype == np.uint16:
        return arr, "16UC1"
    if arr.dtype in (np.float32, np.float64):
        return arr.astype(np.float32), "32FC1"
    raise DepthError(f"depth file {path} holds {arr.dtype}: use uint16 millimetres or float "
                     "metres", code="encoding")


def read_camera_info_yaml(path: Path):
    """A camera_calibration YAML -> an object with CameraInfo's fields."""
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    try:
        return SimpleNamespace(
            width=int(data["image_width"]), height=int(data["image_height"]),
            k=list(data["camera_matrix"]["data"]),
            p=list(data.get("projection_matrix", {}).get("data", [0.0] * 12)),
            d=list(data.get("distortion_coefficients", {}).get("data", [])),
            distortion_model=str(data.get("distortion_model", "")))
    except (KeyError, TypeError) as exc:
        raise DepthError(f"camera_info YAML {path} lacks {exc} (camera_calibration format: "
                         "image_width, image_height, camera_matrix.data ...)",
                         code="camera_info") from exc


def load_depth(path: Path, colour_size: Sequence[int], *, fx: Optional[float] = None,
               fy: Optional[float] = None, cx: Optional[float] = None,
               cy: Optional[float] = None, camera_info: Optional[Path] = None,
               rectified: bool = False) -> DepthFrame:
    """The DepthFrame of a depth file for a colour image of ``colour_size`` (H, W)."""
    arr, enc = read_depth(path)
    h, w = int(colour_size[0]), int(colour_size[1])
    if arr.shape != (h, w):
        raise DepthError(f"depth {path} is {arr.shape[1]}x{arr.shape[0]} but the image is "
                         f"{w}x{h}: the depth must be registered to the colour image",
                         code="size")
    given = [v is not None for v in (fx, fy, cx, cy)]
    if camera_info is not None and any(given):
        raise DepthError("give either --camera-info or --fx --fy --cx --cy, not both",
                         code="camera_info")
    if camera_info is not None:
        intr = Intrinsics.from_camera_info(read_camera_info_yaml(camera_info),
                                           rectified=rectified)
        if (intr.height, intr.width) != (h, w):
            raise DepthError(f"camera_info {camera_info} is for {intr.width}x{intr.height} but "
                             f"the image is {w}x{h}", code="camera_info")
    elif all(given):
        intr = Intrinsics(float(fx), float(fy), float(cx), float(cy), w, h, "given")
    else:
        raise DepthError("depth needs intrinsics: --fx --fy --cx --cy (all four) or "
                         "--camera-info YAML", code="camera_info")
    metres, stats = depth_to_metres(arr, enc)
    return DepthFrame(metres=metres, intrinsics=intr, frame_id="", stamp=0, stats=stats)


def write_ply(path: Path, cloud: np.ndarray) -> int:
    """Binary little-endian PLY of the valid points of a labelled cloud (x y z float,
    red green blue uchar, label ushort, instance int); returns the point count."""
    from plyfile import PlyData, PlyElement

    pts = cloud.reshape(-1)
    pts = pts[np.isfinite(pts["z"])]
    rgb = pts["rgb"].view(np.uint32)
    vert = np.empty(pts.size, [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"),
                               ("green", "u1"), ("blue", "u1"), ("label", "<u2"),
                               ("instance", "<i4")])
    for n in ("x", "y", "z", "label", "instance"):
        vert[n] = pts[n]
    vert["red"], vert["green"], vert["blue"] = rgb >> 16, (rgb >> 8) & 255, rgb & 255
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    PlyData([PlyElement.describe(vert, "vertex")], text=False, byte_order="<").write(str(tmp))
    os.replace(tmp, path)
    return int(pts.size)


__all__ = ["read_depth", "read_camera_info_yaml", "load_depth", "write_ply", "DEPTH_SUFFIXES"]
