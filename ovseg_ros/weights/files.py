"""Paths and digests of weights files, and where a converted file's manifest lives."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_FORMAT = "ovseg_ros.weights/1"
BUNDLE_FORMAT = "ovseg_ros.bundle/1"
#: the preset config inside a bundle
BUNDLE_CONFIG = "config.yaml"
_CHUNK = 1 << 22


def resolve_path(path: str, weights_dir: str = "") -> Path:
    """A checkpoint path: '~' expanded; relative paths are looked up in weights_dir."""
    p = Path(os.path.expanduser(path))
    if not p.is_absolute() and weights_dir:
        p = Path(os.path.expanduser(weights_dir)) / p
    return p


def file_fingerprint(path: Path, chunk: int = _CHUNK) -> str:
    """Size plus a SHA-256 of the first and last 4 MiB: identifies a checkpoint without
    reading hundreds of megabytes at every start."""
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(chunk))
        if size > chunk:
            f.seek(max(size - chunk, chunk))
            h.update(f.read(chunk))
    return f"{size}-{h.hexdigest()[:20]}"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_path(weights: Path) -> Path:
    return weights.with_name(weights.name + MANIFEST_SUFFIX)


__all__ = ["resolve_path", "file_fingerprint", "sha256_of", "manifest_path", "MANIFEST_SUFFIX",
           "MANIFEST_FORMAT", "BUNDLE_FORMAT", "BUNDLE_CONFIG"]
