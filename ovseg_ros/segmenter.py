"""The public Python API: ``load_segmenter(config) -> Segmenter``.

    seg = load_segmenter("config/ovseg.yaml")     # or a dict with the same keys
    seg.set_vocabulary(["person", "sofa,couch", "floor"])
    pred = seg.predict(rgb)                        # HxWx3 uint8 RGB
    pred.semantic, pred.scores, pred.panoptic, pred.segments

The Segmenter owns the applied vocabulary (text embeddings from the cache) and
hands it to the engine with every frame. A vocabulary change builds a new
immutable VocabularyState and swaps one reference, so a frame in flight keeps
the vocabulary it started with and the next frame sees the new one whole.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from .config import Config, ConfigError, make_config
from .core.types import Prediction, VocabularyState
from .core.vocabulary import VocabularyError, parse_vocabulary
from .registry import get_engine


class InputError(ValueError):
    """The image handed to predict() cannot be segmented; the message says why."""


def validate_rgb(rgb: Any, max_pixels: int) -> np.ndarray:
    """Check an HxWx3 uint8 frame; return it C-contiguous. Raises InputError."""
    if not isinstance(rgb, np.ndarray):
        raise InputError(f"image must be a numpy array, got {type(rgb).__name__}")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(f"image must be HxWx3 RGB, got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise InputError(f"image must be uint8, got {rgb.dtype}")
    h, w = rgb.shape[:2]
    if h == 0 or w == 0:
        raise InputError(f"image is empty ({w}x{h})")
    if h * w > max_pixels:
        raise InputError(f"image {w}x{h} has {h * w} pixels, above max_input_pixels={max_pixels}")
    return np.ascontiguousarray(rgb)


class Segmenter:
    """An engine plus its applied vocabulary. Thread-safe: set_vocabulary may be
    called from one thread while predict runs in another."""

    def __init__(self, cfg: Config, engine, text_embedder):
        self.config = cfg
        self.engine = engine
        self._text = text_embedder
        self._vocab_lock = threading.Lock()   # serialises vocabulary changes, not predictions
        self._vocab: Optional[VocabularyState] = None
        self._version = 0
        # seconds spent encoding text since the last frame: reported once, in the
        # next prediction's timings["text_encode"] (0.0 when the cache answered)
        self._text_encode_s = 0.0
        self.set_vocabulary(cfg["vocabulary"], cfg["vocabulary_is_thing"] or None)

    # --- vocabulary -------------------------------------------------------------------
    @property
    def vocabulary(self) -> VocabularyState:
        return self._vocab

    @property
    def random_weights(self) -> bool:
        return self.engine.random_weights

    def set_vocabulary(self, classes: Sequence[str],
                       is_thing: Optional[Sequence[bool]] = None) -> VocabularyState:
        """Apply a new vocabulary; raises VocabularyError and keeps the old one on bad input."""
        names, synonyms, flags = parse_vocabulary(
            classes, is_thing, max_classes=self.config["max_classes"],
            max_name_length=self.config["max_class_name_length"])
        with self._vocab_lock:
            t0 = time.perf_counter()
            embeddings, synonym_class = self._text.embed_vocabulary(synonyms)
            self._text_encode_s += time.perf_counter() - t0
            self._version += 1
            state = VocabularyState(names=names, synonyms=synonyms, is_thing=flags,
                                    embeddings=embeddings, synonym_class=synonym_class,
                                    version=self._version)
            self._vocab = state   # one reference swap: atomic for readers
        return state

    # --- inference ----------------------------------------------------------------------
    def predict(self, rgb: np.ndarray) -> Prediction:
        rgb = validate_rgb(rgb, self.config["max_input_pixels"])
        pred = self.engine.predict(rgb, self._vocab)
        pred.timings["text_encode"], self._text_encode_s = self._text_encode_s, 0.0
        return pred

    # --- runtime settings -----------------------------------------------------------------
    def update_config(self, **changes: Any) -> Config:
        """Change runtime settings (thresholds); others need a new Segmenter."""
        from .config import SCHEMA

        for key in changes:
            name = key.replace("__", ".")
            if name not in SCHEMA:
                raise ConfigError(f"unknown config key '{name}'")
            if not SCHEMA[name].runtime:
                raise ConfigError(f"config key '{name}' cannot change at runtime; "
                                  "load a new segmenter")
        cfg = self.config.replace(**changes)
        self.engine.update_runtime(cfg)
        self.config = cfg
        return cfg

    def describe(self) -> dict:
        info = dict(self.engine.describe())
        info["num_classes"] = self._vocab.num_classes if self._vocab else 0
        return info


def load_segmenter(config: Union[None, str, Path, Mapping[str, Any], Config] = None,
                   **overrides: Any) -> Segmenter:
    """Build a Segmenter from a config dict or YAML path (keys = the node's parameters).

    Raises ConfigError for unknown keys or bad values, and a WeightsError (from
    ``ovseg_ros.weights``) naming the file/tag and the setting to change when
    weights are missing.
    """
    from .core.text_cache import TextEmbedder

    cfg = make_config(config, **overrides)
    engine = get_engine(cfg["engine"])(cfg)
    return Segmenter(cfg, engine, TextEmbedder.for_engine(engine, cfg))


__all__ = ["Segmenter", "load_segmenter", "InputError", "VocabularyError", "validate_rgb"]
