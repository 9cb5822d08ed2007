"""``pack`` / ``unpack``: a self-contained bundle (weights, manifests, the preset config
pointing at them) for machines without network."""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Callable, List, Tuple

import yaml

from ..config import make_config, read_config_file
from .convert import convert
from .environment import BUNDLE_MANIFEST
from .errors import WeightsToolError
from .files import BUNDLE_CONFIG, BUNDLE_FORMAT, manifest_path, sha256_of
from .needs import requirements
from ..presets import Preset
from .verify import FileCheck, verify_bundle, verify_weights


def _nest(flat: dict) -> dict:
    nested: dict = {}
    for key, value in flat.items():
        d = nested
        *groups, leaf = key.split(".")
        for g in groups:
            d = d.setdefault(g, {})
        d[leaf] = value
    return nested


def _flat_raw(raw: dict) -> dict:
    from ..config import _flatten

    return _flatten(raw)


def _write_bundle_config(path: Path, flat: dict) -> None:
    path.write_text("# Preset of an ovseg_ros weights bundle (ovseg-weights pack); weights_dir is\n"
                    "# this folder, written by ovseg-weights unpack.\n"
                    + yaml.safe_dump({"/**": {"ros__parameters": _nest(flat)}}, sort_keys=False))


def pack(preset: Preset, out: Path, trust_pickle: bool = False,
         say: Callable[[str], None] = print) -> dict:
    """Everything ``preset`` needs, in one tar: weights (released checkpoints converted to
    safetensors), manifests, the preset config pointing at them, a bundle manifest."""
    import tempfile

    cfg = preset.cfg
    if cfg["random_init"]:
        raise WeightsToolError(f"preset {preset.name} uses random_init: it needs no weights")
    needs = requirements(cfg)
    missing = [n for n in needs if not n.present]
    if missing:
        raise WeightsToolError("cannot pack, missing: " + "; ".join(
            f"{n.what} [{n.setting}] at {n.location} ({n.hint})" for n in missing))
    g = cfg["engine"]
    flat = _flat_raw(preset.raw)
    files = []
    with tempfile.TemporaryDirectory(prefix="ovseg_bundle_") as tmp:
        root = Path(tmp)
        (root / "weights").mkdir()
        for n in needs:
            assert n.path is not None
            if n.kind == "released":
                if n.path.suffix == ".safetensors" and manifest_path(n.path).is_file():
                    check = verify_weights(n.path)
                    if not check.ok:
                        raise WeightsToolError(f"{n.path}: " + "; ".join(check.problems))
                    rel = Path("weights") / n.path.name
                    shutil.copy2(n.path, root / rel)
                    shutil.copy2(manifest_path(n.path), root / manifest_path(rel))
                else:
                    rel = Path("weights") / (n.path.stem + ".safetensors")
                    say(f"converting {n.path} -> {rel}")
                    convert(n.path, root / rel, g, cfg, trust_pickle=trust_pickle, say=say)
                files.append((rel, n, manifest_path(rel)))
                flat[n.setting] = str(rel)
            else:
                sub = "clip" if n.kind == "open_clip" or n.setting.endswith(".clip_checkpoint") \
                    else "vfm"
                name = n.what.replace(" / ", ".").replace(" ", "_").replace("/", "_") \
                    if n.kind != "file" else n.path.name
                rel = Path("weights") / sub / (name + n.path.suffix if n.kind != "file" else name)
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                say(f"adding {n.what} ({n.path}) as {rel}")
                shutil.copy2(n.path, root / rel)
                files.append((rel, n, None))
                target_key = {"open_clip": f"{g}.clip_checkpoint",
                              "timm": f"{g}.vfm_checkpoint"}.get(n.kind, n.setting)
                flat[target_key] = str(rel)
        flat["weights_dir"] = ""
        _write_bundle_config(root / BUNDLE_CONFIG, flat)
        make_config(root / BUNDLE_CONFIG)   # the bundle's config must be valid as written
        entries = []
        for rel, n, mrel in files:
            entries.append({"path": str(rel), "kind": n.kind, "setting": n.setting,
                            "what": n.what, "source": n.source,
                            "sha256": sha256_of(root / rel), "size": (root / rel).stat().st_size})
            if mrel is not None:
                entries.append({"path": str(mrel), "kind": "manifest", "setting": n.setting,
                                "what": f"manifest of {rel.name}",
                                "source": "ovseg-weights convert",
                                "sha256": sha256_of(root / mrel),
                                "size": (root / mrel).stat().st_size})
        bundle = {"format": BUNDLE_FORMAT, "preset": preset.name, "source": preset.source,
                  "engine": g, "config": BUNDLE_CONFIG, "files": entries,
                  "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        (root / BUNDLE_MANIFEST).write_text(json.dumps(bundle, indent=2) + "\n")
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        part = out.with_name(out.name + ".part")
        with tarfile.open(part, "w") as tar:   # weights do not compress: plain tar
            tar.add(root / BUNDLE_MANIFEST, arcname=BUNDLE_MANIFEST)
            tar.add(root / BUNDLE_CONFIG, arcname=BUNDLE_CONFIG)
            for e in entries:
                tar.add(root / e["path"], arcname=e["path"])
        part.replace(out)
    return bundle


def unpack(archive: Path, dest: Path) -> Tuple[Path, List[FileCheck]]:
    """Extract a bundle (regular files only, no path outside ``dest``), verify every file,
    and point its config's weights_dir at ``dest``. Returns (config path, checks)."""
    archive, dest = Path(archive), Path(os.path.expanduser(str(dest))).resolve()
    try:
        tar = tarfile.open(archive, "r")
    except (OSError, tarfile.TarError) as exc:
        raise WeightsToolError(f"{archive} is not a readable tar file: {exc}") from exc
    with tar:
        names = tar.getnames()
        if BUNDLE_MANIFEST not in names:
            raise WeightsToolError(f"{archive} is not a weights bundle (no {BUNDLE_MANIFEST})")
        dest.mkdir(parents=True, exist_ok=True)
        tar.extractall(dest, filter="data")   # refuses links out, absolute paths, devices
    cfg_path = dest / BUNDLE_CONFIG
    raw = read_config_file(cfg_path)
    flat = _flat_raw(raw)
    flat["weights_dir"] = str(dest)
    _write_bundle_config(cfg_path, flat)
    return cfg_path, verify_bundle(dest)


__all__ = ["pack", "unpack"]
