"""The one place production code reaches ``ovseg_ros.testing``: the tiny test models,
registered on demand by name."""
from __future__ import annotations

#: names of the tiny random-weight test models start with these (open_clip names use '-',
#: timm names '_'); see ovseg_ros/testing/tiny_models.py
TINY_MODEL_PREFIXES = ("ovseg-tiny-", "ovseg_tiny_")


def register_tiny_models_if_named(model_name: str) -> None:
    """Register the tiny test models, only when ``model_name`` is one of them.

    Configs such as config/demo_tiny.yaml name a tiny model, and open_clip / timm
    must know it before it is built. Any other name leaves the registries of
    open_clip and timm untouched.
    """
    if str(model_name).startswith(TINY_MODEL_PREFIXES):
        from ..testing import tiny_models  # noqa: F401  (registers on import)


__all__ = ["TINY_MODEL_PREFIXES", "register_tiny_models_if_named"]
