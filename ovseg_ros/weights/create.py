"""Creating CLIP (open_clip) and VFM (timm) models with their weights.

Weights come from one of three places, chosen by the config:
  * an open_clip pretrained tag / a timm name with a tag (downloaded once by
    huggingface_hub, then read from its cache),
  * a local checkpoint file (safetensors, or a torch file read with
    ``weights_only=True`` by open_clip's / timm's own loaders),
  * random initialisation, only when ``random_init`` is true (tests, demos).

Anything missing raises one WeightsError that names the model, the tag or file,
and the config key to change. Nothing falls back silently to random weights.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import ConfigError
from .errors import WeightsError
from .files import file_fingerprint, resolve_path
from .tiny import register_tiny_models_if_named

log = logging.getLogger(__name__)

#: seed of random initialisation, so random-weight text embeddings are reproducible
RANDOM_SEED = 0


@dataclass(frozen=True)
class LoadedModel:
    model: torch.nn.Module
    identity: str        # for cache keys: model name + tag / file fingerprint / random seed
    random: bool


def _seeded():
    """Random init inside a forked RNG: reproducible, and the caller's RNG is untouched."""
    rng = torch.random.fork_rng(devices=[])
    rng.__enter__()
    torch.manual_seed(RANDOM_SEED)
    return rng


def _random_hint() -> str:
    return "(For a demo without weights set random_init: true; outputs are then meaningless " \
           "and flagged random_weights.)"


