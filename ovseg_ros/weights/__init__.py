"""Weights: creating the models with their weights, and the logic behind ``ovseg-weights``.

One module per job (docs/weights.md):

* ``create``: open_clip / timm models with their weights (tag, local file, or random);
* ``state_dict``: the one state-dict reader and the one strict layout check;
* ``pickle_safety``: what a pickle file would run, and reading it without running it;
* ``environment``: the huggingface_hub cache, network reachability, bundle offline mode;
* ``sources``: what an engine declares about its weights, as data (its published
  checkpoints, the files a config makes it read);
* ``releases``, ``needs``: which published checkpoint a config names, and what files a
  config needs, both asked of the engine through the registry;
* ``fetch``, ``convert``, ``verify``, ``bundles``: the ``ovseg-weights`` commands.

Importing this package loads torch (``create``) but nothing of the tool's modules; the
names below are what engines, models and the API use.
"""
from .create import RANDOM_SEED, LoadedModel, clip_architecture, create_clip, create_vfm
from .environment import BUNDLE_MANIFEST, is_bundle, offline_if_bundle
from .errors import WeightsError, WeightsToolError
from .files import file_fingerprint, resolve_path
from .state_dict import read_state_dict
from .tiny import TINY_MODEL_PREFIXES, register_tiny_models_if_named

__all__ = ["WeightsError", "WeightsToolError", "LoadedModel", "create_clip", "create_vfm",
           "resolve_path", "file_fingerprint", "read_state_dict", "RANDOM_SEED",
           "TINY_MODEL_PREFIXES", "register_tiny_models_if_named", "BUNDLE_MANIFEST",
           "is_bundle", "offline_if_bundle", "clip_architecture"]
