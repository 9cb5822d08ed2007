"""What weights a config needs, where each file is published, and whether it is here.

``requirements(cfg)`` asks the configured engine, through the registry, which files it
reads (``Engine.weights_needs(cfg)``: declarations of ``ovseg_ros/weights/sources.py``)
and turns each into a ``Need``: open_clip / timm pretrained weights (huggingface_hub
cache), local files named by ``*_checkpoint`` settings, the engine's own checkpoint
(matched against ``Engine.releases``). Nothing is guessed from setting names.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

from ..config import Config
from ..registry import get_engine
from .environment import hf_hub_cache
from .files import resolve_path
from .releases import Release, release_for
from .sources import CheckpointFile, OpenClipWeights, TimmWeights
from .tiny import register_tiny_models_if_named


@dataclass
class Need:
    """One weights file a config needs."""

    kind: str                  # open_clip | timm | file | released
    setting: str               # the config key that names it
    what: str                  # model / tag / file name
    source: str                # where it is published
    present: bool
    location: str              # where it is (present) or would be (missing)
    hint: str = ""             # how to bring it
    size: Optional[int] = None
    sha256: str = ""
    checksum_note: str = ""    # published checksum facts other than a SHA-256
    # for fetch / pack
    repo_id: str = ""
    filenames: Tuple[str, ...] = ()
    url: str = ""
    path: Optional[Path] = None
    release: Optional[Release] = None
    fetchable: bool = True

    def describe(self) -> str:
        size = f"{self.size} bytes" if self.size is not None else "size unknown"
        sha = self.sha256 or "sha256 unknown"
        extra = f", {self.checksum_note}" if self.checksum_note else ""
        return f"{self.kind} {self.what} [{self.setting}] from {self.source} ({size}, {sha}{extra})"


def _hf_cached(repo_id: str, filenames: Iterable[str]) -> Optional[str]:
    from huggingface_hub import try_to_load_from_cache

    for name in filenames:
        hit = try_to_load_from_cache(repo_id, name, cache_dir=str(hf_hub_cache()))
        if isinstance(hit, str) and os.path.isfile(hit):
            return hit
    return None


def _open_clip_need(cfg: Config, d: OpenClipWeights) -> Need:
    model, tag = cfg[d.model], cfg[d.pretrained]
    setting = d.pretrained
    if cfg[d.checkpoint]:
        return _file_need(cfg, d.checkpoint, f"open_clip {model} weights")
    if not tag:
        return Need("open_clip", setting, f"{model} (no tag)", "-", False, "-",
                    hint=f"set '{setting}' (an open_clip tag) or '{d.checkpoint}'",
                    fetchable=False)
    import open_clip

    register_tiny_models_if_named(model)
    pcfg = open_clip.get_pretrained_cfg(model, tag)
    what = f"{model} / {tag}"
    if not pcfg:
        return Need("open_clip", setting, what, "-", False, "-",
                    hint=f"open_clip has no pretrained tag {tag!r} for {model!r} (see "
                         "open_clip.list_pretrained()); fix the config", fetchable=False)
    hub = pcfg.get("hf_hub", "")
    if hub:
        repo_id, filename = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else \
            (hub.rstrip("/"), "")
        if filename:
            names = (filename[:-4] + ".safetensors", filename) if filename.endswith(
                (".bin", ".pth")) else (filename,)
        else:   # open_clip's default names, safetensors first (open_clip/pretrained.py)
            names = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
        hit = _hf_cached(repo_id, names)
        return Need("open_clip", setting, what, f"huggingface.co/{repo_id}", bool(hit),
                    hit or f"{hf_hub_cache()} (models--{repo_id.replace('/', '--')})",
                    hint=f"with network: ovseg-weights fetch (or open_clip.create_model({model!r}, "
                         f"pretrained={tag!r}) once)",
                    repo_id=repo_id, filenames=names, path=Path(hit) if hit else None)
    url = pcfg.get("url", "")
    target = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
    return Need("open_clip", setting, what, url, target.is_file(), str(target),
                hint="with network: ovseg-weights fetch", url=url,
                path=target if target.is_file() else None)


def _timm_need(cfg: Config, d: TimmWeights) -> Need:
    model = cfg[d.model]
    if cfg[d.checkpoint]:
        return _file_need(cfg, d.checkpoint, f"timm {model} weights")
    import timm.models

    register_tiny_models_if_named(model)
    setting = d.model
    try:
        pcfg = timm.models.get_pretrained_cfg(model)
    except Exception:   # an unknown name: the config check reports it
        pcfg = None
    repo_id = getattr(pcfg, "hf_hub_id", "") if pcfg is not None else ""
    if not repo_id:
        return Need("timm", setting, model, "-", False, "-",
                    hint=f"timm publishes no weights for {model!r}; set '{d.checkpoint}'",
                    fetchable=False)
    repo_id = repo_id.split("@", 1)[0]
    filename = getattr(pcfg, "hf_hub_filename", "") or ""
    names = (filename,) if filename else ("model.safetensors", "pytorch_model.bin")
    hit = _hf_cached(repo_id, names)
    return Need("timm", setting, model, f"huggingface.co/{repo_id}", bool(hit),
                hit or f"{hf_hub_cache()} (models--{repo_id.replace('/', '--')})",
                hint="with network: ovseg-weights fetch (or "
                     f"timm.create_model({model!r}, pretrained=True) once)",
                repo_id=repo_id, filenames=names,
                path=Path(hit) if hit else None)


def _file_need(cfg: Config, setting: str, what: str) -> Need:
    path = resolve_path(cfg[setting], cfg["weights_dir"])
    return Need("file", setting, what, "local file", path.is_file(), str(path),
                hint=f"copy the file there or fix '{setting}'",
                path=path if path.is_file() else None,
                fetchable=False)


def _released_need(cfg: Config, d: CheckpointFile) -> Need:
    setting = d.setting
    rel = release_for(cfg, setting)
    source = f"{rel.page} ({rel.published_in})" if rel else "not a published file name"
    note = f"published md5 begins {rel.md5_prefix}" if rel and rel.md5_prefix else ""
    common = dict(size=rel.size if rel else None, sha256=rel.sha256 if rel else "",
                  checksum_note=note, release=rel, url=rel.download_url if rel else "")
    if not cfg[setting]:
        name = rel.name if rel else "the released checkpoint"
        return Need("released", setting, name, source, False, "(not set)",
                    hint=f"set '{setting}' (e.g. {name}, relative to weights_dir), then "
                         "ovseg-weights fetch", fetchable=False, **common)
    path = resolve_path(cfg[setting], cfg["weights_dir"])
    what = Path(cfg[setting]).name + (f" ({rel.description})" if rel else "")
    hint = ("with network: ovseg-weights fetch" if rel else "copy the file there") + \
        (f"; or download it in a browser from {rel.page} to {path}" if rel else "")
    return Need("released", setting, what, source, path.is_file(), str(path), hint=hint,
                path=path if path.is_file() else None, fetchable=rel is not None, **common)


def _local_facts(need: Need) -> Need:
    """Size of a file on disk, and its SHA-256 where the huggingface_hub cache names its
    blob by it (files stored with Git LFS); nothing is read."""
    if need.present and need.path is not None:
        real = need.path.resolve()
        need.size = need.size or real.stat().st_size
        if not need.sha256 and len(real.name) == 64 and \
                all(c in "0123456789abcdef" for c in real.name) and "blobs" in real.parts:
            need.sha256 = real.name
    return need


def engine_needs(cfg: Config) -> List[Need]:
    """The files the configured engine reads, as it declares them
    (``Engine.weights_needs(cfg)``), in its order."""
    engine = get_engine(cfg["engine"])
    needs: List[Need] = []
    for declared in engine.weights_needs(cfg):
        if isinstance(declared, OpenClipWeights):
            needs.append(_open_clip_need(cfg, declared))
        elif isinstance(declared, TimmWeights):
            needs.append(_timm_need(cfg, declared))
        elif isinstance(declared, CheckpointFile):
            needs.append(_released_need(cfg, declared))
        else:
            raise TypeError(f"engine {cfg['engine']!r} declares {declared!r} in weights_needs; "
                            "expected OpenClipWeights, TimmWeights or CheckpointFile "
                            "(ovseg_ros/weights/sources.py)")
    return needs


def requirements(cfg: Config) -> List[Need]:
    """Every weights file ``cfg`` needs ([] with random_init: nothing is read), with what
    is known of each on disk."""
    if cfg["random_init"]:
        return []
    return [_local_facts(n) for n in engine_needs(cfg)]


__all__ = ["Need", "requirements", "engine_needs"]
