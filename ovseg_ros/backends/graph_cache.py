"""On-disk cache of exported ONNX graphs and TensorRT plans (what TensorRT calls an
"engine"; in this project "engine" means a segmentation method only).

A cached artifact is one or more files (``<name>.onnx`` and perhaps its
external-data file, or ``<name>.engine``) plus a metadata sidecar
``<name>.json`` holding the full cache key and the size and SHA-256 of every
file. The file name carries a digest of the key, so a changed model, weight,
input shape, precision, opset, GPU or TensorRT version gives a new name and
never overwrites a build that is still valid for another setting.

Reading a cached artifact validates it against its sidecar; a missing
sidecar, a key that differs from the requested one, a truncated file or a
checksum mismatch raise :class:`GraphCacheError` naming the file, the problem
and the fix (delete the file or set ``force_rebuild: true``). A damaged cache
is never silently rebuilt over: the user should learn that their disk or
their copy went wrong.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

#: bump when the sidecar layout changes; older sidecars are then reported as mismatched
METADATA_VERSION = 1
_CHUNK = 1 << 20


#: the environment variable Inductor (torch.compile) reads its on-disk cache directory from
INDUCTOR_CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def inductor_cache_dir(graph_cache_dir: os.PathLike | str) -> Path:
    """Where torch.compile's Inductor keeps its caches (FX graphs, compiled kernels) for this
    project: a sub-directory of ``graph_cache_dir``, beside the ONNX graphs and TensorRT
    plans. Inductor keys and validates its own entries (torch version, graph, settings)."""
    return Path(os.path.expanduser(str(graph_cache_dir))) / "inductor"


class GraphCacheError(RuntimeError):
    """A cached ONNX file or TensorRT plan is unusable; the message says why and how to fix."""


def _canonical(value: Any) -> Any:
    """JSON-stable form of a key value (tuples become lists, keys sorted by json.dumps)."""
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def weights_hash(module) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of a module's state_dict.

    Parameters and buffers both count (normalisation constants and positional
    embeddings live in buffers). Tensors are hashed on the CPU in their stored
    dtype, so the same weights give the same hash on any device.
    """
    import torch

    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        if not isinstance(tensor, torch.Tensor):
            continue
        t = tensor.detach()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        t = t.to("cpu").contiguous()
        # view as bytes: bf16/fp16 have no numpy dtype, uint8 always does
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """Everything a cached artifact depends on.

    ``kind`` is ``onnx`` or ``tensorrt``; ``model`` a readable model id;
    ``graph_settings`` the engine settings baked into the graph as constants
    (given by the engine's ExportSpec); ``input_shape`` uses -1 for a
    dynamic batch; ``extra`` holds kind-specific facts (opset and exporter
    for ONNX; GPU name, compute capability and TensorRT version for TensorRT plans).
    """

    kind: str
    model: str
    weights_hash: str
    input_shape: Tuple[int, ...]
    precision: str
    graph_settings: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> Dict[str, Any]:
        return _canonical({"kind": self.kind, "model": self.model,
                           "weights_hash": self.weights_hash,
                           "input_shape": list(self.input_shape), "precision": self.precision,
                           "graph_settings": dict(self.graph_settings),
                           "extra": dict(self.extra)})

    def digest(self) -> str:
        text = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def stem(self) -> str:
        """File name stem: readable model/shape/precision, then 16 hex digits of the digest."""
        shape = "x".join("dyn" if d < 0 else str(d) for d in self.input_shape)
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", self.model)[:80]
        return f"{slug}-{shape}-{self.precision}-{self.digest()[:16]}"


def _differences(expected: Mapping[str, Any], found: Mapping[str, Any], prefix: str = "") -> list:
    out = []
    for k in sorted(set(expected) | set(found)):
        e, f = expected.get(k, "<missing>"), found.get(k, "<missing>")
        if isinstance(e, Mapping) and isinstance(f, Mapping):
            out += _differences(e, f, prefix + k + ".")
        elif e != f:
            out.append(f"{prefix}{k}: cached {f!r}, wanted {e!r}")
    return out


