"""Open-set queries over remembered frames: which recent segment matches "red mug"?

The query text is embedded like a vocabulary class (the engine's text encoder, its
templates and the disk cache of ``core/text_cache.py``), with a small LRU of its own in
front so a repeated query costs no encoding and no cache lookup. Every segment
embedding of the selected cameras' latest frames is scored by its cosine with the
query; the best ``top_k`` come back, best first. The vocabulary does not change and
the image model does not run.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

MAX_QUERY_LENGTH = 200
MAX_TOP_K = 100


class LocateError(ValueError):
    """A locate request cannot be answered; the message names the fact and the limit."""


@dataclass(frozen=True)
class LocateFrame:
    """What a camera remembers of its latest frame for ``locate``.

    segments:   the frame's segments (``core.types.Segment``, ids as published)
    embeddings: segment id -> unit vector (None: the frame has none, embeddings off)
    vocabulary: the class names the segments' class ids index
    centroids:  segment id -> (x, y, z) [m] in the camera frame, when depth was paired
    """

    camera: str
    stamp: float
    segments: Sequence
    embeddings: Optional[Mapping[int, np.ndarray]]
    vocabulary: Sequence[str]
    centroids: Optional[Mapping[int, Sequence[float]]] = None


@dataclass(frozen=True)
class LocatedSegment:
    """One answer (msg/LocatedSegment.msg field for field)."""

    camera: str
    stamp: float
    id: int
    class_id: int
    class_name: str
    score: float                         # cosine of the segment and query embeddings
    class_score: float                   # Segment.score
    bbox: Tuple[int, int, int, int]
    centroid: Optional[Tuple[float, float, float]] = None


def check_query(query) -> str:
    """The query stripped, or LocateError: a non-empty printable string of at most 200
    characters."""
    if not isinstance(query, str):
        raise LocateError(f"query must be text, got {type(query).__name__}")
    text = query.strip()
    if not text:
        raise LocateError("query is empty; give a free-text description such as 'red mug'")
    if len(text) > MAX_QUERY_LENGTH:
        raise LocateError(f"query has {len(text)} characters, more than the limit of "
                          f"{MAX_QUERY_LENGTH}")
    if not text.isprintable():
        raise LocateError("query contains non-printable (binary or control) characters")
    return text


def check_top_k(top_k) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)):
        raise LocateError(f"top_k must be an integer, got {top_k!r}")
    if not 1 <= int(top_k) <= MAX_TOP_K:
        raise LocateError(f"top_k must be in 1..{MAX_TOP_K}, got {int(top_k)}")
    return int(top_k)


def select_frames(frames: Mapping[str, Optional[LocateFrame]], camera: str
                  ) -> List[LocateFrame]:
    """The frames to search: every camera's for ``camera == ""`` (a node whose only camera
    is the unnamed one has the camera ""), else that camera's. LocateError for an unknown
    camera, a camera without a frame yet, or frames without embeddings."""
    if not isinstance(camera, str):
        raise LocateError(f"camera must be a name, got {type(camera).__name__}")
    if camera and camera not in frames:
        raise LocateError(f"camera {camera!r} does not exist; cameras: "
                          f"{sorted(frames) or 'none'}")
    names = [camera] if camera or not frames else list(frames)
    chosen = [frames[c] for c in names if frames.get(c) is not None]
    if not chosen:
        which = f"camera {camera!r}" if camera else f"any camera ({sorted(frames)})"
        raise LocateError(f"no frame yet from {which}: nothing to search")
    if all(f.embeddings is None for f in chosen):
        raise LocateError("the remembered frames carry no segment embeddings: set "
                          "embeddings.enabled to true")
    return chosen


class Locator:
    """Scores remembered frames against a text query; thread-safe."""

    def __init__(self, embed_text: Callable[[str], np.ndarray], cache_entries: int = 64):
        self._embed_text = embed_text
        self._cache: "OrderedDict[str, np.ndarray]" = OrderedDict()
        self._entries = cache_entries
        self._lock = threading.Lock()
        #: queries encoded (not answered from the LRU) over this locator's life
        self.encoded = 0

    def query_embedding(self, query: str) -> np.ndarray:
        text = check_query(query)
        with self._lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                return hit
        vec = np.asarray(self._embed_text(text), np.float32).ravel()
        vec = vec / max(float(np.linalg.norm(vec)), 1e-12)
        with self._lock:
            self.encoded += 1
            self._cache[text] = vec
            while len(self._cache) > self._entries:
                self._cache.popitem(last=False)
        return vec

    def locate(self, query: str, frames: Mapping[str, Optional[LocateFrame]], top_k: int = 5,
               camera: str = "") -> List[LocatedSegment]:
        """The ``top_k`` best-matching segments of the selected frames, best first."""
        top_k = check_top_k(top_k)
        chosen = select_frames(frames, camera)
        q = self.query_embedding(query)
        rows, owners = [], []
        for frame in chosen:
            if frame.embeddings is None:
                continue
            for seg in frame.segments:
                emb = frame.embeddings.get(seg["id"])
                if emb is not None:
                    rows.append(emb)
                    owners.append((frame, seg))
        if not rows:
            return []
        mat = np.asarray(rows, np.float32)
        if mat.shape[1] != q.shape[0]:
            raise LocateError(f"segment embeddings have {mat.shape[1]} dimensions, the query "
                              f"{q.shape[0]}: they come from another CLIP model")
        scores = mat @ q
        k = min(top_k, scores.size)
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.argsort(-scores[best], kind="stable")]
        out = []
        for i in best.tolist():
            frame, seg = owners[i]
            sid, cls = int(seg["id"]), int(seg["class_id"])
            cen = None if frame.centroids is None else frame.centroids.get(sid)
            name = frame.vocabulary[cls] if 0 <= cls < len(frame.vocabulary) else ""
            out.append(LocatedSegment(
                camera=frame.camera, stamp=frame.stamp, id=sid, class_id=cls, class_name=name,
                score=float(scores[i]), class_score=float(seg["score"]),
                bbox=tuple(int(v) for v in seg["bbox"]),
                centroid=None if cen is None else tuple(float(v) for v in cen)))
        return out


__all__ = ["Locator", "LocateFrame", "LocatedSegment", "LocateError", "check_query",
           "check_top_k", "select_frames", "MAX_QUERY_LENGTH", "MAX_TOP_K"]
