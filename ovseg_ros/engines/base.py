"""The contract every engine implements, and the one builder every engine goes through.

An engine module is its method's one self-describing place (docs/architecture.md,
"Engines"): its class declares, without reading any weights, its config group
(``name``; the settings are in ``<name>_config.py``), its published checkpoints
(``releases``), the files a config makes it read (``weights_needs(cfg)``), and for an
engine with a checkpoint of its own the setting naming it (``checkpoint_setting``), the
file's inference layout (``checkpoint_layout(cfg)``) and which keys of a training file
inference keeps (``is_inference_key(key)``). The weights tool asks these through the
registry.

``Engine.__init__`` is the one builder: device and precision checked, the checkpoint
file checked before any large model is read, then the engine's ``build``; random
weights come from ``seeded()``, backends from ``add_backend``, and ``describe()`` has
one shape for every engine. Process-wide settings (threads) are the entry point's
(``segmenter.apply_process_settings``), never an engine's.
"""
from __future__ import annotations

import contextlib
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch

from ..backends.base import BackendSpec, ExportSpec, check_precision, resolve_device
from ..config import Config
from ..core.text_cache import OpenClipTextEncoder
from ..core.types import Prediction, VocabularyState
from ..registry import get_backend, get_engine
from ..weights import RANDOM_SEED, WeightsError, resolve_path
from ..weights.sources import Release, WeightsNeed

log = logging.getLogger(__name__)


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

    #: registry name, and the prefix of its config group (``<name>.*``)
    name: str = ""
    #: template set used when the config says prompt_templates: default
    default_templates: str = "imagenet80"
    #: the checkpoints the method's authors publish (``ovseg-weights``)
    releases: Tuple[Release, ...] = ()
    #: the setting naming the engine's own checkpoint file; "" when every weight comes
    #: from open_clip / timm (then there is no checkpoint layout either)
    checkpoint_setting: str = ""
    #: the page that says where the weights come from (named in weights errors)
    docs: str = ""

    # --- declarations (class level: no weights read, nothing built) ----------------------
    @classmethod
    def weights_needs(cls, cfg: Config) -> Tuple[WeightsNeed, ...]:
        """The weight files ``cfg`` makes this engine read, each named by its settings
        (``ovseg_ros/weights/sources.py``); the weights tool finds and fetches them."""
        return ()

    @classmethod
    def checkpoint_layout(cls, cfg: Config) -> Dict[str, Tuple[int, ...]]:
        """Inference keys of the engine's checkpoint file and their shapes (engines with a
        ``checkpoint_setting``), built without reading weights. An engine without a checkpoint
        of its own (ProxyCLIP: open_clip and timm weights only) has no layout to give."""
        raise WeightsError(f"engine {cls.name!r} has no checkpoint of its own: it loads "
                           "open_clip/timm weights only (ovseg-weights needs lists them)")

    @classmethod
    def is_inference_key(cls, key: str) -> bool:
        """Whether inference keeps this key of a released training file (``convert``)."""
        raise WeightsError(f"engine {cls.name!r} has no checkpoint of its own: there is no "
                           "training file to convert")

    @classmethod
    def checkpoint_file(cls, cfg: Config) -> Optional[Path]:
        """The engine's checkpoint file (None with random_init or without a checkpoint
        setting); a WeightsError naming the setting when it is unset or absent."""
        key = cls.checkpoint_setting
        if not key or cfg["random_init"]:
            return None
        if not cfg[key]:
            names = ", ".join(r.name for r in cls.releases) or "the released checkpoint"
            where = f" (see {cls.docs} for the download)" if cls.docs else ""
            raise WeightsError(f"no {cls.name} checkpoint given: set the config key '{key}' to "
                               f"{names}{where}, or random_init: true for a demo with "
                               "meaningless outputs.")
        path = resolve_path(cfg[key], cfg["weights_dir"])
        if not path.is_file():
            raise WeightsError(f"checkpoint file {str(path)!r} does not exist; fix the config "
                               f"key '{key}' (a .pth or .safetensors file). (For a demo without "
                               "weights set random_init: true; outputs are then meaningless and "
                               "flagged random_weights.)")
        return path

    # --- the one builder ------------------------------------------------------------------
    def __init__(self, cfg: Config):
        self.cfg = cfg
        #: True when any weights are randomly initialised (config random_init)
        self.random_weights = bool(cfg["random_init"])
        # device and precision errors before minutes of weight loading
        self.device = resolve_device(cfg["device"])
        check_precision(cfg["precision"], self.device)
        #: the backends running the image graphs, by role ("image", ...; ``add_backend``)
        self.backends: Dict[str, Any] = {}
        checkpoint = self.checkpoint_file(cfg)      # fail before reading large models
        if self.random_weights:
            log.warning("%s: weights are RANDOM (random_init: true); outputs are meaningless",
                        self.name)
        self.build(checkpoint)

    @abstractmethod
    def build(self, checkpoint: Optional[Path]) -> None:
        """Build the networks with their weights (``checkpoint``: the checked file, None
        with random_init or without a checkpoint setting) and the backends."""

    @staticmethod
    @contextlib.contextmanager
    def seeded() -> Iterator[None]:
        """Random initialisation inside a forked RNG seeded with ``RANDOM_SEED``:
        reproducible, and the caller's RNG is untouched."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            yield

    def add_backend(self, role: str, export: ExportSpec, *, max_batch: int = 1):
        """The configured backend running ``export``; listed under ``role`` in describe()."""
        backend = get_backend(self.cfg["backend"])(
            export, BackendSpec.from_config(self.cfg, max_batch=max_batch))
        self.backends[role] = backend
        return backend

    @abstractmethod
    def text_encoder_id(self) -> str:
        """Identity of the text encoder for the embedding cache key: model name
        plus a hash/identity of its weights (tag, file hash, or 'random:<seed>')."""

    @abstractmethod
    def encode_prompts(self, prompts: List[str]):
        """Encode full prompt strings -> torch.Tensor (N, D) float32, each row L2-normalised."""

    #: True where ``predict``/``predict_batch`` take ``confidence=False`` and then skip the
    #: confidence (None) and the segments' scores (NaN) because they cost more than the
    #: labels; ``Segmenter`` passes the keyword only to such engines
    skips_confidence = False

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

    @abstractmethod
    def model_facts(self) -> Dict[str, Any]:
        """The engine's model settings worth a log line (model names, sizes, queries)."""

    @abstractmethod
    def weights_identity(self) -> Dict[str, str]:
        """part -> identity of its weights (tag, file fingerprint or ``random:<seed>``)."""

    def describe(self) -> dict:
        """Facts for logs and diagnostics, one shape for every engine: engine, device,
        precision, backend, stage_precision, random_weights, ``model`` (model_facts),
        ``weights`` (weights_identity), ``text_encoder`` and ``backends`` (role -> the
        backend's own describe())."""
        return {"engine": self.name, "device": self.cfg["device"],
                "precision": self.cfg["precision"], "backend": self.cfg["backend"],
                "stage_precision": self.stage_precision(),
                "random_weights": self.random_weights,
                "model": dict(self.model_facts()), "weights": dict(self.weights_identity()),
                "text_encoder": self.text_encoder_id(),
                "backends": {role: b.describe() for role, b in self.backends.items()
                             if hasattr(b, "describe")}}


def build_engine(cfg: Config) -> Engine:
    """The engine ``cfg`` names, built (``load_segmenter`` and the tools call this)."""
    return get_engine(cfg["engine"])(cfg)


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
