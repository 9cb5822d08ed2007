"""``verify``: a converted file's full SHA-256 against its manifest and the strict key
check again; a bundle's every file against the bundle manifest."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from ..config import ConfigError, make_config
from .convert import engine_class
from .environment import BUNDLE_MANIFEST
from .errors import WeightsError, WeightsToolError
from .files import BUNDLE_FORMAT, BUNDLE_CONFIG, MANIFEST_FORMAT, MANIFEST_SUFFIX, \
    manifest_path, sha256_of
from .state_dict import compare_layout


@dataclass
class FileCheck:
    path: Path
    problems: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_hash(path: Path, sha256: str, size: Optional[int], check: FileCheck) -> None:
    if not path.is_file():
        check.problems.append(f"missing file {path}")
        return
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        check.problems.append(f"size {actual_size} bytes, manifest says {size}: truncated or "
                              "replaced file")
    digest = sha256_of(path)
    if digest != sha256:
        check.problems.append(f"sha256 mismatch: file {digest}, manifest {sha256}: the file "
                              "changed after it was written (corrupted copy?)")
    else:
        check.notes.append(f"sha256 ok ({digest[:16]}...)")


def verify_weights(path: Path) -> FileCheck:
    """One converted file against its manifest: hash, key count, strict layout check."""
    from safetensors import safe_open

    path = Path(path)
    if path.name.endswith(MANIFEST_SUFFIX):
        path = path.with_name(path.name[:-len(MANIFEST_SUFFIX)])
    check = FileCheck(path)
    mpath = manifest_path(path)
    if not mpath.is_file():
        check.problems.append(f"no manifest {mpath.name} beside it (write one with ovseg-weights "
                              "convert)")
        return check
    try:
        manifest = json.loads(mpath.read_text())
        if manifest.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}")
    except (ValueError, OSError) as exc:
        check.problems.append(f"manifest {mpath.name} is not readable: {exc}")
        return check
    _check_hash(path, manifest["sha256"], manifest.get("size"), check)
    if not path.is_file():
        return check
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:
        check.problems.append(f"not a readable safetensors file: {type(exc).__name__}: {exc}")
        return check
    if len(shapes) != manifest["keys"]:
        check.problems.append(f"{len(shapes)} keys, manifest says {manifest['keys']}")
    engine = manifest["engine"]
    try:
        cls = engine_class(engine)
        cfg = make_config({"engine": engine, **manifest.get("settings", {})})
        report = compare_layout(shapes, cls.checkpoint_layout(cfg))
    except (WeightsToolError, ConfigError, WeightsError) as exc:
        check.problems.append(f"cannot check the keys against engine {engine!r}: {exc}")
        return check
    if report.ok:
        check.notes.append(f"{len(shapes)} keys match engine {engine!r}")
    else:
        check.problems += [f"engine {engine!r}: {p}" for p in report.problems()]
    return check


def verify(target: Path) -> List[FileCheck]:
    """A converted file, a bundle directory (every file it lists) or a directory of
    converted files."""
    target = Path(os.path.expanduser(str(target)))
    if target.is_dir():
        bundle = target / BUNDLE_MANIFEST
        if bundle.is_file():
            return verify_bundle(target)
        found = sorted(target.glob("*" + MANIFEST_SUFFIX))
        if not found:
            return [FileCheck(target, [f"no {BUNDLE_MANIFEST} and no *{MANIFEST_SUFFIX} in "
                                       f"{target}"])]
        return [verify_weights(m) for m in found]
    if not target.exists():
        return [FileCheck(target, [f"{target} does not exist"])]
    if target.suffix != ".safetensors" and not target.name.endswith(MANIFEST_SUFFIX):
        return [FileCheck(target, [f"{target.name} is not a converted file (.safetensors with a "
                                   "manifest); convert a released file with ovseg-weights "
                                   "convert first"])]
    return [verify_weights(target)]


def verify_bundle(root: Path) -> List[FileCheck]:
    try:
        bundle = json.loads((root / BUNDLE_MANIFEST).read_text())
        if bundle.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"format {bundle.get('format')!r}")
    except (ValueError, OSError) as exc:
        return [FileCheck(root / BUNDLE_MANIFEST, [f"not a readable bundle manifest: {exc}"])]
    checks = []
    for entry in bundle["files"]:
        path = root / entry["path"]
        if path.name.endswith(".safetensors") and manifest_path(path).is_file() \
                and entry.get("kind") == "released":
            check = verify_weights(path)
        else:
            check = FileCheck(path)
        if not any("sha256" in p or "missing file" in p for p in check.problems) and \
                not any(n.startswith("sha256 ok") for n in check.notes):
            _check_hash(path, entry["sha256"], entry.get("size"), check)
        checks.append(check)
    cfg_path = root / bundle.get("config", BUNDLE_CONFIG)
    check = FileCheck(cfg_path)
    try:
        make_config(cfg_path)
        check.notes.append("preset config valid")
    except ConfigError as exc:
        check.problems.append(f"preset config: {exc}")
    checks.append(check)
    return checks


__all__ = ["FileCheck", "verify", "verify_weights", "verify_bundle"]
