"""Config group of the toy engine (test/engines/toy_engine.py): the ``toy.*`` settings.

Torch-free, as every engine's config module: the schema reads it at import."""
from ovseg_ros.schema import ConfigError, ParamSpec

#: ``precision: auto`` resolves to fp32 for this engine
AUTO_LOW_PRECISION = False

#: settings of the toy engine, in documentation order
PARAMS = (
    ParamSpec("toy.clip_model", "str", "ovseg-tiny-ViT", "open_clip CLIP of the toy engine."),
    ParamSpec("toy.clip_pretrained", "str", "", "open_clip pretrained tag."),
    ParamSpec("toy.clip_checkpoint", "str", "", "Local CLIP checkpoint."),
    ParamSpec("toy.checkpoint", "str", "", "The toy head (head.weight, head.bias); required "
              "unless random_init."),
    ParamSpec("toy.input_size", "int", 64, "Side the frame is resized to.", min=16, max=1024),
    ParamSpec("toy.logit_scale", "float", 50.0, "Cosine logits are multiplied by this.",
              min=0.0, max=1000.0, runtime=True),
)


def check(cfg) -> None:
    """The group's own rule, checked on every config (a toy one: a tag and a file at once)."""
    if cfg["toy.clip_pretrained"] and cfg["toy.clip_checkpoint"]:
        raise ConfigError("config keys 'toy.clip_pretrained' and 'toy.clip_checkpoint' are "
                          "both set; set one")
