"""A synthetic tracking sequence with exact instance ground truth, and mask noise.

Drawn shapes (not photographs) move at constant velocity over a textured background,
painted far to near, so the ground truth is exact: per frame the visible instance id of
every pixel (0 = background). The script is the scenario of the tracking tests and of
``ovseg-eval tracking``:

* two discs of one class cross, the nearer one hiding most of the other;
* a square passes behind a static pillar and is fully hidden for a few frames;
* a triangle crosses the square's path diagonally;
* the pillar (a thing that does not move) and one stuff region (the floor).

``occluded`` lists, per frame, the instances hidden (fully, or below half their area)
there or in the previous frames of the same occlusion: an id switch is expected only
next to those frames.

``perturb`` turns ground-truth masks into realistic detector noise: erosion,
dilation, a split of an object into two segments, or a merge of touching objects.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Set, Tuple

import cv2
import numpy as np

from ..core.types import Segment

CLASSES = ("disc", "square", "triangle", "pillar", "floor")
IS_THING = (True, True, True, True, False)
FLOOR = 4


@dataclass
class SequenceFrame:
    rgb: np.ndarray                       # H x W x 3 uint8
    instances: np.ndarray                 # H x W int32 ground-truth instance id, 0 = none
    classes: Dict[int, int]               # instance id -> class id (floor included)
    occluded: Set[int] = field(default_factory=set)   # ids hidden now or just before


@dataclass(frozen=True)
class _Object:
    id: int
    cls: int
    shape: str
    start: Tuple[float, float]
    velocity: Tuple[float, float]
    size: int
    depth: float                           # larger = nearer (painted later)
    colour: Tuple[int, int, int]


OBJECTS = (
    _Object(1, 0, "disc", (30.0, 90.0), (5.0, 0.0), 22, 1.0, (220, 60, 60)),
    _Object(2, 0, "disc", (290.0, 100.0), (-5.0, 0.0), 24, 2.0, (200, 80, 40)),
    _Object(3, 1, "square", (40.0, 185.0), (4.0, 0.0), 28, 1.0, (40, 160, 220)),
    _Object(4, 2, "triangle", (260.0, 20.0), (-2.0, 4.0), 26, 1.5, (60, 200, 90)),
    _Object(5, 3, "pillar", (160.0, 185.0), (0.0, 0.0), 0, 3.0, (120, 120, 120)),
)
FLOOR_ID = 6


def _draw(obj: _Object, t: int, h: int, w: int) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    cx, cy = obj.start[0] + obj.velocity[0] * t, obj.start[1] + obj.velocity[1] * t
    r = obj.size
    if obj.shape == "disc":
        cv2.circle(mask, (int(round(cx)), int(round(cy))), r, 1, -1)
    elif obj.shape == "square":
        cv2.rectangle(mask, (int(cx - r), int(cy - r)), (int(cx + r), int(cy + r)), 1, -1)
    elif obj.shape == "triangle":
        pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
        cv2.fillPoly(mask, [pts], 1)
    else:   # pillar: a tall static bar
        cv2.rectangle(mask, (int(cx - 40), int(cy - 60)), (int(cx + 40), int(cy + 50)), 1, -1)
    return mask.astype(bool)


def synthetic_sequence(frames: int = 60, size: Tuple[int, int] = (240, 320),
                       seed: int = 0) -> List[SequenceFrame]:
    """The sequence described in the module docstring (deterministic for a seed)."""
    h, w = size
    rng = np.random.default_rng(seed)
    background = rng.integers(90, 140, (h, w, 3), dtype=np.uint8)
    floor = np.zeros((h, w), bool)
    floor[int(h * 0.8):] = True
    out: List[SequenceFrame] = []
    hidden_run: Dict[int, int] = {}
    for t in range(frames):
        rgb = background.copy()
        rgb[floor] = (150, 130, 100)
        inst = np.where(floor, FLOOR_ID, 0).astype(np.int32)
        masks = {}
        for obj in sorted(OBJECTS, key=lambda o: o.depth):
            m = _draw(obj, t, h, w)
            masks[obj.id] = m
            rgb[m] = obj.colour
            inst[m] = obj.id
        classes = {FLOOR_ID: FLOOR}
        occluded: Set[int] = set()
        for obj in OBJECTS:
            drawn = int(masks[obj.id].sum())
            visible = int((inst == obj.id).sum())
            if visible:
                classes[obj.id] = obj.cls
            if drawn and visible < 0.5 * drawn:
                hidden_run[obj.id] = 3          # this frame and the next two count as occlusion
            if hidden_run.get(obj.id, 0) > 0:
                occluded.add(obj.id)
                hidden_run[obj.id] -= 1
        out.append(SequenceFrame(rgb=rgb, instances=inst, classes=classes, occluded=occluded))
    return out


def _bbox(mask: np.ndarray) -> Tuple[int, int, int, int]:
    x, y, bw, bh = cv2.boundingRect(mask.astype(np.uint8))
    return int(x), int(y), int(bw), int(bh)


def frame_segments(instances: np.ndarray, classes: Dict[int, int], rng=None, *,
                   keep_ids: bool = False, is_thing: Sequence[bool] = IS_THING
                   ) -> Tuple[np.ndarray, List[Segment]]:
    """(panoptic, segments) of a ground-truth frame. By default the ids are frame-local and
    in a random order, the way an engine numbers its segments (the tracker must not see
    the true ids); ``keep_ids`` keeps the instance ids (the ground truth itself)."""
    ids = [i for i in np.unique(instances).tolist() if i]
    if keep_ids:
        order = ids
    else:
        order = ((rng or np.random.default_rng(0)).permutation(len(ids)) + 1).tolist()
    panoptic = instances.astype(np.int32) if keep_ids else np.zeros_like(instances, np.int32)
    segments = []
    for inst_id, seg_id in zip(ids, order):
        m = instances == inst_id
        if not keep_ids:
            panoptic[m] = seg_id
        cls = classes[inst_id]
        segments.append(Segment(id=seg_id, class_id=cls, is_thing=bool(is_thing[cls]),
                                score=1.0, area=int(m.sum()), bbox=_bbox(m)))
    return panoptic, segments


NOISE = ("none", "erode", "dilate", "split", "merge")


def perturb(instances: np.ndarray, classes: Dict[int, int], kind: str,
            rng: np.random.Generator, pixels: int = 2, prob: float = 0.2
            ) -> Tuple[np.ndarray, Dict[int, int]]:
    """Detector-like noise on a ground-truth instance map (ids of new pieces above the
    old maximum): ``erode``/``dilate`` every thing mask by ``pixels``; ``split``: with
    probability ``prob`` per object, cut it in two segments at its centre column;
    ``merge``: with probability ``prob``, touching objects of a frame become one segment."""
    if kind not in NOISE:
        raise ValueError(f"noise must be one of {NOISE}, got {kind!r}")
    out = instances.copy()
    classes = dict(classes)
    ids = [i for i in np.unique(instances).tolist() if i and i != FLOOR_ID]
    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    if kind == "erode":
        for i in ids:
            m = instances == i
            out[m & ~cv2.erode(m.astype(np.uint8), kernel).astype(bool)] = 0
    elif kind == "dilate":
        for i in ids:
            grown = cv2.dilate((instances == i).astype(np.uint8), kernel).astype(bool)
            out[grown & ((out == 0) | (out == FLOOR_ID))] = i
    elif kind == "split":
        nxt = int(instances.max()) + 1
        for i in ids:
            if rng.random() < prob:
                ys, xs = np.nonzero(instances == i)
                right = (instances == i) & (np.arange(instances.shape[1])[None] >= xs.mean())
                out[right] = nxt
                classes[nxt] = classes[i]
                nxt += 1
    elif kind == "merge":
        for i in ids:
            m = cv2.dilate((out == i).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
            touching = [j for j in np.unique(out[m]).tolist() if j not in (0, i, FLOOR_ID)]
            if touching and rng.random() < prob:
                out[out == touching[0]] = i
    return out, classes


__all__ = ["CLASSES", "IS_THING", "SequenceFrame", "synthetic_sequence", "frame_segments",
           "perturb", "NOISE", "OBJECTS", "FLOOR_ID"]
