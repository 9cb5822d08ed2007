"""The public Python API: ``load_segmenter(config) -> Segmenter``.

    seg = load_segmenter("config/ovseg.yaml")     # or a dict with the same keys
    seg.set_vocabulary(["person", "sofa,couch", "floor"])
    pred = seg.predict(rgb)                        # HxWx3 uint8 RGB
    pred.semantic, pred.confidence, pred.panoptic, pred.segments
    seg.predict(rgb, scores=True).scores          # C x H x W, only when asked
    seg.locate("red mug", frames, top_k=3)        # open-set query over remembered frames

The Segmenter owns the applied vocabulary (text embeddings from the cache) and
hands it to the engine with every frame. A vocabulary change builds a new
immutable VocabularyState and swaps one reference, so a frame in flight keeps
the vocabulary it started with and the next frame sees the new one whole.
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .config import Config, ConfigError, make_config
from .core.types import Prediction, VocabularyState
from .core.vocabulary import VocabularyError, parse_vocabulary


class InputError(ValueError):
    """The image handed to predict() cannot be segmented; the message says why."""


class InputLimitError(InputError):
    """A frame refused because it exceeds a configured limit.

    Carries the facts, independent of where the frame came from: ``shape`` (height,
    width), ``setting`` (the config key), ``limit`` (its value) and ``value`` (the
    frame's measure of the same quantity). The message states all four, so a log line
    of it is enough to decide whether to raise the limit or fix the camera.

    Refused: frames above ``max_input_pixels`` or with a side above ``max_input_side``
    (before any work). Shapes within them are never refused for their aspect ratio:
    each engine's resize clamps what it produces (``proxyclip.max_windows`` /
    ``max_resized_pixels``, ``<engine>.max_size``) and says so in ``Prediction.notes``
    (docs/node.md, "Bounded work per frame")."""

    def __init__(self, shape: Tuple[int, int], setting: str, limit: int, value: int,
                 unit: str = "pixels"):
        self.shape, self.setting, self.limit, self.value = tuple(shape), setting, limit, value
        h, w = self.shape
        super().__init__(f"image {w}x{h} (height {h}, width {w}) has {value} {unit}, above "
                         f"{setting}={limit}")


def validate_rgb(rgb: Any, max_pixels: int, max_side: int = 0) -> np.ndarray:
    """Check an HxWx3 uint8 frame; return it C-contiguous. Raises InputError, and
    InputLimitError above ``max_pixels`` pixels or ``max_side`` pixels on a side (0: no
    side check)."""
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
        raise InputLimitError((h, w), "max_input_pixels", max_pixels, h * w)
    if max_side and max(h, w) > max_side:
        raise InputLimitError((h, w), "max_input_side", max_side, max(h, w),
                              unit="pixels on its longest side")
    return np.ascontiguousarray(rgb)


@dataclass(frozen=True)
class PendingVocabulary:
    """A parsed and encoded vocabulary, not yet applied (``Segmenter.prepare_vocabulary``)."""

    names: Tuple[str, ...]
    synonyms: Tuple[Tuple[str, ...], ...]
    is_thing: Tuple[bool, ...]
    embeddings: Any
    synonym_class: Any
    encode_seconds: float

    @property
    def num_classes(self) -> int:
        return len(self.names)


class Segmenter:
    """An engine plus its applied vocabulary. Thread-safe: set_vocabulary may be
    called from one thread while predict runs in another."""

    def __init__(self, cfg: Config, engine, text_embedder):
        self.config = cfg
        self.engine = engine
        self._text = text_embedder
        self._vocab_lock = threading.Lock()   # serialises vocabulary changes, not predictions
        # guards _text_encode_s alone: short, so a frame never waits for an encoding that
        # holds _vocab_lock
        self._timing_lock = threading.Lock()
        self._vocab: Optional[VocabularyState] = None
        self._version = 0
        # seconds spent encoding text since the last frame: reported once, in the
        # next prediction's timings["text_encode"] (0.0 when the cache answered)
        self._text_encode_s = 0.0
        # The config's vocabulary is checked now (a bad one fails at load time) but
        # encoded only on first use, so a caller's own set_vocabulary never waits
        # for the encoding of a default it is about to replace.
        self._default_vocab = self._parse(cfg["vocabulary"], cfg["vocabulary_is_thing"] or None)
        self._locator = None   # core.locate.Locator, built on the first locate()

    # --- vocabulary -------------------------------------------------------------------
    @property
    def vocabulary(self) -> VocabularyState:
        """The applied vocabulary (the config's default is encoded on first access)."""
        if self._vocab is None:
            with self._vocab_lock:
                if self._vocab is None and self._default_vocab is not None:
                    self._swap(self._encode(self._default_vocab))
        return self._vocab

    @property
    def random_weights(self) -> bool:
        return self.engine.random_weights

    def _parse(self, classes: Sequence[str],
               is_thing: Optional[Sequence[bool]]) -> tuple:
        return parse_vocabulary(classes, is_thing, max_classes=self.config["max_classes"],
                                max_name_length=self.config["max_class_name_length"])

    def _encode(self, parsed: tuple) -> "PendingVocabulary":
        names, synonyms, flags = parsed
        t0 = time.perf_counter()
        embeddings, synonym_class = self._text.embed_vocabulary(synonyms)
        return PendingVocabulary(names=names, synonyms=synonyms, is_thing=flags,
                                 embeddings=embeddings, synonym_class=synonym_class,
                                 encode_seconds=time.perf_counter() - t0)

    def _swap(self, pending: "PendingVocabulary") -> VocabularyState:
        # caller holds _vocab_lock
        with self._timing_lock:
            self._text_encode_s += pending.encode_seconds
        self._version += 1
        state = VocabularyState(names=pending.names, synonyms=pending.synonyms,
                                is_thing=pending.is_thing, embeddings=pending.embeddings,
                                synonym_class=pending.synonym_class, version=self._version)
        self._vocab = state   # one reference swap: atomic for readers
        self._default_vocab = None
        return state

    def prepare_vocabulary(self, classes: Sequence[str],
                           is_thing: Optional[Sequence[bool]] = None) -> "PendingVocabulary":
        """Parse and encode a vocabulary without applying it (slow; any thread).

        Raises VocabularyError on bad input. Nothing changes until
        ``apply_vocabulary`` is called with the result.
        """
        return self._encode(self._parse(classes, is_thing))

    def apply_vocabulary(self, pending: "PendingVocabulary") -> VocabularyState:
        """Make a prepared vocabulary the applied one (atomic between frames)."""
        with self._vocab_lock:
            return self._swap(pending)

    def set_vocabulary(self, classes: Sequence[str],
                       is_thing: Optional[Sequence[bool]] = None) -> VocabularyState:
        """Apply a new vocabulary; raises VocabularyError and keeps the old one on bad input."""
        parsed = self._parse(classes, is_thing)
        with self._vocab_lock:   # serialised: versions follow the order of the calls
            return self._swap(self._encode(parsed))

    # --- inference ----------------------------------------------------------------------
    def predict(self, rgb: np.ndarray, scores: bool = False, confidence: bool = True
                ) -> Prediction:
        """Segment one frame; ``scores=True`` also returns the C x H x W class-probability
        volume (memory and time grow with the vocabulary; the node never asks).
        ``confidence=False``: the caller needs neither the confidence nor the segments'
        scores; an engine that can skip them (``Engine.skips_confidence``: ProxyCLIP, where
        the confidence needs every synonym at every pixel) leaves them out (None, NaN)."""
        rgb = validate_rgb(rgb, self.config["max_input_pixels"], self.config["max_input_side"])
        pred = self.engine.predict(rgb, self.vocabulary, scores=scores,
                                   **self._confidence_kw(confidence))
        pred.timings["text_encode"] = self._take_text_encode_s()
        return pred

    def predict_batch(self, rgbs: Sequence[np.ndarray], scores: bool = False,
                      confidence: bool = True) -> List[Prediction]:
        """Segment several frames (e.g. one per camera) with one vocabulary version.

        Engines that can share one batch of the image model across frames do so
        (``Engine.predict_batch``); the result equals predicting one at a time.
        """
        frames = [validate_rgb(rgb, self.config["max_input_pixels"], self.config["max_input_side"])
                  for rgb in rgbs]
        vocab = self.vocabulary          # captured once: never two versions in one batch
        preds = self.engine.predict_batch(frames, vocab, scores=scores,
                                          **self._confidence_kw(confidence)) if frames else []
        encode_s = self._take_text_encode_s()
        for pred in preds:
            pred.timings["text_encode"] = encode_s
        return preds

    def _confidence_kw(self, confidence: bool) -> dict:
        """The engine's keyword for ``confidence=False``, only to engines that take it (the
        others' confidence comes with their labels at no extra cost)."""
        return {} if confidence or not self.engine.skips_confidence else {"confidence": False}

    def _take_text_encode_s(self) -> float:
        """Seconds spent encoding text since the last frame, reset to zero (read and reset
        under the lock the increment takes, so no vocabulary's time is lost)."""
        with self._timing_lock:
            seconds, self._text_encode_s = self._text_encode_s, 0.0
        return seconds

    # --- open-set queries ------------------------------------------------------------------
    def locate(self, query: str, frames, top_k: int = 5, camera: str = "") -> list:
        """Segments of remembered frames that match free text, best first.

        ``frames``: camera name -> ``core.locate.LocateFrame`` (its latest frame) or None
        (no frame yet). The query is encoded like a vocabulary class (same encoder,
        templates and disk cache; an LRU in front answers repeated queries) and scored
        by cosine against the frames' segment embeddings. The vocabulary stays as it is
        and the image model does not run. Raises ``core.locate.LocateError`` on bad input
        (empty, > 200 characters or binary query; top_k outside 1..100; unknown camera; no
        frame yet; embeddings off)."""
        from .core.locate import LocateError, Locator

        if not self.config["embeddings.enabled"]:
            raise LocateError("locate needs segment embeddings: set embeddings.enabled to true")
        if self._locator is None:
            self._locator = Locator(lambda text: self._text.embed_synonyms([text])[0].numpy())
        return self._locator.locate(query, frames, top_k=top_k, camera=camera)

    def embedding_space(self) -> str:
        """The CLIP model (and weights) whose text space segment embeddings live in: the
        ``space`` of SegmentEmbeddings; only rows of one space may be compared."""
        return str(self.engine.text_encoder_id())

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
        info["num_classes"] = self.vocabulary.num_classes if self.vocabulary else 0
        return info


def apply_process_settings(cfg: Config) -> None:
    """The process-wide settings a config asks for, applied once by the entry point
    (``load_segmenter``, which the node's configure and every command-line tool call),
    never by an engine or model constructor: torch's CPU threads (``num_threads``; 0
    leaves torch's default), with ``torch_compile`` Inductor's on-disk cache (its FX graph
    cache: a later start compiles from it in a fraction of the first compile's time)
    under ``graph_cache_dir`` (``inductor_cache_dir``: TORCHINDUCTOR_CACHE_DIR is set from
    it), and, when ``weights_dir`` holds a weights bundle, huggingface_hub's
    offline mode."""
    import torch

    from .backends.graph_cache import INDUCTOR_CACHE_ENV, inductor_cache_dir
    from .weights.environment import offline_if_bundle

    if cfg["num_threads"] > 0:
        torch.set_num_threads(cfg["num_threads"])
    if cfg["torch_compile"]:
        # Inductor reads it at each compile, so before the first one is early enough. Set
        # unconditionally: importing open_clip/timm already writes Inductor's default
        # (/tmp/torchinductor_<user>) there, so a user's own value cannot be told apart.
        os.environ[INDUCTOR_CACHE_ENV] = str(inductor_cache_dir(cfg["graph_cache_dir"]))
    offline_if_bundle(cfg["weights_dir"])


def load_segmenter(config: Union[None, str, Path, Mapping[str, Any], Config] = None,
                   **overrides: Any) -> Segmenter:
    """Build a Segmenter from a config dict or YAML path (keys = the node's parameters).

    Raises ConfigError for unknown keys or bad values, and a WeightsError (from
    ``ovseg_ros.weights``) naming the file/tag and the setting to change when
    weights are missing.
    """
    from .core.text_cache import TextEmbedder
    from .engines.base import build_engine

    cfg = make_config(config, **overrides)
    apply_process_settings(cfg)
    engine = build_engine(cfg)
    return Segmenter(cfg, engine, TextEmbedder.for_engine(engine, cfg))


__all__ = ["Segmenter", "PendingVocabulary", "load_segmenter", "apply_process_settings",
           "InputError", "InputLimitError", "VocabularyError", "validate_rgb"]
