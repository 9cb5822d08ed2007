"""ProxyCLIP config group: the ``proxyclip.*`` settings (torch-free, read by the schema)."""
from ..schema import ConfigError, ParamSpec

#: ``precision: auto`` may pick bf16/fp16: bf16 kept >= 99.5 % of the fp32 labels on the
#: comparison photos with the calibrated parity weights (docs/benchmarks/cpu.md)
AUTO_LOW_PRECISION = True
#: int8 (dynamic int8 linears in both trunks, torch backend, CPU) besides the usual three
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
#: ``auto`` on the CPU (torch backend), by ``config.cpu_kind``; kinds not named get fp32.
#: int8 kept >= 99.5 % of the fp32 labels on the comparison photos with the parity weights
#: (worst photo 99.64 % at config/cpu_realtime.yaml's shape, 99.71 % at the default one;
#: docs/benchmarks/cpu.md, "precision: int8"). vnni: int8 (VNNI's int8 dot products have
#: 4x the fp32 FMA rate per instruction; bf16 is emulated there, ~5x slower than fp32);
#: not measured on such a CPU. amx / avx512_bf16: bf16 (on an avx512_bf16 CPU int8 was
#: faster than bf16 at the cpu_realtime shape but tied per predict at the default one).
#: avx512 / avx2: fp32 (fbgemm's int8 kernels there unmeasured).
AUTO_CPU_PRECISION = {"amx": "bf16", "avx512_bf16": "bf16", "vnni": "int8"}

#: settings of the ProxyCLIP engine, in documentation order
PARAMS = (
    ParamSpec("proxyclip.clip_model", "str", "ViT-B-16",
              "open_clip model name (a VisionTransformer CLIP)."),
    ParamSpec("proxyclip.clip_pretrained", "str", "openai",
              "open_clip pretrained tag (downloaded once, then cached); ignored when "
              "clip_checkpoint is set."),
    ParamSpec("proxyclip.clip_checkpoint", "str", "",
              "Local CLIP checkpoint (.safetensors, or a torch file loaded with "
              "weights_only=True)."),
    ParamSpec("proxyclip.vfm_model", "str", "vit_base_patch8_224.dino",
              "timm model name of the vision foundation model (its pretrained tag is part of the "
              "name)."),
    ParamSpec("proxyclip.vfm_checkpoint", "str", "",
              "Local VFM checkpoint (.safetensors or torch file)."),
    ParamSpec("proxyclip.short_side", "int", 336,
              "Input is resized so its short side is this (0 = keep size).", min=0, max=4096),
    ParamSpec("proxyclip.crop_size", "int", 336,
              "Sliding-window crop size in pixels.", min=16, max=2048),
    ParamSpec("proxyclip.stride", "int", 112, "Sliding-window stride in pixels.", min=1, max=2048),
    ParamSpec("proxyclip.sliding_window", "bool", True,
              "Slide windows over the resized image; false = one window over the whole resized "
              "image (real-time mode)."),
    ParamSpec("proxyclip.max_windows", "int", 8,
              "Sliding windows per frame at most (4x a 640x480 frame's 2 at the defaults): a "
              "frame whose resize needs more (an elongated one: 3x1000 -> 112x37333) is scaled "
              "down, aspect kept, until it fits, and the Prediction notes the clamp.",
              min=1, max=4096),
    ParamSpec("proxyclip.max_resized_pixels", "int", 1 << 18,
              "Without sliding windows: pixels of the resized frame (the one window) at most; "
              "a larger one is scaled down, aspect kept, and the Prediction notes the clamp.",
              min=256, max=1 << 26),
    ParamSpec("proxyclip.window_batch_size", "int", 8,
              "Windows run together in one batch.", min=1, max=256),
    ParamSpec("proxyclip.normalisation", "str", "official",
              "Input normalisation: 'official' is the official code's (CLIP mean/std x 255 rounded "
              "to 122.771/68.501..., the VFM input derived from CLIP's); 'exact' normalises "
              "with OpenAI's exact CLIP and the VFM's own mean/std (docs/proxyclip.md).",
              choices=("official", "exact")),
    ParamSpec("proxyclip.beta", "float", 1.2,
              "Proxy attention: mean-subtraction factor.", min=0.0, max=10.0),
    ParamSpec("proxyclip.gamma", "float", 3.0,
              "Proxy attention: temperature factor.", min=0.0, max=100.0),
    ParamSpec("proxyclip.logit_scale", "float", 40.0,
              "Cosine logits are multiplied by this before the softmax.", min=0.0, max=1000.0),
    ParamSpec("proxyclip.min_thing_area", "int", 64,
              "Panoptic heuristic: smallest connected component (pixels) kept as a thing instance.",
              min=0, max=1 << 30, runtime=True),
)


def check(cfg) -> None:
    """The group's settings together (ovseg_ros.config calls it on every config)."""
    if cfg["proxyclip.stride"] > cfg["proxyclip.crop_size"]:
        raise ConfigError("config key 'proxyclip.stride' must not exceed 'proxyclip.crop_size' "
                          f"({cfg['proxyclip.stride']} > {cfg['proxyclip.crop_size']}): "
                          "windows would leave gaps")
