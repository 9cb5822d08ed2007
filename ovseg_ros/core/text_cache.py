"""Text embeddings of a vocabulary, encoded once and cached in memory and on disk.

One embedding per synonym: every prompt (template x synonym) is encoded and
L2-normalised, the prompts of a synonym are averaged over the templates, and
the mean is normalised again. Only synonyms missing from both caches reach the
text encoder, in batches, so changing one class of a 150-class vocabulary
encodes one class.

Disk layout (safe formats only: ``.npy`` read with ``allow_pickle=False``)::

    <text_cache_dir>/<sha256(encoder id | template id)[:24]>/<sha256(synonym)[:32]>.npy
    <text_cache_dir>/<...>/key.txt     # the readable key, for humans

The encoder id comes from ``engine.text_encoder_id()`` (model name plus the
weights' tag, file fingerprint, or random seed), so a change of weights or
templates never reuses stale embeddings. Files are written to a temporary
name and renamed, so concurrent processes never read half a file.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ..config import Config
from .templates import make_prompts, templates_for, templates_id

log = logging.getLogger(__name__)


def _sha(text: str, n: int) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


class DiskCache:
    """One small .npy per synonym inside a directory per (encoder, template set)."""

    def __init__(self, root: Path, key: str, dim: Optional[int] = None):
        self.dir = root / _sha(key, 24)
        self.key = key
        self.dim = dim

    def _path(self, synonym: str) -> Path:
        return self.dir / f"{_sha(synonym, 32)}.npy"

    def get(self, synonym: str) -> Optional[np.ndarray]:
        path = self._path(synonym)
        try:
            arr = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:  # a damaged file is re-encoded, not fatal
            log.warning("ignoring unreadable text-cache file %s: %s", path, exc)
            return None
        if arr.ndim != 1 or arr.dtype != np.float32 or (self.dim and arr.shape[0] != self.dim):
            log.warning("ignoring text-cache file %s with shape %s dtype %s", path, arr.shape,
                        arr.dtype)
            return None
        return arr

    def put(self, synonym: str, emb: np.ndarray) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        key_file = self.dir / "key.txt"
        if not key_file.exists():
            key_file.write_text(self.key + "\n", encoding="utf-8")
        fd, tmp = tempfile.mkstemp(dir=self.dir, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, np.ascontiguousarray(emb, dtype=np.float32), allow_pickle=False)
            os.replace(tmp, self._path(synonym))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class TextEmbedder:
    """Turns synonyms into normalised, template-averaged text embeddings, with caches.

    ``encode_prompts(list[str]) -> Tensor (N, D)`` (rows L2-normalised) is the only
    thing it needs from the engine.
    """

    def __init__(self, encode_prompts, encoder_id: str, template_name: str,
                 templates: Sequence[str], cache_dir: str = "", device: str = "cpu",
                 batch_size: int = 256, memory_entries: int = 20000):
        self._encode_prompts = encode_prompts
        self.templates = tuple(templates)
        self.template_name = template_name
        self.key = f"{encoder_id}|{templates_id(template_name, self.templates)}"
        self.device = torch.device(device)
        self.batch_size = max(1, int(batch_size))
        self._memory: "OrderedDict[str, np.ndarray]" = OrderedDict()
        self._memory_entries = memory_entries
        self._disk = DiskCache(Path(os.path.expanduser(cache_dir)), self.key) if cache_dir \
            else None
        self._lock = threading.Lock()
        self._warned_disk = False
        #: statistics of the last embed_vocabulary call
        self.last_stats: Dict[str, float] = {}
        #: prompts sent to the text encoder over this embedder's life
        self.prompts_encoded = 0

    @classmethod
    def for_engine(cls, engine, cfg: Config) -> "TextEmbedder":
        name, templates = templates_for(cfg, getattr(engine, "default_templates", "imagenet80"))
        return cls(engine.encode_prompts, engine.text_encoder_id(), name, templates,
                   cache_dir=cfg["text_cache_dir"], device=str(getattr(engine, "device", "cpu")))

    # --- public ---------------------------------------------------------------------------
    def embed_vocabulary(self, synonyms_per_class: Sequence[Sequence[str]]
                         ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(embeddings S x D float32 on the engine's device, synonym_class LongTensor S)."""
        flat: List[str] = []
        owner: List[int] = []
        for ci, syns in enumerate(synonyms_per_class):
            for s in syns:
                flat.append(s)
                owner.append(ci)
        embs = self.embed_synonyms(flat)
        return embs.to(self.device), torch.tensor(owner, dtype=torch.long, device=self.device)

    def embed_synonyms(self, synonyms: Sequence[str]) -> torch.Tensor:
        """S x D float32 (CPU) for the given synonym strings, encoding only uncached ones."""
        if not synonyms:
            raise ValueError("no synonyms to embed")
        t0 = time.perf_counter()
        with self._lock:
            found: Dict[str, np.ndarray] = {}
            hits_mem = hits_disk = 0
            for s in dict.fromkeys(synonyms):          # unique, order kept
                if s in self._memory:
                    self._memory.move_to_end(s)
                    found[s] = self._memory[s]
                    hits_mem += 1
                elif self._disk is not None and (arr := self._disk.get(s)) is not None:
                    found[s] = arr
                    self._remember(s, arr)
                    hits_disk += 1
            missing = [s for s in dict.fromkeys(synonyms) if s not in found]
            t1 = time.perf_counter()
            if missing:
                for s, arr in zip(missing, self._encode(missing)):
                    found[s] = arr
                    self._remember(s, arr)
                    if self._disk is not None:
                        self._store(s, arr)
            t2 = time.perf_counter()
            self.last_stats = {"memory_hits": hits_mem, "disk_hits": hits_disk,
                               "encoded": len(missing), "lookup_s": t1 - t0,
                               "encode_s": t2 - t1}
            return torch.from_numpy(np.stack([found[s] for s in synonyms]))

    # --- internals ----------------------------------------------------------------------
    def _store(self, synonym: str, arr: np.ndarray) -> None:
        """Write to the disk cache; a read-only or full disk costs speed, not the vocabulary,
        so it is logged (once) rather than raised."""
        try:
            self._disk.put(synonym, arr)
        except OSError as exc:
            if not self._warned_disk:
                log.warning("text cache %s is not writable (%s); embeddings are kept in memory "
                            "only. Set text_cache_dir to a writable directory or '' to disable",
                            self._disk.dir, exc)
                self._warned_disk = True

    def _remember(self, synonym: str, arr: np.ndarray) -> None:
        self._memory[synonym] = arr
        self._memory.move_to_end(synonym)
        while len(self._memory) > self._memory_entries:
            self._memory.popitem(last=False)

    @torch.inference_mode()
    def _encode(self, synonyms: Sequence[str]) -> List[np.ndarray]:
        """Template-averaged embeddings, prompts encoded in batches across synonyms."""
        n_t = len(self.templates)
        prompts = [p for s in synonyms for p in make_prompts(s, self.templates)]
        rows = []
        for i in range(0, len(prompts), self.batch_size):
            batch = self._encode_prompts(prompts[i:i + self.batch_size])
            rows.append(batch.detach().float().cpu())
        self.prompts_encoded += len(prompts)
        per_prompt = torch.cat(rows).reshape(len(synonyms), n_t, -1)
        # each prompt row is already unit length (engine contract); normalise again to be safe
        per_prompt = torch.nn.functional.normalize(per_prompt, dim=-1)
        mean = torch.nn.functional.normalize(per_prompt.mean(dim=1), dim=-1)
        return [m.numpy().astype(np.float32, copy=True) for m in mean]


__all__ = ["TextEmbedder", "DiskCache"]
