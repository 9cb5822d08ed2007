"""Prompt template sets for the text encoder.

* ``imagenet80``: the 80 OpenAI ImageNet templates (ProxyCLIP's default), taken from
  open_clip's zero-shot metadata so they stay identical to the library's list.
* ``vild14``: the 14 ViLD templates used by FC-CLIP and MAFT+.
* ``custom``: the config's ``custom_templates`` (each with exactly one ``{}``).
"""
from __future__ import annotations

import hashlib
from typing import Sequence, Tuple

from ..config import Config, ConfigError

VILD_TEMPLATES: Tuple[str, ...] = (
    "a photo of a {}.",
    "This is a photo of a {}",
    "There is a {} in the scene",
    "There is the {} in the scene",
    "a photo of a {} in the scene",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
)


def imagenet80_templates() -> Tuple[str, ...]:
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    # open_clip stores them as lambdas; calling one with "{}" gives the format string.
    return tuple(t("{}") for t in OPENAI_IMAGENET_TEMPLATES)


TEMPLATE_SETS = ("imagenet80", "vild14", "custom")


def get_templates(name: str, custom: Sequence[str] = ()) -> Tuple[str, ...]:
    """Templates of a named set; ``custom`` uses the given list."""
    if name == "imagenet80":
        return imagenet80_templates()
    if name == "vild14":
        return VILD_TEMPLATES
    if name == "custom":
        custom = tuple(custom)
        if not custom:
            raise ConfigError("prompt_templates is 'custom' but custom_templates is empty")
        for t in custom:
            if t.count("{}") != 1:
                raise ConfigError(f"custom template {t!r} must contain exactly one '{{}}'")
        return custom
    raise ConfigError(f"unknown prompt template set {name!r}; use one of "
                      f"{['default', *TEMPLATE_SETS]}")


def templates_for(cfg: Config, engine_default: str) -> Tuple[str, Tuple[str, ...]]:
    """(set name, templates) for a config; 'default' resolves to the engine's own set."""
    name = cfg["prompt_templates"]
    if name == "default":
        name = engine_default
    return name, get_templates(name, cfg["custom_templates"])


def templates_id(name: str, templates: Sequence[str]) -> str:
    """A cache-key part naming the set and its exact contents (custom sets differ by text)."""
    digest = hashlib.sha256("\n".join(templates).encode("utf-8")).hexdigest()[:16]
    return f"{name}-{len(templates)}-{digest}"


def make_prompts(class_name: str, templates: Sequence[str]) -> list:
    # str.replace, not format: a custom template may contain other braces.
    return [t.replace("{}", class_name) for t in templates]
