"""The published products of one frame, built once for every output path.

The node (``ovseg_ros/ros/messages.py`` turns ``FrameProducts`` into messages),
bag-to-bag inference (``ovseg_ros/eval/bag_infer.py``) and ``ovseg-segment``
all call ``build_products``, so a recorded bag or a PNG holds exactly what the
live node publishes:

    semantic    H x W uint16; ids outside the vocabulary and unlabelled pixels -> 65535
    panoptic    H x W int32 segment ids (0 = none)
    confidence  H x W float32 probability of the chosen class, or None
    segments    dicts: id, class_id, class_name, is_thing, score, area, bbox [x, y, w, h]
    colored     H x W x 3 rgb8 overlay (stable colour per class id, core/palette.py),
                with a RANDOM WEIGHTS banner when the weights are random; or None
    cloud       labelled point cloud (core/geometry.py CLOUD_DTYPE) or None
    segments_3d dicts: id, class_id, class_name, is_thing, score, centroid [x, y, z],
                size [x, y, z], valid_points, depth_min, depth_max; or None
                (both only with ``depth``, a registered DepthFrame: core/products_3d.py)
    embeddings  segment id -> float32 unit vector of every published segment, when
                ``embeddings`` is wanted and the prediction has them; or None

H x W is the size of ``rgb`` (the camera image): label maps computed at another
size are resized with nearest neighbour, the confidence bilinearly, and segment
areas and boxes are measured on the resized panoptic map.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Dict, List, Optional, Sequence

import numpy as np

from . import palette
from .outputs import PRODUCT_KEYS, check_keys
from .products_3d import build_3d
from .types import UNLABELED, Prediction

#: the banner drawn across overlays made with random weights
RANDOM_WEIGHTS_BANNER = "RANDOM WEIGHTS - labels are meaningless"


@dataclass
class FrameProducts:
    semantic: np.ndarray
    panoptic: np.ndarray
    confidence: Optional[np.ndarray]
    segments: List[dict]
    colored: Optional[np.ndarray]
    vocabulary_version: int
    random_weights: bool
    cloud: Optional[np.ndarray] = None
    segments_3d: Optional[List[dict]] = None
    embeddings: Optional[Dict[int, np.ndarray]] = None

    @property
    def size(self):
        return self.semantic.shape[:2]


def first_synonym(name: str) -> str:
    """Vocabulary names join synonyms with ', '; a class is shown by its first one."""
    return name.split(",")[0].strip()


def semantic_u16(semantic: np.ndarray, num_classes: int) -> np.ndarray:
    """The one rule: class ids outside [0, num_classes) (UNLABELED included) -> 65535."""
    sem = np.asarray(semantic)
    if sem.ndim != 2:
        raise ValueError(f"semantic must be H x W, got shape {sem.shape}")
    if sem.dtype == np.int32 and 0 <= num_classes < UNLABELED:
        # one compare and one cast: negative ids read as unsigned are >= 2**31
        u = sem.view(np.uint32)
        out = u.astype(np.uint16)
        out[u >= num_classes] = UNLABELED
        return out
    valid = (sem >= 0) & (sem < num_classes)
    return np.where(valid, sem, UNLABELED).astype(np.uint16)


def resize_labels(labels: np.ndarray, size) -> np.ndarray:
    """A label map at ``size`` (H, W) by nearest neighbour, as the products resize it."""
    return _resize(labels, size, nearest=True)


def _resize(arr: np.ndarray, size, nearest: bool) -> np.ndarray:
    import cv2

    h, w = size
    if arr.shape[:2] == (h, w):
        return arr
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(arr, (w, h), interpolation=interp)


def draw_banner(rgb: np.ndarray, text: str = RANDOM_WEIGHTS_BANNER) -> np.ndarray:
    """Write a warning line (e.g. RANDOM WEIGHTS) across the top of an image (a copy)."""
    import cv2

    img = np.ascontiguousarray(rgb).copy()
    h, w = img.shape[:2]
    scale = max(0.4, min(w, h) / 800.0)
    thick = max(1, int(round(scale * 2)))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    cv2.rectangle(img, (0, 0), (min(w, tw + 12), th + base + 12), (0, 0, 0), -1)
    cv2.putText(img, text, (6, th + 6), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 64, 64), thick,
                cv2.LINE_AA)
    return img


def overlay_u16(rgb: np.ndarray, semantic: np.ndarray, alpha: float,
                num_classes: int) -> np.ndarray:
    """Class colours over the image from a uint16 semantic map; 65535 keeps the image."""
    return palette.overlay_u16(rgb, semantic, alpha, num_classes)


def _areas(panoptic: np.ndarray) -> dict:
    """Pixels per segment id. Ids of one frame are few and small: an 8-bit histogram
    (OpenCV, 0.25 ms at 640 x 480) where they fit, else a sort (np.unique, 0.8 ms;
    np.bincount measured slower still)."""
    if 0 < panoptic.size < (1 << 24):       # calcHist counts in float32: exact below 2**24
        lo, hi = int(panoptic.min()), int(panoptic.max())
        if lo >= 0 and hi < 256:
            import cv2

            hist = cv2.calcHist([panoptic.astype(np.uint8)], [0], None, [hi + 1], [0, hi + 1])
            counts = hist.ravel()
            return {int(i): int(counts[i]) for i in np.flatnonzero(counts)}
    ids, counts = np.unique(panoptic, return_counts=True)
    return {int(i): int(c) for i, c in zip(ids, counts)}


def _segments(pred: Prediction, panoptic: np.ndarray, names: Sequence[str],
              resized: bool) -> List[dict]:
    area = _areas(panoptic)
    out = []
    for s in sorted(pred.segments, key=lambda s: s.id):
        if s.id not in area:
            continue          # vanished in the resize (smaller than one output pixel)
        if resized or tuple(s.bbox) == (0, 0, 0, 0):
            m = panoptic == s.id
            ys, xs = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
            bbox = [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)]
        else:
            bbox = [int(v) for v in s.bbox]
        cid = int(s.class_id)
        name = first_synonym(names[cid]) if 0 <= cid < len(names) else ""
        out.append({"id": int(s.id), "class_id": cid, "class_name": name,
                    "is_thing": bool(s.is_thing), "score": float(s.score),
                    "area": area[s.id], "bbox": bbox})
    return out


def embedding_rows(embeddings: Dict[int, np.ndarray]):
    """``FrameProducts.embeddings`` as the SegmentEmbeddings message carries them:
    (ids in ascending order, dim, little-endian float16 rows as bytes). Half precision
    halves the bandwidth; a unit vector's cosine moves by about 1e-3 at most."""
    ids = sorted(embeddings)
    if not ids:
        return [], 0, b""
    rows = np.stack([np.asarray(embeddings[i], np.float32) for i in ids])
    return [int(i) for i in ids], int(rows.shape[1]), rows.astype("<f2").tobytes()


