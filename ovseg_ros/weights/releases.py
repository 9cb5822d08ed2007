"""Which published checkpoint a config names, from the releases its engine declares.

Each engine class lists its own published files (``Engine.releases``, a tuple of
``ovseg_ros.weights.sources.Release``); this module asks the engine, through the
registry, and matches the config against them. Sizes and SHA-256 are not published for
any of today's releases ("unknown"); OVSeg's page gives the first six hex digits of the
MD5 only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

from ..config import Config
from ..registry import get_engine, list_engines
from .sources import Release


def releases_of(engine: str) -> Tuple[Release, ...]:
    """The checkpoints ``engine`` declares as published (``Engine.releases``)."""
    return tuple(getattr(get_engine(engine), "releases", ()))


def all_releases() -> Tuple[Release, ...]:
    """Every engine's published checkpoints, engine by engine."""
    return tuple(r for name in list_engines() for r in releases_of(name))


def release_for(cfg: Config, setting: str, engine: Optional[str] = None) -> Optional[Release]:
    """The published file the checkpoint ``setting`` names (by file stem), else the
    engine's release matching its settings (e.g. MAFT+'s CDT variant)."""
    engine = engine or cfg["engine"]
    stem = Path(cfg[setting]).stem if cfg[setting] else ""
    candidates = releases_of(engine)
    for r in candidates:
        if stem and Path(r.name).stem == stem:
            return r
    if stem:
        return None
    for r in candidates:
        if all(cfg.get(k) == v for k, v in r.settings):
            return r
    return None


__all__ = ["Release", "releases_of", "all_releases", "release_for"]
