"""Registries of engines and backends, looked up by name (timm/open_clip style).

An engine is a pair of modules: ``<module>`` (the engine, importing torch; it registers
its class with ``@register_engine("name")``) and the torch-free ``<module>_config``
(its ``PARAMS``: the ``<name>.*`` settings with defaults, ranges and help). The registry
finds them, nothing lists them:

* the engines of this package: every ``ovseg_ros/engines/<name>_config.py`` beside its
  ``ovseg_ros/engines/<name>.py``;
* engines of other installed packages: the entry points of group ``ovseg_ros.engines``
  (``name = package.module``, the config module being ``package.module_config``).

The schema (``ovseg_ros.config``), the ``engine`` choices, the node's parameters, the
weights tool and the docs tables are assembled from here. Adding an engine is
docs/architecture.md, "Adding an engine".
"""
from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import Callable, Dict, Tuple

_ENGINES: Dict[str, Callable] = {}
_BACKENDS: Dict[str, Callable] = {}

#: the engine of a config that names none; listed first (documentation order)
DEFAULT_ENGINE = "proxyclip"
#: the entry-point group through which another installed package adds engines
ENTRY_POINT_GROUP = "ovseg_ros.engines"
_ENGINE_DIR = Path(__file__).resolve().parent / "engines"
_CONFIG_SUFFIX = "_config"

# Modules imported lazily the first time a name is looked up, so importing
# ovseg_ros stays cheap (no torch import for the config or the node's startup).
_BACKEND_MODULES = {
    "torch": "ovseg_ros.backends.torch_backend",
    "onnxruntime": "ovseg_ros.backends.onnxruntime_backend",
    "tensorrt": "ovseg_ros.backends.tensorrt_backend",
}


def _package_engines() -> Dict[str, str]:
    """name -> engine module, for every ``<name>_config.py`` with a ``<name>.py`` beside it."""
    found = {}
    for path in _ENGINE_DIR.glob(f"*{_CONFIG_SUFFIX}.py"):
        name = path.name[:-len(_CONFIG_SUFFIX + ".py")]
        if not (_ENGINE_DIR / f"{name}.py").is_file():
            raise ImportError(f"{path} declares engine {name!r} but {name}.py is not beside it")
        found[name] = f"ovseg_ros.engines.{name}"
    return found


def _installed_engines() -> Dict[str, str]:
    """name -> engine module, from the ``ovseg_ros.engines`` entry points."""
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


@functools.lru_cache(maxsize=None)
def engine_sources() -> Dict[str, Tuple[str, str]]:
    """name -> (engine module, config module): the default engine first, then by name.

    Read once per process (the schema is assembled from it at import)."""
    found = _package_engines()
    for name, module in _installed_engines().items():
        if name in found and found[name] != module:
            raise ImportError(f"engine {name!r} of entry point {module!r} ({ENTRY_POINT_GROUP}) "
                              f"clashes with {found[name]!r}; rename one")
        found[name] = module
    order = sorted(found, key=lambda n: (n != DEFAULT_ENGINE, n))
    return {n: (found[n], found[n] + _CONFIG_SUFFIX) for n in order}


def register_engine(name: str):
    def deco(factory: Callable) -> Callable:
        _ENGINES[name] = factory
        return factory
    return deco


def register_backend(name: str):
    def deco(factory: Callable) -> Callable:
        _BACKENDS[name] = factory
        return factory
    return deco


def _lookup(name: str, table: Dict[str, Callable], modules: Dict[str, str], what: str) -> Callable:
    if name not in table and name in modules:
        importlib.import_module(modules[name])
    if name not in table:
        known = sorted(set(table) | set(modules))
        raise KeyError(f"unknown {what} {name!r}; available: {known}")
    return table[name]


def get_engine(name: str) -> Callable:
    modules = {n: m[0] for n, m in engine_sources().items()}
    return _lookup(name, _ENGINES, modules, "engine")


def get_backend(name: str) -> Callable:
    return _lookup(name, _BACKENDS, _BACKEND_MODULES, "backend")


def list_engines() -> list:
    return sorted(set(_ENGINES) | set(engine_sources()))


def engine_config_modules() -> Dict[str, str]:
    """name -> module holding that engine's ``PARAMS`` (the default engine first)."""
    return {name: modules[1] for name, modules in engine_sources().items()}


def list_backends() -> list:
    """The backends, the built-in ones in their documentation order."""
    return list(_BACKEND_MODULES) + sorted(set(_BACKENDS) - set(_BACKEND_MODULES))
