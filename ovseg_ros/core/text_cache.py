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
import torch.nn.functional as F

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


# --- fast exact prompt encoding -----------------------------------------------------------
def text_precision(cfg: Config) -> str:
    """Arithmetic of the text tower: fp32, whatever the image path runs in.

    The text rows are one side of the final cosine, and a bf16 tower moved them by
    up to 1e-3: with the image path's bf16 fast path otherwise faithful, that alone
    changed the labels of ~0.3 % of the pixels of real photos (ProxyCLIP, random
    weights; docs/benchmarks/cpu.md). Encoding runs once per vocabulary and is
    cached, so frames do not pay for it. ``OpenClipTextEncoder`` still takes a
    dtype; the cache key (``TextEmbedder.for_engine``) names a non-fp32 one."""
    del cfg   # kept in the signature: engines ask with their config
    return "fp32"


def text_batch_size(device) -> int:
    """Prompts per text-tower call: large on a GPU, moderate on the CPU (after truncation
    to the longest prompt a CPU batch of 256 is ~4k tokens, enough for full GEMM speed)."""
    return 2048 if torch.device(device).type == "cuda" else 256


class OpenClipTextEncoder:
    """``encode_prompts`` for an open_clip CLIP: rows L2-normalised, fp32 out.

    Token batches are cut to the longest prompt of the batch. That is exact for
    a causal text tower pooling at the EOT (or EOS) token: no position attends to
    a later one, so the padding never reaches the pooled token. ``exact`` checks
    it once for the model at hand (truncated vs full length on a probe batch);
    where the structure or the check says otherwise, every batch runs at full
    context length. ``dtype`` bf16 runs the tower under autocast.
    """

    PROBE = ("a photo of a dog.", "an origami of a very long and strangely named object.",
             "x", "a bad photo of the sofa, couch and floor in a dimly lit living room.")

    def __init__(self, clip_model, tokenizer, device, dtype: torch.dtype = torch.float32):
        self.model = clip_model
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.dtype = dtype
        self._exact: Optional[bool] = None
        #: why truncation is off ("" while on or not yet checked)
        self.fallback_reason = ""

    # -- structure and probe -------------------------------------------------------------
    def _pool_index(self, tokens: torch.Tensor) -> Optional[torch.Tensor]:
        pool = getattr(self.model, "text_pool_type", None)
        if pool == "argmax":
            return tokens.argmax(dim=-1)
        if pool == "eos" and getattr(self.model, "text_eos_id", None) is not None:
            return (tokens == self.model.text_eos_id).int().argmax(dim=-1)
        return None

    def _structurally_causal(self) -> str:
        m = self.model
        for attr in ("token_embedding", "positional_embedding", "transformer", "ln_final"):
            if not hasattr(m, attr):
                return f"not an open_clip CLIP text tower (no {attr})"
        if getattr(m, "attn_mask", None) is None:
            return "the text tower has no causal attention mask"
        if getattr(m, "text_pool_type", None) not in ("argmax", "eos"):
            return f"pooling {getattr(m, 'text_pool_type', None)!r} is not at the EOT token"
        return ""

    @torch.inference_mode()
    def exact(self) -> bool:
        """Whether truncated batches give the full-length embeddings (checked once)."""
        if self._exact is None:
            reason = self._structurally_causal()
            if not reason:
                tokens = self.tokenizer(list(self.PROBE)).to(self.device)
                with torch.autocast(self.device.type, enabled=False):
                    full = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
                    cut = F.normalize(self._forward(tokens, truncate=True).float(), dim=-1)
                err = float((full - cut).abs().max())
                if not err <= 1e-4:
                    reason = f"truncated and full-length embeddings differ by {err:.2e}"
            self._exact = not reason
            self.fallback_reason = reason
            if reason:
                log.warning("text encoding at full context length: %s", reason)
        return self._exact

    # -- forward -------------------------------------------------------------------------
    def _forward(self, tokens: torch.Tensor, truncate: bool) -> torch.Tensor:
        m = self.model
        if not truncate:
            return m.encode_text(tokens)
        idx = self._pool_index(tokens)
        n = int(idx.max()) + 1
        tokens = tokens[:, :n]
        cast = m.transformer.get_cast_dtype()
        x = m.token_embedding(tokens).to(cast) + m.positional_embedding[:n].to(cast)
        x = m.transformer(x, attn_mask=m.attn_mask[:n, :n])
        x = m.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), idx]
        proj = m.text_projection
        if proj is not None:
            x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
        return x

    @torch.inference_mode()
    def __call__(self, prompts: Sequence[str]) -> torch.Tensor:
        truncate = self.exact()
        tokens = self.tokenizer(list(prompts)).to(self.device)
        low = self.dtype != torch.float32
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=low):
            emb = self._forward(tokens, truncate)
        return F.normalize(emb.float(), dim=-1)


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
        encoder_id = engine.text_encoder_id()
        # bf16 text embeddings differ from fp32 ones (slightly): never share cache entries
        precision = getattr(engine, "text_precision", "fp32")
        if precision != "fp32":
            encoder_id += f"|text={precision}"
        device = str(getattr(engine, "device", "cpu"))
        return cls(engine.encode_prompts, encoder_id, name, templates,
                   cache_dir=cfg["text_cache_dir"], device=device,
                   batch_size=text_batch_size(device))

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
        """Template-averaged embeddings, prompts encoded in batches across synonyms.

        Prompts are batched in order of length, so a batch cut to its longest prompt
        (``OpenClipTextEncoder``) carries little padding; rows go back to their place."""
        from tqdm import tqdm

        n_t = len(self.templates)
        prompts = [p for s in synonyms for p in make_prompts(s, self.templates)]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        rows = [None] * len(prompts)
        batches = range(0, len(prompts), self.batch_size)
        t0 = time.perf_counter()
        # a bar for long encodes only (tqdm hides itself when stderr is not a terminal)
        bar = tqdm(total=len(prompts), desc="text encoding", unit="prompt", leave=False,
                   disable=None if len(batches) >= 4 else True)
        for i in batches:
            idx = order[i:i + self.batch_size]
            batch = self._encode_prompts([prompts[j] for j in idx]).detach().float().cpu()
            for j, row in zip(idx, batch):
                rows[j] = row
            bar.update(len(idx))
        bar.close()
        self.prompts_encoded += len(prompts)
        if len(batches) >= 4:
            log.info("encoded %d prompts (%d synonyms x %d templates) in %.1f s", len(prompts),
                     len(synonyms), n_t, time.perf_counter() - t0)
        per_prompt = torch.stack(rows).reshape(len(synonyms), n_t, -1)
        # each prompt row is already unit length (engine contract); normalise again to be safe
        per_prompt = torch.nn.functional.normalize(per_prompt, dim=-1)
        mean = torch.nn.functional.normalize(per_prompt.mean(dim=1), dim=-1)
        return [m.numpy().astype(np.float32, copy=True) for m in mean]


__all__ = ["TextEmbedder", "DiskCache", "OpenClipTextEncoder", "text_precision", "text_batch_size"]
