"""Builders of the node's output messages from a Prediction (no DDS needed).

Every output carries the input image's header and the input resolution: the
engine's label maps are resized back with nearest-neighbour when an engine
works at another size.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np
from sensor_msgs.msg import CameraInfo, Image, RegionOfInterest

from ..core import palette
from ..core.types import UNLABELED, Prediction, VocabularyState
from .image_conv import array_to_image, resize_to


def first_synonym(name: str) -> str:
    """VocabularyState names join synonyms with ', '; ClassInfo.name is the first one."""
    return name.split(",")[0].strip()


def class_infos(vocab: VocabularyState) -> List:
    from ovseg_ros.msg import ClassInfo

    out = []
    for i, (syns, thing) in enumerate(zip(vocab.synonyms, vocab.is_thing)):
        out.append(ClassInfo(id=i, name=syns[0], synonyms=list(syns), is_thing=bool(thing)))
    return out


def vocabulary_msg(vocab: VocabularyState, engine: str, random_weights: bool, stamp):
    from ovseg_ros.msg import Vocabulary

    msg = Vocabulary()
    msg.header.stamp = stamp
    msg.version = int(vocab.version)
    msg.engine = engine
    msg.random_weights = bool(random_weights)
    msg.classes = class_infos(vocab)
    return msg


def semantic_u16(semantic: np.ndarray, num_classes: int) -> np.ndarray:
    """int32 class ids -> uint16 with UNLABELED (65535) for anything outside the vocabulary."""
    sem = np.asarray(semantic)
    valid = (sem >= 0) & (sem < num_classes)
    return np.where(valid, sem, UNLABELED).astype(np.uint16)


class FrameOutputs:
    """The label maps of one Prediction at the camera resolution."""

    def __init__(self, pred: Prediction, size: Tuple[int, int]):
        self.size = size
        n = len(pred.vocabulary)
        self.semantic = resize_to(semantic_u16(pred.semantic, n), size)
        self.panoptic = resize_to(np.asarray(pred.panoptic, dtype=np.int32), size)
        self.pred = pred
        self._confidence = None

    @property
    def confidence(self) -> np.ndarray:
        if self._confidence is None:
            conf = np.asarray(self.pred.confidence, dtype=np.float32)
            self._confidence = resize_to(conf, self.size, nearest=False)
        return self._confidence


def label_images(out: FrameOutputs, header) -> Tuple[Image, Image]:
    return (array_to_image(out.semantic, "16UC1", header),
            array_to_image(out.panoptic, "32SC1", header))


def confidence_image(out: FrameOutputs, header) -> Image:
    return array_to_image(out.confidence, "32FC1", header)


def overlay_rgb(rgb: np.ndarray, semantic_u16_map: np.ndarray, alpha: float,
                num_classes: int) -> np.ndarray:
    """Blend the stable class colours (ovseg_ros.core.palette) over the camera image;
    unlabelled pixels keep the image."""
    labels = semantic_u16_map.astype(np.int32)
    labels[semantic_u16_map == UNLABELED] = -1   # keeps the palette as long as the vocabulary
    return palette.overlay(rgb, labels, alpha, num_classes)


def draw_banner(rgb: np.ndarray, text: str) -> np.ndarray:
    """Write a warning line (e.g. RANDOM WEIGHTS) across the top of an image."""
    img = np.ascontiguousarray(rgb).copy()
    h, w = img.shape[:2]
    scale = max(0.4, min(w, h) / 800.0)
    thick = max(1, int(round(scale * 2)))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    cv2.rectangle(img, (0, 0), (min(w, tw + 12), th + base + 12), (0, 0, 0), -1)
    cv2.putText(img, text, (6, th + 6), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 64, 64), thick,
                cv2.LINE_AA)
    return img


def _bbox(mask_rows: np.ndarray, mask_cols: np.ndarray) -> Tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask_rows)[0], np.nonzero(mask_cols)[0]
    if len(ys) == 0:
        return 0, 0, 0, 0
    return int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)


def segments_msg(out: FrameOutputs, header):
    """Segments msg at the camera resolution: area and bbox are measured on the
    resized panoptic map so they agree with the published image."""
    from ovseg_ros.msg import Segment, Segments

    pred = out.pred
    msg = Segments()
    msg.header = header
    msg.vocabulary_version = int(pred.vocabulary_version)
    pan = out.panoptic
    ids, counts = np.unique(pan, return_counts=True)
    area: Dict[int, int] = {int(i): int(c) for i, c in zip(ids, counts)}
    resized = pan.shape != np.asarray(pred.panoptic).shape
    segs = []
    for s in sorted(pred.segments, key=lambda s: s.id):
        if s.id not in area:
            continue  # vanished in the resize (smaller than one camera pixel)
        if resized or s.bbox == (0, 0, 0, 0):
            m = pan == s.id
            x, y, w, h = _bbox(m.any(axis=1), m.any(axis=0))
        else:
            x, y, w, h = s.bbox
        cid = int(s.class_id)
        name = first_synonym(pred.vocabulary[cid]) if 0 <= cid < len(pred.vocabulary) else ""
        segs.append(Segment(id=int(s.id), class_id=cid, class_name=name,
                            is_thing=bool(s.is_thing), score=float(s.score),
                            area=area[s.id],
                            bbox=RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h,
                                                  do_rectify=False)))
    msg.segments = segs
    return msg


def camera_info_for(info: CameraInfo, header) -> CameraInfo:
    """The latest camera_info re-stamped with the result's header (for back-projection)."""
    out = CameraInfo()
    out.header = header
    for field in ("height", "width", "distortion_model", "d", "k", "r", "p", "binning_x",
                  "binning_y", "roi"):
        setattr(out, field, getattr(info, field))
    return out


def product_messages(products, header) -> Dict[str, object]:
    """The node's messages of one frame from ``ovseg_ros.core.products.FrameProducts``
    (the one output path shared with bag inference and ovseg-segment): keys
    ``semantic``, ``panoptic``, ``segments`` and, when built, ``colored`` and
    ``confidence``. Every message carries ``header``."""
    from ovseg_ros.msg import Segment, Segments

    out: Dict[str, object] = {
        "semantic": array_to_image(products.semantic, "16UC1", header),
        "panoptic": array_to_image(products.panoptic, "32SC1", header),
    }
    msg = Segments()
    msg.header = header
    msg.vocabulary_version = int(products.vocabulary_version)
    msg.segments = [Segment(id=s["id"], class_id=s["class_id"], class_name=s["class_name"],
                            is_thing=s["is_thing"], score=s["score"], area=s["area"],
                            bbox=RegionOfInterest(x_offset=s["bbox"][0], y_offset=s["bbox"][1],
                                                  width=s["bbox"][2], height=s["bbox"][3],
                                                  do_rectify=False))
                    for s in products.segments]
    out["segments"] = msg
    if products.colored is not None:
        out["colored"] = array_to_image(products.colored, "rgb8", header)
    if products.confidence is not None:
        out["confidence"] = array_to_image(products.confidence, "32FC1", header)
    return out


def class_map_text(names: Sequence[str]) -> str:
    return ", ".join(f"{i}: {n}" for i, n in enumerate(names))
