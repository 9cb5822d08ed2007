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

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import ConfigError

log = logging.getLogger(__name__)

#: seed of random initialisation, so random-weight text embeddings are reproducible
RANDOM_SEED = 0


class WeightsError(RuntimeError):
    """Weights cannot be loaded; the message says which model, which file/tag, which setting."""


@dataclass(frozen=True)
class LoadedModel:
    model: torch.nn.Module
    identity: str        # for cache keys: model name + tag / file fingerprint / random seed
    random: bool


def resolve_path(path: str, weights_dir: str = "") -> Path:
    """A checkpoint path: '~' expanded; relative paths are looked up in weights_dir."""
    p = Path(os.path.expanduser(path))
    if not p.is_absolute() and weights_dir:
        p = Path(os.path.expanduser(weights_dir)) / p
    return p


def file_fingerprint(path: Path, chunk: int = 1 << 22) -> str:
    """Size plus a SHA-256 of the first and last 4 MiB: identifies a checkpoint without
    reading hundreds of megabytes at every start."""
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(chunk))
        if size > chunk:
            f.seek(max(size - chunk, chunk))
            h.update(f.read(chunk))
    return f"{size}-{h.hexdigest()[:20]}"


def _seeded():
    """Random init inside a forked RNG: reproducible, and the caller's RNG is untouched."""
    rng = torch.random.fork_rng(devices=[])
    rng.__enter__()
    torch.manual_seed(RANDOM_SEED)
    return rng


def _random_hint() -> str:
    return "(For a demo without weights set random_init: true; outputs are then meaningless " \
           "and flagged random_weights.)"


#: names of the tiny random-weight test models start with these (open_clip names use '-',
#: timm names '_'); see ovseg_ros/testing/tiny_models.py
TINY_MODEL_PREFIXES = ("ovseg-tiny-", "ovseg_tiny_")


def register_tiny_models_if_named(model_name: str) -> None:
    """Register the tiny test models, only when ``model_name`` is one of them.

    The one place production code reaches ``ovseg_ros.testing``: configs such as
    config/demo_tiny.yaml name a tiny model, and open_clip / timm must know it
    before it is built. Any other name leaves the registries of open_clip and
    timm untouched.
    """
    if str(model_name).startswith(TINY_MODEL_PREFIXES):
        from .testing import tiny_models  # noqa: F401  (registers on import)


#: file at the root of a weights bundle (``ovseg-weights pack``; docs/weights.md)
BUNDLE_MANIFEST = "ovseg_bundle.json"


def is_bundle(weights_dir: str) -> bool:
    """True when ``weights_dir`` is an unpacked weights bundle."""
    return bool(weights_dir) and (Path(os.path.expanduser(weights_dir)) / BUNDLE_MANIFEST).is_file()


def offline_if_bundle(weights_dir: str) -> bool:
    """With ``weights_dir`` holding a bundle, switch huggingface_hub to offline mode.

    A bundle carries every file its preset needs, so nothing may reach for the
    network (an air-gapped robot would otherwise wait on connection timeouts).
    huggingface_hub reads HF_HUB_OFFLINE once, at import, so an imported module
    is switched too. Returns whether the bundle was found.
    """
    if not is_bundle(weights_dir):
        return False
    if os.environ.get("HF_HUB_OFFLINE") != "1":
        log.info("weights_dir %s is a weights bundle: HF_HUB_OFFLINE=1", weights_dir)
    os.environ["HF_HUB_OFFLINE"] = "1"
    import sys

    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    return True


def clip_architecture(model_name: str, key_prefix: str):
    """The open_clip model ``model_name`` without weights, on the meta device (nothing
    allocated): its parameter names and shapes."""
    import open_clip

    register_tiny_models_if_named(model_name)
    if model_name not in open_clip.list_models():
        raise ConfigError(f"config key '{key_prefix}.clip_model': unknown open_clip model "
                          f"{model_name!r} (see open_clip.list_models())")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)   # open_clip warns "initialized randomly": no weights is the point
    try:
        with torch.device("meta"):
            return open_clip.create_model(model_name, pretrained=None, device="meta")
    finally:
        root.setLevel(level)


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
    offline_if_bundle(weights_dir)
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
    offline_if_bundle(weights_dir)
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


def load_state_dict_file(path: Path) -> dict:
    """A state dict from a safetensors or torch file (weights_only=True), unwrapped."""
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file

        sd = load_file(str(path), device="cpu")
    else:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    return {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}


__all__ = ["WeightsError", "LoadedModel", "create_clip", "create_vfm", "resolve_path",
           "file_fingerprint", "load_state_dict_file", "RANDOM_SEED", "TINY_MODEL_PREFIXES",
           "register_tiny_models_if_named", "BUNDLE_MANIFEST", "is_bundle", "offline_if_bundle",
           "clip_architecture"]
