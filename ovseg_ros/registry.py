"""Registries of engines and backends, looked up by name (timm/open_clip style).

An engine module registers its factory with ``@register_engine("name")``;
``load_segmenter`` finds it by the config's ``engine`` key. Adding a method
means one new module under ``ovseg_ros/engines`` (the engine, importing torch),
one torch-free ``ovseg_ros/engines/<name>_config.py`` (its ``PARAMS``: the
``<name>.*`` settings with defaults, ranges and help) and one line in
``_ENGINE_MODULES`` below. The schema (``ovseg_ros.config``), the ``engine``
choices, the node's parameters and the docs tables are assembled from here.
"""
from __future__ import annotations

import importlib
from typing import Callable, Dict

_ENGINES: Dict[str, Callable] = {}
_BACKENDS: Dict[str, Callable] = {}

# Modules imported lazily the first time a name is looked up, so importing
# ovseg_ros stays cheap (no torch import for the config or the node's startup).
# name -> (engine module, torch-free config-group module)
_ENGINE_SOURCES = {
    "proxyclip": ("ovseg_ros.engines.proxyclip", "ovseg_ros.engines.proxyclip_config"),
    "fcclip": ("ovseg_ros.engines.fcclip", "ovseg_ros.engines.fcclip_config"),
    "maftplus": ("ovseg_ros.engines.maftplus", "ovseg_ros.engines.maftplus_config"),
    "ovseg": ("ovseg_ros.engines.ovseg", "ovseg_ros.engines.ovseg_config"),
}
_ENGINE_MODULES = {name: modules[0] for name, modules in _ENGINE_SOURCES.items()}
_BACKEND_MODULES = {
    "torch": "ovseg_ros.backends.torch_backend",
    "onnxruntime": "ovseg_ros.backends.onnxruntime_backend",
    "tensorrt": "ovseg_ros.backends.tensorrt_backend",
}


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
    return _lookup(name, _ENGINES, _ENGINE_MODULES, "engine")


def get_backend(name: str) -> Callable:
    return _lookup(name, _BACKENDS, _BACKEND_MODULES, "backend")


def list_engines() -> list:
    return sorted(set(_ENGINES) | set(_ENGINE_MODULES))


def engine_config_modules() -> Dict[str, str]:
    """name -> module holding that engine's ``PARAMS`` (in registration order)."""
    return {name: modules[1] for name, modules in _ENGINE_SOURCES.items()}


def list_backends() -> list:
    return sorted(set(_BACKENDS) | set(_BACKEND_MODULES))
