"""Presets the weights tool works on: the config files of config/ and every engine's
defaults (``engine:<name>``)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from ..config import Config, make_config, read_config_file
from ..registry import list_engines
from .errors import WeightsToolError


def default_config_dir() -> Path:
    """config/ of the source tree, else the installed share/ovseg_ros/config."""
    here = Path(__file__).resolve().parents[2] / "config"
    if here.is_dir():
        return here
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("ovseg_ros")) / "config"
    except Exception:   # not a ROS install either: no preset files, engine defaults only
        return here


@dataclass
class Preset:
    name: str
    source: str               # the file, or "defaults of engine X"
    cfg: Config
    raw: dict                 # the file's own settings (what a bundle's config starts from)


def _load_preset_file(path: Path) -> Preset:
    raw = read_config_file(path)
    return Preset(path.stem, str(path), make_config(raw), raw)


def list_presets(config_dir: Optional[Path] = None) -> List[Preset]:
    """Every config file in ``config_dir`` and every engine's defaults (``engine:<name>``)."""
    config_dir = config_dir or default_config_dir()
    presets = [_load_preset_file(p) for p in sorted(config_dir.glob("*.yaml"))]
    for name in list_engines():
        raw = {"engine": name}
        presets.append(Preset(f"engine:{name}", f"defaults of engine {name}", make_config(raw),
                              raw))
    return presets


def resolve_preset(name: str, config_dir: Optional[Path] = None) -> Preset:
    """A preset by name (``fcclip``, ``engine:maftplus``) or a config file path."""
    path = Path(os.path.expanduser(name))
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return _load_preset_file(path)
    if name.startswith("engine:"):
        engine = name.split(":", 1)[1]
        if engine not in list_engines():
            raise WeightsToolError(f"no engine {engine!r}; engines: {', '.join(list_engines())}")
        raw = {"engine": engine}
        return Preset(name, f"defaults of engine {engine}", make_config(raw), raw)
    config_dir = config_dir or default_config_dir()
    candidate = config_dir / f"{name}.yaml"
    if candidate.is_file():
        return _load_preset_file(candidate)
    known = [p.stem for p in sorted(config_dir.glob("*.yaml"))] + \
        [f"engine:{e}" for e in list_engines()]
    raise WeightsToolError(f"no preset {name!r}: give a config file or one of {', '.join(known)}")


__all__ = ["Preset", "list_presets", "resolve_preset", "default_config_dir"]
