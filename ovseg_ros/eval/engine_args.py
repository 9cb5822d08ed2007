"""The engine and the classes from the command-line arguments, shared by ``ovseg-eval``'s
single-bag and multi-bag paths (``cli.py``, ``multi_bag.py``) and ``ovseg-segment``."""
from __future__ import annotations

from typing import Optional, Sequence

import yaml

from ..core.class_names import ClassList, load_class_file


class CliError(ValueError):
    """A command-line argument is wrong."""


def parse_overrides(items: Sequence[str]) -> dict:
    out = {}
    for item in items or ():
        if "=" not in item:
            raise CliError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def engine_config(config: Optional[str], sets: Sequence[str], ctx=None):
    """The validated engine config from --config/--set; under torchrun ``device: cuda`` becomes
    ``cuda:<LOCAL_RANK>``. Cheap: no model is built."""
    from ..config import make_config
    from .distributed import rank_device

    overrides = {k.replace(".", "__"): v for k, v in parse_overrides(sets).items()}
    cfg = make_config(config if config else None, **overrides)
    if ctx is not None and rank_device(cfg["device"], ctx) != cfg["device"]:
        cfg = cfg.replace(device=rank_device(cfg["device"], ctx))
    return cfg


def load_engine_from(cfg, classes):
    """The segmenter of a validated config; ``classes``: a ClassList, a class file / bundled
    list name, or None (the config's vocabulary)."""
    from .. import load_segmenter

    if isinstance(classes, str):
        classes = classes_arg(classes, None, "")
    seg = load_segmenter(cfg)
    if classes is not None:
        seg.set_vocabulary(list(classes.names), list(classes.is_thing) if classes.is_thing
                           else None)
    return seg


def classes_arg(arg: Optional[str], default: Optional[str], what: str) -> ClassList:
    name = arg or default
    if not name:
        raise CliError(f"{what} needs --classes (a bundled list such as ade150, or a file)")
    try:
        return load_class_file(name)
    except ValueError as exc:   # the message already names the file and line
        raise CliError(str(exc)) from exc
