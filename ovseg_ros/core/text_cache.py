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
def text_batch_size(device) -> int:
    """Prompts per text-tower call: large on a GPU, moderate on the CPU. With shared
    template prefixes a prompt runs ~3.5 own tokens, so a CPU batch of 256 is ~1k tokens:
    ViT-B/16, 2 threads, 4096 ADE-150 prompts ran at 609 / 586 / 633 / 627 prompts/s with
    batches of 256 / 512 / 1024 / 2048, within the host's noise, so 256 stays."""
    return 2048 if torch.device(device).type == "cuda" else 256


class OpenClipTextEncoder:
    """``encode_prompts`` for an open_clip CLIP: rows L2-normalised, fp32 out.

    Three exact paths, the fastest the model at hand allows (``mode``):

    ``"shared_prefix"``
        The tokens every row of the batch starts with (``<sot> a photo of a`` for one
        template's prompts) run through the tower once; each row then runs only its
        own tokens, packed without padding for everything per token (layer norms,
        projections, MLP), with attention over the shared prefix's keys/values plus its
        own earlier tokens. Exact for a causal tower with absolute positional embeddings:
        the prefix's hidden states are the same in every row. A template's prompts
        carry ~2.5x fewer tokens this way (ADE-150 x ImageNet-80).
    ``"truncated"``
        Token batches cut to the longest prompt of the batch: exact for a causal tower
        pooling at the EOT (or EOS) token, since no position attends to a later one.
    ``"full"``
        ``encode_text`` at full context length.

    ``exact`` checks the structure and a probe batch once (each path against full
    length); where a check fails, the next path is used and ``fallback_reason`` says
    why. ``dtype`` bf16 runs the tower under autocast.
    """

    PROBE = ("a photo of a dog.", "an origami of a very long and strangely named object.",
             "x", "a bad photo of the sofa, couch and floor in a dimly lit living room.")
    #: template-like: one shared prefix, different lengths, one row that is the prefix
    #: plus its pooled token, a duplicate
    PREFIX_PROBE = ("a photo of a dog.", "a photo of a", "a photo of a very long and strangely "
                    "named object, seen from far away.", "a photo of a sofa, couch.",
                    "a photo of a dog.")
    MODES = ("shared_prefix", "truncated", "full")

    def __init__(self, clip_model, tokenizer, device, dtype: torch.dtype = torch.float32):
        self.model = clip_model
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.dtype = dtype
        self._exact: Optional[bool] = None
        #: the path in use (one of MODES; None until checked)
        self.mode: Optional[str] = None
        #: why the fastest path is off ("" while on or not yet checked)
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

    def _structurally_prefix_shareable(self) -> str:
        """Why the shared-prefix path cannot run this tower ("" when it can): it re-implements
        open_clip's standard block, so anything else is refused."""
        from open_clip.transformer import ResidualAttentionBlock, Transformer

        m = self.model
        pos = m.positional_embedding
        if not isinstance(pos, torch.Tensor) or pos.ndim != 2:
            return "the positional embedding is not an absolute (context x width) table"
        if not isinstance(m.token_embedding, torch.nn.Embedding):
            return "the token embedding is not an nn.Embedding"
        if type(m.transformer) is not Transformer:
            return f"the text transformer is a {type(m.transformer).__name__}, not open_clip's"
        mask = m.attn_mask
        n = pos.shape[0]
        causal = torch.triu(torch.ones(n, n, dtype=torch.bool, device=mask.device), 1)
        if (mask.shape != (n, n) or not bool(torch.isneginf(mask[causal]).all())
                or not bool((mask[~causal] == 0).all())):
            return "the attention mask is not the causal -inf upper triangle"
        for i, blk in enumerate(m.transformer.resblocks):
            if type(blk) is not ResidualAttentionBlock:
                return (f"text block {i} is a {type(blk).__name__}, not open_clip's "
                        "ResidualAttentionBlock")
            if hasattr(blk, "ln_1_kv"):
                return f"text block {i} is a cross-attention block"
            attn = blk.attn
            if type(attn) is not torch.nn.MultiheadAttention:
                return f"text block {i}'s attention is a {type(attn).__name__}"
            if not attn._qkv_same_embed_dim or attn.in_proj_weight is None:
                return f"text block {i}'s attention has separate q/k/v projections"
            if attn.bias_k is not None or attn.bias_v is not None or attn.add_zero_attn:
                return f"text block {i}'s attention has extra key/value biases or zero attention"
        return ""

    def _probe_error(self, forward, prompts: Sequence[str]) -> float:
        tokens = self.tokenizer(list(prompts)).to(self.device)
        with torch.autocast(self.device.type, enabled=False):
            full = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
            got = F.normalize(forward(tokens).float(), dim=-1)
        return float((full - got).abs().max())

    @torch.inference_mode()
    def exact(self) -> bool:
        """Whether a path faster than full length gives the full-length embeddings
        (checked once; sets ``mode`` and ``fallback_reason``)."""
        if self._exact is None:
            reason = self._structurally_causal()
            if not reason:
                err = self._probe_error(lambda t: self._forward(t, truncate=True), self.PROBE)
                if not err <= 1e-4:
                    reason = f"truncated and full-length embeddings differ by {err:.2e}"
            if reason:
                self.mode = "full"
                log.warning("text encoding at full context length: %s", reason)
            else:
                try:
                    reason = self._structurally_prefix_shareable()
                    if not reason:
                        err = max(self._probe_error(self._forward_shared, p)
                                  for p in (self.PREFIX_PROBE, self.PROBE))
                        if not err <= 1e-4:
                            reason = (f"shared-prefix and full-length embeddings differ by "
                                      f"{err:.2e}")
                except Exception as exc:  # an unforeseen tower: the checked path instead
                    reason = f"the shared-prefix path failed: {type(exc).__name__}: {exc}"
                self.mode = "truncated" if reason else "shared_prefix"
                if reason:
                    log.warning("text encoding without shared prefixes (batches cut to their "
                                "longest prompt): %s", reason)
            self._exact = self.mode != "full"
            self.fallback_reason = reason
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
        return self._project(x)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        proj = self.model.text_projection
        if proj is not None:
            x = proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
        return x

    #: a prefix group's cost in tokens beyond its own (its attention padding, one more
    #: row of the prefix pass), when choosing groups
    GROUP_COST = 2

    def _prefix_groups(self, tokens: torch.Tensor, n: torch.Tensor
                       ) -> List[Tuple[List[int], int]]:
        """Rows grouped by shared leading tokens: [(row indices, prefix length)], each prefix
        at most a member's length - 1 (every row keeps its pooled token).

        Rows in token order form a trie; a run of rows either is one group (its prefix: the
        least common prefix of neighbours in it) or splits where that least prefix is
        reached, whichever runs fewer tokens (a group costs ``GROUP_COST`` more)."""
        lengths = n.tolist()
        seqs = [r[:k] for r, k in zip(tokens.tolist(), lengths)]
        order = sorted(range(len(seqs)), key=seqs.__getitem__)
        adj = [0] * len(order)             # common prefix with the previous row, capped
        for r in range(1, len(order)):
            a, b = seqs[order[r - 1]], seqs[order[r]]
            lim = min(len(a), len(b)) - 1
            c = 0
            while c < lim and a[c] == b[c]:
                c += 1
            adj[r] = c
        csum = [0]
        for i in order:
            csum.append(csum[-1] + lengths[i])

        def solve(lo: int, hi: int):
            if hi - lo == 1:
                i = order[lo]
                return lengths[i] + self.GROUP_COST, [([i], lengths[i] - 1)]
            m = min(adj[lo + 1:hi])
            whole = csum[hi] - csum[lo] - (hi - lo - 1) * m + self.GROUP_COST
            cuts = [lo] + [r for r in range(lo + 1, hi) if adj[r] == m] + [hi]
            cost, parts = 0, []
            for a, b in zip(cuts, cuts[1:]):
                c, g = solve(a, b)
                cost += c
                parts += g
                if cost >= whole:
                    break
            if whole <= cost:
                return whole, [(order[lo:hi], m)]
            return cost, parts

        return solve(0, len(order))[1]

    def _forward_shared(self, tokens: torch.Tensor) -> torch.Tensor:
        """Pooled, projected rows (B x D, not normalised) via the shared-prefix path.

        Rows are grouped by the tokens they start with (``_prefix_groups``: one group for
        one template's prompts). Every token is packed, without padding, for what is per
        token (layer norms, projections, MLP): each group's prefix once, then each row's
        own tokens, rows in order of their own length. Attention runs per run of rows of
        one own length (no padding there either): the prefixes causal among themselves
        (padded to the longest), each row over its group's prefix keys/values plus its
        own tokens up to itself."""
        m = self.model
        dev = tokens.device
        B = tokens.shape[0]
        n = self._pool_index(tokens) + 1                        # row lengths
        groups = self._prefix_groups(tokens, n)
        G = len(groups)
        group_of = [0] * B
        plen = [p for _, p in groups]
        for gi, (members, _) in enumerate(groups):
            for i in members:
                group_of[i] = gi
        n_list = n.tolist()
        own = [n_list[i] - plen[group_of[i]] for i in range(B)]      # >= 1 each
        perm = sorted(range(B), key=own.__getitem__)                  # rows by own length
        runs: List[Tuple[int, int, int]] = []                         # (first, count, length)
        for r, i in enumerate(perm):
            if runs and runs[-1][2] == own[i]:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1, own[i])
            else:
                runs.append((r, 1, own[i]))
        Pmax = max(plen)
        cast = m.transformer.get_cast_dtype()
        pos = m.positional_embedding

        # packed token ids and positions: the groups' prefixes (Sp), then own tokens (T)
        ids: List[int] = []
        where: List[int] = []
        rows_tok = tokens.tolist()
        for members, p in groups:
            ids += rows_tok[members[0]][:p]
            where += range(p)
        sp = len(ids)
        for i in perm:
            p = plen[group_of[i]]
            ids += rows_tok[i][p:n_list[i]]
            where += range(p, n_list[i])
        x = (m.token_embedding(torch.tensor(ids, device=dev)).to(cast)
             + pos[torch.tensor(where, device=dev)].to(cast))
        plen_t = torch.tensor(plen, device=dev)
        valid_p = torch.arange(Pmax, device=dev)[None, :] < plen_t[:, None]      # G x Pmax
        perm_t = torch.tensor(perm, device=dev)
        gof = torch.tensor(group_of, device=dev)[perm_t]           # group per sorted row
        # per run: the rows' prefix keys visible (their group's), own tokens causal
        masks, offsets, off = [], [], sp
        for r0, c, ln in runs:
            masks.append(torch.cat([valid_p[gof[r0:r0 + c]][:, None, :].expand(c, ln, Pmax),
                                    torch.ones(ln, ln, dtype=torch.bool, device=dev).tril()
                                    .expand(c, ln, ln)], 2)[:, None])
            offsets.append(off)
            off += c * ln
        blocks = list(m.transformer.resblocks)
        for li, blk in enumerate(blocks):
            attn = blk.attn
            heads, width = attn.num_heads, attn.embed_dim
            hd = width // heads
            last = li == len(blocks) - 1
            h = F.linear(blk.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)   # N x 3W
            outs = []
            kp = vp = None
            if Pmax:
                pbuf = h.new_zeros(G, Pmax, 3 * width)
                pbuf[valid_p] = h[:sp]
                qp, kp, vp = pbuf.view(G, Pmax, 3, heads, hd).permute(2, 0, 3, 1, 4)
                if not last:                    # the prefixes' own outputs: not needed last
                    a = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True)
                    outs.append(a.transpose(1, 2).reshape(G, Pmax, width)[valid_p])
            for (r0, c, ln), mask, o in zip(runs, masks, offsets):
                q, k, v = h[o:o + c * ln].view(c, ln, 3, heads, hd).permute(2, 0, 3, 1, 4)
                if Pmax:
                    g = gof[r0:r0 + c]
                    k = torch.cat([kp[g], k], 2)
                    v = torch.cat([vp[g], v], 2)
                if last:        # only the pooled (last) token of each row goes on
                    q, mask = q[:, :, -1:], mask[:, :, -1:]
                a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)   # c x H x ln' x hd
                outs.append(a.transpose(1, 2).reshape(-1, width))
            a = torch.cat(outs) if len(outs) > 1 else outs[0]
            if last:
                pooled = torch.tensor([o + (j + 1) * ln - 1 for (_, c, ln), o in
                                       zip(runs, offsets) for j in range(c)], device=dev)
                x = x[pooled]
            x = x + blk.ls_1(attn.out_proj(a))
            x = x + blk.ls_2(blk.mlp(blk.ln_2(x)))
        out = torch.empty_like(x)
        out[perm_t] = x                                          # back to the rows' order
        return self._project(m.ln_final(out))

    @torch.inference_mode()
    def __call__(self, prompts: Sequence[str]) -> torch.Tensor:
        self.exact()
        tokens = self.tokenizer(list(prompts)).to(self.device)
        low = self.dtype != torch.float32
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=low):
            if self.mode == "shared_prefix":
                emb = self._forward_shared(tokens)
            else:
                emb = self._forward(tokens, self.mode == "truncated")
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

        Prompts go in order of (template, length): a batch holds one template's prompts
        (or a few templates' for a small vocabulary), whose rows share the template's
        leading tokens, run once per batch by ``OpenClipTextEncoder``; and within a
        template, rows of similar length pad little. Rows go back to their place."""
        from tqdm import tqdm

        n_t = len(self.templates)
        prompts = [p for s in synonyms for p in make_prompts(s, self.templates)]
        # prompt k is template k % n_t of synonym k // n_t
        order = sorted(range(len(prompts)), key=lambda i: (i % n_t, len(prompts[i])))
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        rows = [None] * len(prompts)
        long = len(prompts) > 3 * self.batch_size
        t0 = time.perf_counter()
        # a bar for long encodes only (tqdm hides itself when stderr is not a terminal)
        bar = tqdm(total=len(prompts), desc="text encoding", unit="prompt", leave=False,
                   disable=None if long else True)
        for idx in batches:
            batch = self._encode_prompts([prompts[j] for j in idx]).detach().float().cpu()
            for j, row in zip(idx, batch):
                rows[j] = row
            bar.update(len(idx))
        bar.close()
        self.prompts_encoded += len(prompts)
        if long:
            log.info("encoded %d prompts (%d synonyms x %d templates) in %.1f s", len(prompts),
                     len(synonyms), n_t, time.perf_counter() - t0)
        per_prompt = torch.stack(rows).reshape(len(synonyms), n_t, -1)
        # each prompt row is already unit length (engine contract); normalise again to be safe
        per_prompt = torch.nn.functional.normalize(per_prompt, dim=-1)
        mean = torch.nn.functional.normalize(per_prompt.mean(dim=1), dim=-1)
        return [m.numpy().astype(np.float32, copy=True) for m in mean]


__all__ = ["TextEmbedder", "DiskCache", "OpenClipTextEncoder", "text_batch_size"]