class _DropRandomInitWarning(logging.Filter):
    """Drops open_clip's "No pretrained weights loaded ... initialized randomly" record
    (logged on the root logger) and nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No pretrained weights loaded for model")


@contextlib.contextmanager
def _no_random_init_warning():
    """While building an architecture whose weights come later (or never: a layout), without
    touching the root logger's level, which other threads' records go through too."""
    root, drop = logging.getLogger(), _DropRandomInitWarning()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def clip_architecture(model_name: str, key_prefix: str, meta: bool = True):
    """The open_clip model ``model_name`` without pretrained weights: on the meta device
    (nothing allocated: its parameter names and shapes) or, with ``meta=False``, randomly
    initialised on the CPU for a checkpoint to fill."""
    import open_clip

    register_tiny_models_if_named(model_name)
    if model_name not in open_clip.list_models():
        raise ConfigError(f"config key '{key_prefix}.clip_model': unknown open_clip model "
                          f"{model_name!r} (see open_clip.list_models())")
    with _no_random_init_warning():
        if not meta:
            return open_clip.create_model(model_name, pretrained=None)
        with torch.device("meta"):
            return open_clip.create_model(model_name, pretrained=None, device="meta")


def _check_file(path: Path, model: str, key: str) -> None:
    if not path.is_file():
        raise WeightsError(f"checkpoint file {str(path)!r} for model {model!r} does not exist; "
                           f"fix the config key '{key}' (a .safetensors or torch file). "
                           + _random_hint())


def create_clip(model_name: str, pretrained: str, checkpoint: str, *, random_init: bool,
                weights_dir: str = "", key_prefix: str = "proxyclip") -> LoadedModel:
    """An open_clip model in eval mode, on the CPU, fp32."""
    import open_clip

    register_tiny_models_if_named(model_name)
    if model_name not in open_clip.list_models():
        raise ConfigError(f"config key '{key_prefix}.clip_model': unknown open_clip model "
                          f"{model_name!r} (see open_clip.list_models())")
    if random_init:
        rng = _seeded()
        try:
            model = open_clip.create_model(model_name, pretrained=None)
        finally:
            rng.__exit__(None, None, None)
        ident = f"{model_name}|random:{RANDOM_SEED}:open_clip-{open_clip.__version__}"
        return LoadedModel(model.eval(), ident, True)
    if checkpoint:
        path = resolve_path(checkpoint, weights_dir)
        _check_file(path, model_name, f"{key_prefix}.clip_checkpoint")
        model = open_clip.create_model(model_name, pretrained=None)
        try:
            open_clip.load_checkpoint(model, str(path), strict=True, weights_only=True)
        except Exception as exc:  # a wrong file: say which and why, keep the cause
            raise WeightsError(f"cannot load CLIP checkpoint {str(path)!r} into open_clip model "
                               f"{model_name!r} ({type(exc).__name__}: {exc}); check "
                               f"'{key_prefix}.clip_checkpoint' and '{key_prefix}.clip_model'"
                               ) from exc
        return LoadedModel(model.eval(), f"{model_name}|file:{file_fingerprint(path)}", False)
    if not pretrained:
        raise WeightsError(f"no weights named for CLIP model {model_name!r}: set "
                           f"'{key_prefix}.clip_pretrained' (an open_clip tag, e.g. 'openai') or "
                           f"'{key_prefix}.clip_checkpoint' (a local file). " + _random_hint())
    try:
        model = open_clip.create_model(model_name, pretrained=pretrained)
    except Exception as exc:
        raise WeightsError(
            f"cannot load open_clip weights {model_name!r} / pretrained tag {pretrained!r} "
            f"({type(exc).__name__}: {str(exc)[:300]}). Download them once with network access "
            f"(they are cached by huggingface_hub), or point '{key_prefix}.clip_checkpoint' at a "
            f"local file, or change '{key_prefix}.clip_pretrained'. " + _random_hint()) from exc
    return LoadedModel(model.eval(), f"{model_name}|tag:{pretrained}", False)


def create_vfm(model_name: str, checkpoint: str, *, random_init: bool, weights_dir: str = "",
               key_prefix: str = "proxyclip") -> LoadedModel:
    """A timm ViT (features only: num_classes=0) in eval mode, on the CPU, fp32."""
    import timm

    register_tiny_models_if_named(model_name)
    arch = model_name.split(".", 1)[0]
    if not timm.is_model(arch):
        raise ConfigError(f"config key '{key_prefix}.vfm_model': unknown timm model "
                          f"{model_name!r} (see timm.list_models())")
    if random_init:
        rng = _seeded()
        try:
            model = timm.create_model(model_name, pretrained=False, num_classes=0)
        except RuntimeError as exc:   # e.g. a tag the architecture does not have
            raise ConfigError(f"config key '{key_prefix}.vfm_model': timm cannot build "
                              f"{model_name!r}: {exc}") from exc
        finally:
            rng.__exit__(None, None, None)
        return LoadedModel(model.eval(), f"{model_name}|random:{RANDOM_SEED}", True)
    if checkpoint:
        path = resolve_path(checkpoint, weights_dir)
        _check_file(path, model_name, f"{key_prefix}.vfm_checkpoint")
        try:
            # timm's own loader: weights_only=True, and the model's checkpoint filter
            # (e.g. original DINO/DINOv2 key names) applies to local files too.
            model = timm.create_model(model_name, pretrained=True, num_classes=0,
                                      pretrained_cfg_overlay=dict(file=str(path)))
        except Exception as exc:
            raise WeightsError(f"cannot load VFM checkpoint {str(path)!r} into timm model "
                               f"{model_name!r} ({type(exc).__name__}: {str(exc)[:300]}); check "
                               f"'{key_prefix}.vfm_checkpoint' and '{key_prefix}.vfm_model'"
                               ) from exc
        return LoadedModel(model.eval(), f"{model_name}|file:{file_fingerprint(path)}", False)
    try:
        model = timm.create_model(model_name, pretrained=True, num_classes=0)
    except Exception as exc:
        raise WeightsError(
            f"cannot load timm weights for {model_name!r} ({type(exc).__name__}: "
            f"{str(exc)[:300]}). Download them once with network access (cached by "
            f"huggingface_hub), or point '{key_prefix}.vfm_checkpoint' at a local file, or change "
            f"'{key_prefix}.vfm_model' (timm name with its pretrained tag). " + _random_hint()
        ) from exc
    return LoadedModel(model.eval(), f"{model_name}|timm-pretrained", False)


__all__ = ["LoadedModel", "create_clip", "create_vfm", "clip_architecture", "RANDOM_SEED"]
