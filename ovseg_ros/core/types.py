"""Data types shared by the engines, the API, the node and the evaluation tools."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np

# Value of the 16UC1 `semantic` image for pixels without a class.
UNLABELED = 65535


_SEGMENT_KEYS = ("id", "class_id", "is_thing", "score", "area", "bbox")


@dataclass(frozen=True)
class Segment(Mapping):
    """One panoptic segment. ``id`` is its value in ``Prediction.panoptic`` (>= 1).

    ``score`` is the engine's confidence in the segment's class: for FC-CLIP / MAFT+
    the class probability of the query that made it (merged stuff: its best query), for
    ProxyCLIP and OVSeg the mean class probability over the segment's pixels
    (msg/Segment.msg says the same).
    """

    id: int
    class_id: int
    is_thing: bool
    score: float
    area: int
    bbox: Tuple[int, int, int, int] = (0, 0, 0, 0)  # x, y, width, height in pixels

    def as_dict(self) -> dict:
        return {"id": self.id, "class_id": self.class_id, "is_thing": self.is_thing,
                "score": self.score, "area": self.area, "bbox": list(self.bbox)}

    # A read-only mapping of the as_dict() keys: `seg["class_id"]`, `dict(seg)`,
    # `"score" in seg` work as for the message dicts of FrameProducts.segments
    # (docs/architecture.md)
    def __getitem__(self, key: str):
        if key not in _SEGMENT_KEYS:
            raise KeyError(key)
        return list(self.bbox) if key == "bbox" else getattr(self, key)

    def __iter__(self):
        return iter(_SEGMENT_KEYS)

    def __len__(self) -> int:
        return len(_SEGMENT_KEYS)


@dataclass(frozen=True)
class VocabularyState:
    """An applied vocabulary: immutable, swapped as a whole between frames.

    ``embeddings`` holds one L2-normalised text embedding per synonym (S x D,
    float32); ``synonym_class[s]`` is the class index of synonym ``s``.
    """

    names: Tuple[str, ...]               # class strings as given ("sofa,couch")
    synonyms: Tuple[Tuple[str, ...], ...]
    is_thing: Tuple[bool, ...]
    embeddings: "object"                 # torch.Tensor (S, D) float32 on the engine's device
    synonym_class: "object"              # torch.LongTensor (S,)
    version: int = 0                     # increases with every applied change

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def id_to_name(self) -> Dict[int, str]:
        return {i: n for i, n in enumerate(self.names)}


@dataclass
class Prediction:
    """The output of ``Segmenter.predict`` for one HxWx3 RGB frame.

    semantic:   HxW int32 class ids (index into ``vocabulary``; UNLABELED where none)
    confidence: HxW float32 probability of the chosen class, set by the engine
                (streamed over class chunks, no class volume needed); None when the caller
                asked for none (``predict(..., confidence=False)``) and the engine skipped
                it (``skips_confidence``: the segments' scores are then NaN)
    scores:     CxHxW float32 class probabilities (softmax over synonyms, max over each
                class's synonyms), only when asked: ``predict(rgb, scores=True)``; else None
    panoptic:   HxW int32 segment ids (0 = no segment)
    segments:   one Segment per id in ``panoptic``
    embeddings: segment id -> float32 (D,) L2-normalised embedding in the engine's CLIP
                text space, only with ``embeddings.enabled`` (else None)
    notes:      what a limit changed in this frame's processing, one line each, each
                starting "clamped by <setting>=<limit>:" (e.g. an elongated frame resized
                smaller than the engine's short side to stay within proxyclip.max_windows);
                empty for an ordinary frame
    """

    semantic: np.ndarray
    panoptic: np.ndarray
    segments: List[Segment]
    vocabulary: Tuple[str, ...]
    vocabulary_version: int
    random_weights: bool
    engine: str
    confidence: Optional[np.ndarray] = None
    scores: Optional[np.ndarray] = None
    timings: Dict[str, float] = field(default_factory=dict)  # seconds per stage
    #: engine-specific counts of this frame's work (OVSeg: "crops", proposals sent to CLIP)
    counts: Dict[str, int] = field(default_factory=dict)
    embeddings: Optional[Dict[int, np.ndarray]] = None
    notes: Tuple[str, ...] = ()

    @property
    def clamped(self) -> bool:
        """True when a limit scaled this frame below the engine's nominal resize."""
        return any(n.startswith("clamped by ") for n in self.notes)

    def __post_init__(self):
        if self.confidence is None and self.scores is not None:
            # a hand-built prediction with the volume: the confidence follows from it
            self.confidence = self.scores.max(axis=0) if self.scores.size else \
                np.zeros(np.shape(self.semantic), np.float32)
