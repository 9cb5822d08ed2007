"""A SYNTHETIC RGB-D scene with exact geometry: the sample RGB-D bag and the 3D tests.

A pinhole camera (``K``: 640 x 480, fx = fy = 525, cx = 319.5, cy = 239.5, no
distortion) looks at a back wall (plane z = WALL_Z), a floor (plane y = FLOOR_Y, the
optical frame's y points down) and fronto-parallel rectangular boards (the "boxes":
centre (x, y, z), width, height) that drift a little from frame to frame. Depth is ray
cast per pixel (nearest surface), so every pixel's depth is the exact surface depth;
board depths are whole millimetres, so the 16UC1 (mm) and 32FC1 (m) images of a frame
hold the same values and give the same cloud (the floor's depth is rounded to the mm in
both, for the same reason). Labels are exact: class id per pixel and a panoptic id per
board (wall and floor are stuff).

The ground truth of a board is its centre: the per-axis median of a fronto-parallel
rectangle's points sampled on the pixel grid is its centre to within half a pixel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

import numpy as np

WIDTH, HEIGHT = 640, 480
FX = FY = 525.0
CX, CY = 319.5, 239.5
WALL_Z = 5.0
FLOOR_Y = 1.0
CLASSES = ("wall", "floor", "box")
#: (x, y, z, width, height) of the boards in frame 0, metres; z in whole mm
BOARDS = ((-0.60, 0.05, 2.000, 0.30, 0.30), (0.15, -0.20, 2.500, 0.40, 0.25),
          (0.70, 0.30, 3.200, 0.50, 0.50))
#: board drift per frame (x, y), metres
DRIFT = ((0.02, 0.0), (-0.015, 0.01), (0.0, -0.02))
COLOURS = {"wall": (200, 200, 190), "floor": (120, 100, 80)}
BOARD_COLOURS = ((220, 60, 50), (50, 160, 220), (240, 200, 40))


@dataclass(frozen=True)
class Board:
    id: int          # panoptic segment id
    x: float
    y: float
    z: float
    width: float
    height: float


def camera_k() -> np.ndarray:
    return np.array([[FX, 0, CX], [0, FY, CY], [0, 0, 1.0]])


def boards(frame: int) -> List[Board]:
    return [Board(i + 1, x + DRIFT[i][0] * frame, y + DRIFT[i][1] * frame, z, w, h)
            for i, (x, y, z, w, h) in enumerate(BOARDS)]


def render(frame: int, width: int = WIDTH, height: int = HEIGHT,
           fx: float = FX, fy: float = FY, cx: float = CX, cy: float = CY
           ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, List[Board]]:
    """(rgb uint8, depth_mm uint16, semantic uint16, panoptic int32, boards) of a frame."""
    ru = ((np.arange(width) - cx) / fx)[None, :]
    rv = ((np.arange(height) - cy) / fy)[:, None]
    z = np.full((height, width), WALL_Z)
    sem = np.zeros((height, width), np.uint16)                 # wall
    pan = np.zeros((height, width), np.int32)
    with np.errstate(divide="ignore"):
        zf = np.where(rv > 0, FLOOR_Y / np.where(rv > 0, rv, 1.0), np.inf)
    floor = np.broadcast_to(zf < z, z.shape)
    z = np.where(floor, np.broadcast_to(zf, z.shape), z)
    sem[floor] = 1
    bs = boards(frame)
    for b in sorted(bs, key=lambda b: -b.z):                   # far to near: near wins
        x, y = ru * b.z, rv * b.z
        hit = ((np.abs(x - b.x) <= b.width / 2) & (np.abs(y - b.y) <= b.height / 2)
               & (b.z < z))
        z[hit] = b.z
        sem[hit] = 2
        pan[hit] = b.id
    depth_mm = np.round(z * 1000.0).astype(np.uint16)
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[sem == 0] = COLOURS["wall"]
    rgb[sem == 1] = COLOURS["floor"]
    for b in bs:
        rgb[pan == b.id] = BOARD_COLOURS[(b.id - 1) % len(BOARD_COLOURS)]
    rng = np.random.default_rng(frame)
    rgb = np.clip(rgb.astype(np.int16) + rng.integers(-8, 9, rgb.shape), 0, 255).astype(np.uint8)
    return rgb, depth_mm, sem, pan, bs


def depth_32f(depth_mm: np.ndarray) -> np.ndarray:
    """The 32FC1 (metres) image of the same depth (0 mm -> NaN)."""
    m = depth_mm.astype(np.float32) / np.float32(1000.0)
    m[depth_mm == 0] = np.nan
    return m


def ground_truth(frames: int) -> dict:
    """The sample's ground truth (JSON-ready): camera, classes and board centres per frame."""
    return {"camera": {"width": WIDTH, "height": HEIGHT, "fx": FX, "fy": FY, "cx": CX,
                       "cy": CY, "frame": "optical (x right, y down, z forward), metres"},
            "classes": list(CLASSES), "wall_z": WALL_Z, "floor_y": FLOOR_Y,
            "frames": [[{"id": b.id, "class": "box", "centre": [b.x, b.y, b.z],
                         "size": [b.width, b.height, 0.0]} for b in boards(k)]
                       for k in range(frames)]}


__all__ = ["render", "boards", "Board", "camera_k", "depth_32f", "ground_truth", "CLASSES",
           "WIDTH", "HEIGHT", "FX", "FY", "CX", "CY"]
