"""The one preset catalogue.

Three kinds of preset, one module:

* named settings (``PRESETS``: flat config keys, as ``load_segmenter`` takes them): the
  tiny random-weight presets of the tests, the demo and the benchmark, and the real
  architectures the benchmark times (``ovseg-bench --preset``);
* the node's config files (``config/*.yaml``: the settings plus the ROS side), listed by
  ``list_presets`` / ``resolve_preset`` (``ovseg-weights`` works on these);
* every engine's defaults (``engine:<name>``).

Everything else takes its presets from here: ``ovseg_ros/tools/bench/`` (its
``--preset`` choices are ``PRESETS``), the test harnesses (``TINY_*``), the weights tool.
The YAML forms of the tiny ProxyCLIP preset (config/demo_tiny.yaml, a node params file,
and test/configs/tiny_proxyclip.yaml, a config file the command-line tests pass by path)
must stay files; test/core/test_architecture.py checks they carry these values.
Importing this module loads nothing heavy; the tiny models are registered on demand by
name (``ovseg_ros.weights.register_tiny_models_if_named``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from .config import Config, ConfigError, make_config, read_config_file
from .registry import list_engines

#: ProxyCLIP with the tiny ViT CLIP and the tiny DINO-like VFM, 112 px windows
TINY_PROXYCLIP: Dict[str, Any] = {
    "engine": "proxyclip", "random_init": True,
    "proxyclip.clip_model": "ovseg-tiny-ViT", "proxyclip.vfm_model": "ovseg_tiny_vit_patch8",
    "proxyclip.short_side": 112, "proxyclip.crop_size": 112, "proxyclip.stride": 56,
}

#: FC-CLIP with the tiny ConvNeXt CLIP and the full-width head, 20 queries
TINY_FCCLIP: Dict[str, Any] = {
    "engine": "fcclip", "random_init": True, "fcclip.clip_model": "ovseg-tiny-ConvNeXt",
    "fcclip.short_side": 128, "fcclip.max_size": 256, "fcclip.num_queries": 20,
}

#: OVSeg with the tiny Swin, tiny MaskFormer head and tiny mask-adapted CLIP (224 crops),
#: 20 proposals (test/configs/tiny_ovseg.yaml uses 8)
TINY_OVSEG: Dict[str, Any] = {
    "engine": "ovseg", "random_init": True, "ovseg.swin_model": "ovseg_tiny_swin",
    "ovseg.head_size": "tiny", "ovseg.clip_model": "ovseg-tiny-ViT-14",
    "ovseg.short_side": 128, "ovseg.max_size": 256, "ovseg.num_queries": 20,
}

#: Named settings. "tiny" presets use the test models (always random weights); the others
#: are the real architectures (pretrained weights, or random ones for timing).
PRESETS: Dict[str, Dict[str, Any]] = {
    "proxyclip-tiny": TINY_PROXYCLIP,
    "fcclip-tiny": TINY_FCCLIP,
    # ProxyCLIP as published: ViT-B/16 + DINO ViT-B/8, sliding 336/112 windows
    "proxyclip-b16-dinob8": {"engine": "proxyclip"},
    # real-time mode: one window over the image resized to short side 336
    "proxyclip-b16-dinob8-single336": {"engine": "proxyclip", "proxyclip.sliding_window": False},
    # the Jetson / CPU preset: DINO ViT-S/8, one window at 336 (or 224)
    "proxyclip-b16-dinos8-single336": {
        "engine": "proxyclip", "proxyclip.vfm_model": "vit_small_patch8_224.dino",
        "proxyclip.sliding_window": False, "proxyclip.short_side": 336},
    "proxyclip-b16-dinos8-single224": {
        "engine": "proxyclip", "proxyclip.vfm_model": "vit_small_patch8_224.dino",
        "proxyclip.sliding_window": False, "proxyclip.short_side": 224},
    # config/cpu_realtime.yaml's model (test/core/test_architecture.py checks they agree):
    # DINO ViT-S/16, one window at 224, eager (compiled measured no faster through the node)
    "proxyclip-cpu-realtime": {
        "engine": "proxyclip", "proxyclip.clip_model": "ViT-B-16",
        "proxyclip.vfm_model": "vit_small_patch16_224.dino", "proxyclip.short_side": 224,
        "proxyclip.crop_size": 224, "proxyclip.stride": 112, "proxyclip.sliding_window": False,
        "proxyclip.window_batch_size": 1, "torch_compile": False},
    # FC-CLIP as published (short side 800) and a reduced input size
    "fcclip-convnext-l": {"engine": "fcclip"},
    "fcclip-convnext-l-512": {"engine": "fcclip", "fcclip.short_side": 512,
                              "fcclip.max_size": 853},
    # MAFT+ (FC-CLIP's architecture, CDT classifier) at the same reduced input size
    "maftplus-convnext-l-512": {"engine": "maftplus", "maftplus.short_side": 512,
                                "maftplus.max_size": 853},
    # OVSeg (two-stage): tiny test models, and Swin-B + ViT-L/14 as released (short side 640)
    "ovseg-tiny": TINY_OVSEG,
    "ovseg-swinb-vitl14": {"engine": "ovseg"},
}


def preset_settings(name: str) -> Dict[str, Any]:
    """A copy of the named settings ``name`` (a key of ``PRESETS``)."""
    if name not in PRESETS:
        raise ConfigError(f"no preset {name!r}; presets: {', '.join(sorted(PRESETS))}")
    return dict(PRESETS[name])


def preset_group(name: str, engine: str) -> Dict[str, Any]:
    """The ``<engine>.*`` settings (models and geometry) of the preset ``name`` (a config
    file's stem, ``engine:<name>`` or a path; ``resolve_preset``), flat keys: what the
    measurement scripts take a preset's shape from, with weights of their own."""
    cfg = resolve_preset(name).cfg
    return {f"{engine}.{k}": v for k, v in cfg.group(engine).items()}


def default_config_dir() -> Path:
    """config/ of the source tree, else the installed share/ovseg_ros/config."""
    here = Path(__file__).resolve().parent.parent / "config"
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
            raise ConfigError(f"no engine {engine!r}; engines: {', '.join(list_engines())}")
        raw = {"engine": engine}
        return Preset(name, f"defaults of engine {engine}", make_config(raw), raw)
    config_dir = config_dir or default_config_dir()
    candidate = config_dir / f"{name}.yaml"
    if candidate.is_file():
        return _load_preset_file(candidate)
    known = [p.stem for p in sorted(config_dir.glob("*.yaml"))] + \
        [f"engine:{e}" for e in list_engines()]
    raise ConfigError(f"no preset {name!r}: give a config file or one of {', '.join(known)}")


__all__ = ["PRESETS", "TINY_PROXYCLIP", "TINY_FCCLIP", "TINY_OVSEG", "preset_settings",
           "Preset", "list_presets", "resolve_preset", "default_config_dir"]
