"""The contract every engine implements (see ovseg_ros/engines/proxyclip.py)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from ..config import Config
from ..core.text_cache import OpenClipTextEncoder
from ..core.types import Prediction, VocabularyState


def graph_settings(cfg: Config, group: str) -> Dict[str, Any]:
    """The settings of an engine's config group that may be baked into its exported graph.

    Runtime-changeable keys (thresholds applied after the image path) are
    left out so changing them never invalidates a cached graph. Keys that only
    steer pre-processing are kept too: a spurious rebuild is cheap, a stale
    graph is wrong. The engine passes them to its backend in its ExportSpec.
    """
    from ..config import SCHEMA

    prefix = group + "."
    return {k: v for k, v in cfg.as_dict().items()
            if k.startswith(prefix) and not SCHEMA[k].runtime}


class Engine(ABC):
    """Image path and text encoder of one segmentation method.

    The vocabulary never enters the image path: ``predict`` receives the
    applied VocabularyState (text embeddings already computed and cached by
    the Segmenter), so changing classes never rebuilds an engine.
    """

    #: registry name
    name: str = ""
    #: template set used when the config says prompt_templates: default
    default_templates: str = "imagenet80"

    def __init__(self, cfg: Config):
        self.cfg = cfg
        #: True when any weights are randomly initialised (config random_init)
        self.random_weights = bool(cfg["random_init"])

    @abstractmethod
    def text_encoder_id(self) -> str:
        """Identity of the text encoder for the embedding cache key: model name
        plus a hash/identity of its weights (tag, file hash, or 'random:<seed>')."""

    @abstractmethod
    def encode_prompts(self, prompts: List[str]):
        """Encode full prompt strings -> torch.Tensor (N, D) float32, each row L2-normalised."""

    @abstractmethod
    def predict(self, rgb: np.ndarray, vocab: VocabularyState, scores: bool = False
                ) -> Prediction:
        """Segment one validated HxWx3 uint8 RGB frame with the given vocabulary.

        Sets ``semantic`` and ``confidence`` without forming the C x H x W volume
        (``ovseg_ros.core.postprocess``); ``Prediction.scores`` only when ``scores``."""

    def make_prediction(self, semantic, confidence, scores, panoptic, segments,
                        vocab: VocabularyState, timings: dict,
                        embeddings: Optional[Dict[int, np.ndarray]] = None,
                        notes: Tuple[str, ...] = ()) -> Prediction:
        """A Prediction stamped with this engine's name, weights state and the vocabulary used;
        ``notes`` says which limits changed the frame's processing (a clamped resize)."""
        return Prediction(semantic=semantic, confidence=confidence, scores=scores,
                          panoptic=panoptic, segments=segments, vocabulary=vocab.names,
                          vocabulary_version=vocab.version, random_weights=self.random_weights,
                          engine=self.name, timings=timings, embeddings=embeddings,
                          notes=tuple(notes))

    @property
    def embeddings_enabled(self) -> bool:
        """``embeddings.enabled``: segment embeddings are computed only then (zero cost off)."""
        return bool(self.cfg["embeddings.enabled"])

    def predict_batch(self, rgbs: List[np.ndarray], vocab: VocabularyState,
                      scores: bool = False) -> List[Prediction]:
        """Segment several frames with one vocabulary. Engines whose image model can
        take the frames as one batch override this; the result must equal ``predict``
        on each frame."""
        return [self.predict(rgb, vocab, scores=scores) for rgb in rgbs]

    def update_runtime(self, cfg: Config) -> None:
        """Take new values of runtime-changeable settings (thresholds)."""
        self.cfg = cfg

    #: (stage, runs in the configured precision on the eager torch backend) in pipeline
    #: order; False: the stage stays fp32 whatever ``precision`` says
    precision_stages: Tuple[Tuple[str, bool], ...] = (("image", True),)

    def stage_precision(self) -> Dict[str, str]:
        """The arithmetic each stage runs in, for diagnostics and benchmarks. Exported
        graphs (onnxruntime, tensorrt) run their whole image graph in ``precision``; the
        text tower is fp32 always."""
        prec = self.cfg["precision"]
        eager = self.cfg["backend"] == "torch"
        out = {name: (prec if (low or not eager) else "fp32")
               for name, low in self.precision_stages}
        out["text"] = "fp32"
        return out

    def describe(self) -> dict:
        """Facts for logs and diagnostics (model names, device, precision, weights state)."""
        return {"engine": self.name, "device": self.cfg["device"],
                "precision": self.cfg["precision"], "backend": self.cfg["backend"],
                "stage_precision": self.stage_precision(),
                "random_weights": self.random_weights}


class OpenClipText:
    """``encode_prompts`` and ``text_precision`` for an engine whose text side is an open_clip
    CLIP (``self.clip_model``, tokenizer from ``_clip_tokenizer``): one lazily built
    ``OpenClipTextEncoder`` (shared template prefixes run once, else batches cut to their
    longest prompt, each path checked exact once), fp32 whatever the image precision."""

    _text_encoder = None
    #: Arithmetic of the text tower: fp32, whatever the image path runs in. The text rows
    #: are one side of the final cosine, and a bf16 tower moved them by up to 1e-3: that
    #: alone changed the labels of ~0.3 % of the pixels of real photos (ProxyCLIP, random
    #: weights; docs/benchmarks/cpu.md). Encoding runs once per vocabulary and is cached,
    #: so frames do not pay for it.
    text_precision = "fp32"

    def _clip_tokenizer(self):
        return self.tokenizer

    def encode_prompts(self, prompts: List[str]) -> torch.Tensor:
        if self._text_encoder is None:
            self._text_encoder = OpenClipTextEncoder(
                self.clip_model, self._clip_tokenizer(), self.device, torch.float32)
        return self._text_encoder(prompts)