class GraphCache:
    """A directory of cached artifacts with validated metadata sidecars."""

    def __init__(self, directory: os.PathLike | str):
        self.directory = Path(os.path.expanduser(str(directory)))

    def metadata_path(self, key: CacheKey) -> Path:
        return self.directory / f"{key.stem()}.json"

    def artifact_path(self, key: CacheKey, suffix: str) -> Path:
        return self.directory / f"{key.stem()}{suffix}"

    @staticmethod
    def _fix_hint(path: Path) -> str:
        return (f"delete {path} (and its .json sidecar) or set force_rebuild: true "
                "to build it again")

    def lookup(self, key: CacheKey, suffix: str) -> Optional[Path]:
        """Path of a valid cached artifact, or None when none was built yet.

        Raises GraphCacheError when files exist but are damaged or belong to
        another key.
        """
        main = self.artifact_path(key, suffix)
        meta = self.metadata_path(key)
        if not main.exists() and not meta.exists():
            return None
        self.validate(key, suffix)
        return main

    def validate(self, key: CacheKey, suffix: str) -> Dict[str, Any]:
        """Check an artifact against its sidecar and the wanted key; return the sidecar."""
        main = self.artifact_path(key, suffix)
        meta_path = self.metadata_path(key)
        if not main.exists():
            raise GraphCacheError(f"cached {key.kind} file {main} is missing but its metadata "
                                   f"{meta_path} exists; {self._fix_hint(main)}")
        if not meta_path.exists():
            raise GraphCacheError(f"cached {key.kind} file {main} has no metadata file "
                                   f"{meta_path}, so it cannot be checked; {self._fix_hint(main)}")
        try:
            meta = json.loads(meta_path.read_text())
            if not isinstance(meta, dict):
                raise ValueError("top level is not an object")
        except (OSError, ValueError) as exc:
            raise GraphCacheError(f"metadata file {meta_path} is unreadable or not valid JSON "
                                   f"({exc}); {self._fix_hint(main)}") from exc
        if meta.get("metadata_version") != METADATA_VERSION:
            raise GraphCacheError(f"metadata file {meta_path} has version "
                                   f"{meta.get('metadata_version')!r}, this ovseg_ros writes "
                                   f"{METADATA_VERSION}; {self._fix_hint(main)}")
        found_key = meta.get("key")
        wanted_key = key.as_dict()
        if found_key != wanted_key:
            diffs = _differences(wanted_key, found_key if isinstance(found_key, dict) else {})
            raise GraphCacheError(f"cached {key.kind} file {main} was built for another "
                                   f"setting ({'; '.join(diffs) or 'key differs'}); "
                                   f"{self._fix_hint(main)}")
        files = meta.get("files")
        if not isinstance(files, dict) or main.name not in files:
            raise GraphCacheError(f"metadata file {meta_path} does not list {main.name}; "
                                   f"{self._fix_hint(main)}")
        for name, info in files.items():
            path = self.directory / name
            if not path.exists():
                raise GraphCacheError(f"cached file {path} listed in {meta_path} is missing; "
                                       f"{self._fix_hint(main)}")
            size = path.stat().st_size
            if size != info.get("size"):
                raise GraphCacheError(f"cached file {path} has {size} bytes, its metadata says "
                                       f"{info.get('size')} (truncated or partly written?); "
                                       f"{self._fix_hint(main)}")
            digest = file_sha256(path)
            if digest != info.get("sha256"):
                raise GraphCacheError(f"cached file {path} fails its SHA-256 check (corrupt on "
                                       f"disk or changed after it was written); "
                                       f"{self._fix_hint(main)}")
        return meta

    def read_metadata(self, key: CacheKey) -> Dict[str, Any]:
        return json.loads(self.metadata_path(key).read_text())

    def temp_dir(self) -> tempfile.TemporaryDirectory:
        """A scratch directory on the cache's file system (so the final rename is atomic)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        return tempfile.TemporaryDirectory(dir=self.directory, prefix=".build-")

    def commit(self, key: CacheKey, files: Sequence[Tuple[Path, str]],
               info: Optional[Mapping[str, Any]] = None) -> Path:
        """Move built files into the cache and write their sidecar last.

        ``files`` pairs a built file with its final name in the cache (the
        first is the main artifact). The sidecar is written only after every
        file is in place, so an interrupted build leaves a file without
        metadata, which ``validate`` reports instead of trusting.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        meta_path = self.metadata_path(key)
        if meta_path.exists():
            meta_path.unlink()   # an old sidecar must never vouch for new files
        listed = {}
        for src, name in files:
            dst = self.directory / name
            listed[name] = {"size": Path(src).stat().st_size, "sha256": file_sha256(Path(src))}
            os.replace(src, dst)
        meta = {"metadata_version": METADATA_VERSION, "key": key.as_dict(),
                "key_digest": key.digest(), "files": listed,
                "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "info": _canonical(dict(info or {}))}
        tmp = meta_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
        os.replace(tmp, meta_path)
        return self.directory / files[0][1]

    def remove(self, key: CacheKey, suffixes: Iterable[str]) -> None:
        """Delete an artifact and its sidecar (force_rebuild)."""
        for suffix in suffixes:
            p = self.artifact_path(key, suffix)
            if p.exists():
                p.unlink()
        m = self.metadata_path(key)
        if m.exists():
            m.unlink()


__all__ = ["INDUCTOR_CACHE_ENV", "inductor_cache_dir", "GraphCacheError", "CacheKey",
           "GraphCache", "weights_hash", "file_sha256", "METADATA_VERSION"]