#: outputs whose content needs no confidence: the labels, the ids, the overlay, the cloud
#: (every other carries the confidence or the segments' scores, its per-segment means)
WITHOUT_CONFIDENCE = frozenset({"semantic", "panoptic", "colored", "points", "camera_info"})


def needs_confidence(wanted: Collection[str], *, tracking: bool, embeddings: bool) -> bool:
    """Whether a frame whose ``wanted`` outputs are these needs the engine's confidence:
    an output that carries it or the segments' scores, or a tracker (its label votes are
    the scores) or segment embeddings (``locate`` ranks with the scores)."""
    return tracking or embeddings or not set(wanted) <= WITHOUT_CONFIDENCE


def build_products(pred: Prediction, rgb: np.ndarray, names: Sequence[str], *,
                   overlay_alpha: float, random_weights: bool,
                   wanted: Optional[Collection[str]] = None, depth=None,
                   cloud_stride: int = 1, stats_3d: Optional[list] = None) -> FrameProducts:
    """Everything published for one frame, at the size of ``rgb`` (see the module doc).

    ``names``: the vocabulary's class names (``pred.vocabulary``). ``wanted``: keys of the
    outputs table (``core/outputs.py``) to build, None for every one; ``colored`` and
    ``confidence`` not wanted stay None (the costly ones), ``semantic``, ``panoptic`` and
    ``segments`` are always built (the others derive from them). ``depth``: a registered
    ``DepthFrame`` for the 3D products (``points``, ``segments_3d``, ``markers``;
    ``core/products_3d.py``); ``cloud_stride``: keep every n-th row and column of the
    organised cloud; ``stats_3d``: the segments' ``geometry.segment_stats`` already computed
    for this panoptic map (CameraOutputs computes them once for the tracker)."""
    wanted = PRODUCT_KEYS if wanted is None else check_keys(wanted)
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be an H x W x 3 uint8 image, got {rgb.shape} {rgb.dtype}")
    if not 0.0 <= overlay_alpha <= 1.0:
        raise ValueError(f"overlay_alpha must be in [0, 1], got {overlay_alpha}")
    size = rgb.shape[:2]
    n = len(names)
    sem = _resize(semantic_u16(pred.semantic, n), size, nearest=True)
    pan_src = np.asarray(pred.panoptic, dtype=np.int32)
    pan = _resize(pan_src, size, nearest=True)
    conf = None
    if "confidence" in wanted:
        if pred.confidence is None:
            raise ValueError("the confidence output is wanted but the prediction holds no "
                             "confidence (predicted with confidence=False)")
        conf = _resize(np.asarray(pred.confidence, dtype=np.float32), size, nearest=False)
    segments = _segments(pred, pan, names, resized=pan.shape != pan_src.shape)
    col = None
    if "colored" in wanted:
        col = overlay_u16(rgb, sem, overlay_alpha, n)
        if random_weights:
            col = draw_banner(col, RANDOM_WEIGHTS_BANNER)
    products = FrameProducts(semantic=sem, panoptic=pan, confidence=conf, segments=segments,
                             colored=col, vocabulary_version=int(pred.vocabulary_version),
                             random_weights=bool(random_weights))
    if "embeddings" in wanted and pred.embeddings is not None:
        products.embeddings = {s["id"]: pred.embeddings[s["id"]] for s in segments
                               if s["id"] in pred.embeddings}
    build_3d(products, depth, wanted, rgb=rgb, stride=cloud_stride, stats=stats_3d)
    return products


__all__ = ["FrameProducts", "build_products", "WITHOUT_CONFIDENCE", "needs_confidence",
            "resize_labels", "embedding_rows", "semantic_u16",
           "draw_banner", "overlay_u16", "first_synonym", "RANDOM_WEIGHTS_BANNER"]
