"""The node's output messages (no DDS needed).

``product_messages`` turns ``ovseg_ros.core.products.FrameProducts`` (the one
output path shared with bag inference and ``ovseg-segment``, already at the
camera resolution) into messages carrying the input image's header; the
vocabulary message, class infos and the re-stamped camera_info are built here too.
"""
from __future__ import annotations

from typing import Collection, Dict, List, Optional, Sequence

from sensor_msgs.msg import CameraInfo, RegionOfInterest

from ..core.outputs import OUTPUTS
from ..core.products import embedding_rows
from ..core.types import VocabularyState
from .image_conv import array_to_image


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


def camera_info_for(info: CameraInfo, header) -> CameraInfo:
    """The latest camera_info re-stamped with the result's header (for back-projection)."""
    out = CameraInfo()
    out.header = header
    for field in ("height", "width", "distortion_model", "d", "k", "r", "p", "binning_x",
                  "binning_y", "roi"):
        setattr(out, field, getattr(info, field))
    return out


def product_messages(products, header, keys: Optional[Collection[str]] = None, *,
                     space: str = "") -> Dict[str, object]:
    """The node's messages of one frame from ``ovseg_ros.core.products.FrameProducts``
    (the one output path shared with bag inference and ovseg-segment): one per row of the
    outputs table (``core/outputs.py``) that the products hold, only those in ``keys``
    when given. Every message carries ``header``; ``space``: the embeddings' CLIP text
    space (``Segmenter.embedding_space``)."""
    out: Dict[str, object] = {}
    for row in OUTPUTS:
        if keys is not None and row.key not in keys:
            continue
        if row.encoding:
            array = getattr(products, row.key, None)
            if array is not None:      # colored / confidence when built
                out[row.key] = array_to_image(array, row.encoding, header)
        elif row.key == "segments":
            out["segments"] = segments_msg(products, header)
        elif row.key == "embeddings" and products.embeddings is not None:
            out["embeddings"] = embeddings_msg(products, header, space)
    return out


def embeddings_msg(products, header, space: str):
    """ovseg_ros/SegmentEmbeddings: one float16 row per published segment."""
    from ovseg_ros.msg import SegmentEmbeddings

    ids, dim, data = embedding_rows(products.embeddings)
    msg = SegmentEmbeddings()
    msg.header = header
    msg.vocabulary_version = int(products.vocabulary_version)
    msg.space = space
    msg.dtype = "float16"
    msg.dim = dim
    msg.ids = ids
    msg.data = data
    return msg


def segments_msg(products, header):
    from ovseg_ros.msg import Segment, Segments

    msg = Segments()
    msg.header = header
    msg.vocabulary_version = int(products.vocabulary_version)
    msg.segments = [Segment(id=s["id"], class_id=s["class_id"], class_name=s["class_name"],
                            is_thing=s["is_thing"], score=s["score"], area=s["area"],
                            bbox=RegionOfInterest(x_offset=s["bbox"][0], y_offset=s["bbox"][1],
                                                  width=s["bbox"][2], height=s["bbox"][3],
                                                  do_rectify=False))
                    for s in products.segments]
    return msg


def located_segment_msg(found, header):
    """ovseg_ros/LocatedSegment from ``core.locate.LocatedSegment`` and its frame's header."""
    from geometry_msgs.msg import Point

    from ovseg_ros.msg import LocatedSegment

    x, y, w, h = found.bbox
    msg = LocatedSegment(camera=found.camera, header=header, id=int(found.id),
                         class_id=int(found.class_id), class_name=found.class_name,
                         score=float(found.score), class_score=float(found.class_score),
                         bbox=RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h,
                                               do_rectify=False),
                         has_3d=found.centroid is not None)
    if found.centroid is not None:
        msg.centroid = Point(x=float(found.centroid[0]), y=float(found.centroid[1]),
                             z=float(found.centroid[2]))
    return msg


def class_map_text(names: Sequence[str]) -> str:
    return ", ".join(f"{i}: {n}" for i, n in enumerate(names))
