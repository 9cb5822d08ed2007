"""One configuration schema for the Python API, the CLIs and the ROS node.

Every setting is declared exactly once, with its default, type, range and help
text: the general ones here, each engine's ``<engine>.*`` group in its torch-free
``ovseg_ros/engines/<engine>_config.py`` (collected through the registry).
``load_segmenter`` validates a user config against it, and the ROS node declares
its parameters from it (descriptions, ranges, read-only flags), so nothing is
listed twice.

Keys are flat; engine-specific keys carry a dotted group prefix
(``proxyclip.crop_size``). In YAML either form works::

    proxyclip:
      crop_size: 336
    # or
    proxyclip.crop_size: 336

A ROS params file (``node_name: {ros__parameters: {...}}`` or ``/**: ...``) is
accepted as a config as well, so the node's YAML and the API share one file.
"""
from __future__ import annotations

import importlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, FrozenSet, Iterable, Mapping, Optional, Tuple, Union

import yaml

from .registry import engine_config_modules, list_backends, list_engines
from .schema import ConfigError, ParamSpec

log = logging.getLogger(__name__)

ENGINES = tuple(list_engines())
#: name -> the engine's torch-free config module (``PARAMS``, optional ``check(cfg)``,
#: ``AUTO_LOW_PRECISION``, ``AUTO_CPU_PRECISION`` and ``PRECISIONS``)
ENGINE_CONFIGS = {name: importlib.import_module(module)
                  for name, module in engine_config_modules().items()}


def engine_params() -> Tuple[ParamSpec, ...]:
    """The config groups every registered engine declares in its ``<name>_config`` module.

    Each group's keys must carry the engine's own prefix, so two engines can
    never declare the same setting.
    """
    params = []
    for name, module in ENGINE_CONFIGS.items():
        group = module.PARAMS
        for spec in group:
            if not spec.name.startswith(name + "."):
                raise AssertionError(f"{module.__name__} declares {spec.name!r} outside group "
                                     f"{name!r}")
        params.extend(group)
    return tuple(params)

BACKENDS = tuple(list_backends())
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")

_P = ParamSpec

# The schema. Order matters only for documentation (the parameter table of docs/node.md is
# generated from it by scripts/node_param_table.py).
SCHEMA_LIST: Tuple[ParamSpec, ...] = (
    # --- engine selection ---------------------------------------------------------
    _P("engine", "str", "proxyclip", "Segmentation method.", choices=ENGINES),
    _P("backend", "str", "torch", "Inference backend for the image path.", choices=BACKENDS),
    _P("device", "str", "cpu", "Torch device: 'cpu', 'cuda' or 'cuda:N'. No silent fallback: "
       "asking for CUDA where there is none is an error."),
    _P("precision", "str", "auto", "Arithmetic of the image path: fp32 (exact), fp16 (CUDA), "
       "bf16 (CUDA, or CPU with native bf16), int8 (ProxyCLIP, torch backend, CPU: dynamic "
       "int8 linears in the trunks), or auto: the fastest precision whose labels hold on "
       "this device and CPU kind (ProxyCLIP: fp16 on CUDA; on the CPU with the torch backend "
       "per AUTO_CPU_PRECISION: native bf16 (AVX512-BF16/AMX) and AVX-512 VNNI CPUs their "
       "measured pick, fp32 elsewhere); fp32 for OVSeg, FC-CLIP and MAFT+. The resolved "
       "value is what the engine, logs and diagnostics report.", choices=PRECISIONS),
    _P("num_threads", "int", 0, "torch CPU threads (0 = library default).", min=0, max=256),
    _P("random_init", "bool", False, "Use randomly initialised weights instead of pretrained ones. "
       "For tests and demos only; every prediction is flagged random_weights=true."),
    _P("weights_dir", "str", "", "Directory searched for weight files named by relative paths "
       "(empty = current directory)."),
    # --- vocabulary and text embeddings ------------------------------------------
    _P("vocabulary", "str_list", ["person", "chair", "table", "floor", "wall", "ceiling", "sky",
                                  "tree", "grass", "car"],
       "Initial classes; ',' separates synonyms of one class (e.g. 'sofa,couch'). A single "
       "entry naming a bundled list (ade150, ade847, pascal_context459, coco_stuff171, ...) "
       "stands for that list."),
    _P("vocabulary_is_thing", "bool_list", [],
       "Thing (true) / stuff (false) flag per class; empty = automatic (COCO stuff names are "
       "stuff, everything else is a thing)."),
    _P("prompt_templates", "str", "default", "Prompt template set: 'default' (the engine's own: "
       "80 ImageNet templates for ProxyCLIP, 14 ViLD templates for FC-CLIP/MAFT+), 'imagenet80', "
       "'vild14', or 'custom' (uses custom_templates).",
       choices=("default", "imagenet80", "vild14", "custom")),
    _P("custom_templates", "str_list", [], "Templates with one '{}' each, used when "
       "prompt_templates is 'custom'."),
    _P("text_cache_dir", "str", "~/.cache/ovseg_ros/text", "On-disk cache of text embeddings "
       "(empty string disables the disk cache)."),
    _P("max_classes", "int", 1024, "Largest vocabulary accepted.", min=1, max=65534),
    _P("max_class_name_length", "int", 256, "Longest class string (synonyms included) accepted.",
       min=1, max=4096),
    _P("prob_thd", "float", 0.0, "Pixels whose best class probability is below this get class 0 "
       "(meaningful with a background class first in the vocabulary).", min=0.0, max=1.0,
       runtime=True),
    # --- input --------------------------------------------------------------------
    _P("max_input_pixels", "int", 4096 * 4096, "Largest image (width*height) accepted; a "
       "larger one is refused (InputLimitError naming the shape and this limit). Other shapes "
       "are clamped by the engine's resize limits, not refused.", min=1, max=1 << 31),
    _P("max_input_side", "int", 16384, "Longest image side (pixels) accepted; a longer one is "
       "refused (InputLimitError). Work at the input's size along one axis grows with it "
       "(ProxyCLIP's per-axis stitching maps: a 1x100000 frame cost 330 MB).",
       min=1, max=1 << 20),
    # --- engine groups (declared by each engine; see ovseg_ros/registry.py) ---------
    *engine_params(),
    # --- acceleration ---------------------------------------------------------------
    # the directory keeps its old name: caches built before the key's rename stay valid
    _P("graph_cache_dir", "str", "~/.cache/ovseg_ros/engines", "Where exported ONNX graphs and "
       "TensorRT plans are cached (formerly engine_cache_dir, still accepted with a warning)."),
    _P("force_rebuild", "bool", False, "Rebuild cached ONNX/TensorRT engines even when the cache "
       "key matches."),
    _P("channels_last", "bool", True, "torch backend on CUDA: keep convolution weights and "
       "inputs in channels_last memory format (faster convolutions, e.g. ConvNeXt); the CPU "
       "path keeps the default layout."),
    _P("torch_compile", "bool", False, "torch backend: compile the image path with "
       "torch.compile (Inductor, static shapes; needs a C++ compiler on the CPU, Triton on "
       "CUDA). Each input size compiles once (tens of seconds): the node does it at "
       "configure (warmup_size); Inductor's cache lives under graph_cache_dir/inductor, so "
       "later starts reuse it."),
    _P("cuda_graphs", "bool", False, "torch backend on CUDA: capture the image path as a CUDA "
       "graph per input shape and replay it (fixed crop sizes; removes kernel-launch "
       "overhead). Requires device cuda."),
    # --- segment embeddings and tracking (docs/node.md "Tracking, embeddings and locate") ---
    _P("embeddings.enabled", "bool", False, "Give every segment an L2-normalised embedding in "
       "the engine's CLIP text space (Prediction.embeddings; the segment_embeddings topic and "
       "the locate service need it). ProxyCLIP: mean dense CLIP feature over the segment; "
       "FC-CLIP/MAFT+: the query's mask-pooled CLIP embedding; OVSeg: the masked-crop CLIP "
       "embeddings weighted by mask overlap. Off: nothing is computed."),
    _P("tracking.enabled", "bool", False, "Give thing segments persistent ids across frames "
       "(per camera; ids above 65535). Stuff segments get class-derived ids (class id + 1) "
       "when on."),
    _P("tracking.min_hits", "int", 1, "Frames a new object must be matched in before its track "
       "is born and published (tentative objects get no segment id, panoptic 0).",
       min=1, max=100),
    _P("tracking.max_misses", "int", 10, "Frames a track may go unmatched (occlusion, missed "
       "detection) before it dies; a reappearing object within this keeps its id.",
       min=0, max=10000),
    _P("tracking.min_affinity", "float", 0.1, "Smallest association affinity (weighted mean of "
       "mask IoU, 3D proximity and embedding cosine, minus the class-change penalty) accepted "
       "as a match.", min=0.0, max=1.0),
    _P("tracking.class_change_penalty", "float", 0.5, "Subtracted from the affinity of a track "
       "and a segment of different classes (1 = never match across classes).",
       min=0.0, max=1.0),
    _P("tracking.depth_weight", "float", 1.0, "Weight of the 3D cue (1 - centroid distance / "
       "tracking.depth_distance) when centroids come with the frame; mask IoU weighs 1.",
       min=0.0, max=100.0),
    _P("tracking.depth_distance", "float", 0.5, "3D centroid distance [m] at which the 3D cue "
       "reaches 0.", min=1e-3, max=100.0),
    _P("tracking.embedding_weight", "float", 1.0, "Weight of the embedding cue (cosine of the "
       "segment embeddings, clipped at 0) when embeddings are on; mask IoU weighs 1.",
       min=0.0, max=100.0),
    _P("tracking.reset_gap", "float", 2.0, "A stamp gap longer than this [s], or a stamp going "
       "backwards (camera restart, bag loop), resets the camera's tracks.", min=0.0,
       max=86400.0),
    _P("tracking.label_smoothing", "int", 0, "Temporal label smoothing: a track's class is the "
       "score-weighted vote over its last N frames (segments and semantic pixels relabelled); "
       "0 = off.", min=0, max=1000),
    # --- ROS node -------------------------------------------------------------------
    _P("cameras", "str_list", [""], "Cameras served by this node (one loaded model): camera "
       "'c' reads c/image (+ c/image/compressed, c/camera_info) and publishes c/semantic, "
       "c/panoptic, ...; the unnamed camera '' uses the bare names. Names: letters, digits, "
       "'_'. Per-camera <c>.image_reliability, <c>.image_depth, <c>.subscribe_compressed, "
       "<c>.depth_enabled override the node-wide settings.", node_only=True),
    _P("input_timeout", "float", 5.0, "Seconds without a frame, after frames came, before a "
       "camera's input is reported stalled (diagnostics WARN, one log line); 0 = never.",
       min=0.0, max=3600.0, node_only=True),
    _P("image_reliability", "str", "best_effort", "QoS reliability of the image subscription.",
       choices=("best_effort", "reliable"), node_only=True),
    _P("image_depth", "int", 1, "QoS depth of the image subscription.", min=1, max=100,
       node_only=True),
    _P("subscribe_compressed", "bool", False, "Also subscribe to image/compressed.",
       node_only=True),
    _P("process_every_frame", "bool", False, "Queue frames instead of keeping only the newest "
       "(offline bag playback).", node_only=True),
    _P("max_queue", "int", 100, "Queue length in process_every_frame mode.", min=1, max=10000,
       node_only=True),
    _P("publish_confidence", "bool", True, "Publish the 32FC1 confidence image.", node_only=True,
       runtime=True),
    _P("overlay_alpha", "float", 0.5, "Opacity of the class colours on the overlay.", min=0.0,
       max=1.0, node_only=True, runtime=True),
    _P("diagnostics_period", "float", 1.0, "Seconds between diagnostics messages.", min=0.1,
       max=60.0, node_only=True),
    _P("autostart", "bool", True, "Configure and activate on start (lifecycle node).",
       node_only=True),
    _P("warmup_size", "str", "640x480", "Frame size 'WIDTHxHEIGHT' of one warm-up prediction "
       "the node runs at configure, before it takes frames: with torch_compile that is where "
       "the image path compiles (logged, and reported as warmup_s in the diagnostics), "
       "otherwise it takes the first frame's one-off costs (text encoding, allocations). Set "
       "it to the cameras' size (another size compiles on its first frame); '' = no "
       "warm-up. Each side 1..max_input_side, at most max_input_pixels (checked at "
       "configure).", node_only=True),
    # --- depth and 3D (docs/node.md, "Depth and 3D") -----------------------------------
    _P("depth_enabled", "bool", False, "Subscribe to the registered depth image of each "
       "camera (c/depth, 16UC1 mm or 32FC1 m, the colour image's size and frame_id; "
       "c/depth/camera_info) and publish c/points, c/segments_3d and c/markers. Per camera: "
       "<c>.depth_enabled.", node_only=True),
    _P("depth_slop", "float", 0.02, "Largest stamp difference (s) between a colour frame and "
       "its depth partner; 0 = exact stamps only (aligned drivers). A colour frame without a "
       "partner still gets every 2D output.", min=0.0, max=1.0, node_only=True),
    _P("depth_rectified", "bool", False, "The colour and depth images are rectified "
       "(image_rect), so a camera_info with non-zero distortion is accepted; otherwise such "
       "a camera_info is refused for 3D.", node_only=True),
    _P("cloud_stride", "int", 1, "Keep every n-th row and column of the labelled cloud "
       "(points): its size falls with the square. The 3D segments use every pixel.",
       min=1, max=16, node_only=True),
    _P("marker_lifetime", "float", 2.0, "Seconds RViz keeps a segment's markers without an "
       "update (stale markers vanish when a camera stops); 0 = forever.", min=0.0,
       max=3600.0, node_only=True, runtime=True),
)

SCHEMA = {p.name: p for p in SCHEMA_LIST}


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict:
    flat = {}
    for key, value in mapping.items():
        if not isinstance(key, str):
            raise ConfigError(f"config keys must be strings, got {key!r}")
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and name not in SCHEMA:
            flat.update(_flatten(value, prefix=name + "."))
        else:
            flat[name] = value
    return flat


def _unwrap_ros_params(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """Accept a ROS params file: ``{node_or_/**: {ros__parameters: {...}}}``."""
    if len(data) == 1:
        (only,) = data.values()
        if isinstance(only, Mapping) and "ros__parameters" in only:
            return only["ros__parameters"]
    return data


def read_config_file(path: Union[str, Path]) -> dict:
    path = Path(path).expanduser()
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)  # safe_load: a config never constructs Python objects
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {path} must hold a mapping, got {type(data).__name__}")
    return dict(_unwrap_ros_params(data))


@dataclass(frozen=True)
class Config:
    """A validated, complete configuration (every key of SCHEMA present)."""

    values: Mapping[str, Any]

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def group(self, prefix: str) -> dict:
        """Settings of one group without the prefix: ``cfg.group('proxyclip')['crop_size']``."""
        p = prefix + "."
        return {k[len(p):]: v for k, v in self.values.items() if k.startswith(p)}

    def replace(self, **changes: Any) -> "Config":
        """A copy with some keys changed (dotted keys may be written with '__' for '.')."""
        merged = dict(self.values)
        merged.update({k.replace("__", "."): v for k, v in changes.items()})
        return make_config(merged)

    def as_dict(self) -> dict:
        return dict(self.values)


#: old key -> new key; an old key is accepted with a DeprecationWarning naming the new one
DEPRECATED_KEYS = {"engine_cache_dir": "graph_cache_dir"}


def _rename_deprecated(flat: dict) -> None:
    for old, new in DEPRECATED_KEYS.items():
        if old not in flat:
            continue
        value = flat.pop(old)
        if new in flat and flat[new] != value:
            raise ConfigError(f"config keys '{old}' (deprecated) and '{new}' are both set, to "
                              f"{value!r} and {flat[new]!r}; keep only '{new}'")
        warnings.warn(f"config key '{old}' is deprecated: it is now '{new}'", DeprecationWarning,
                      stacklevel=3)
        flat[new] = value


def make_config(config: Union[None, str, Path, Mapping[str, Any], Config] = None,
                **overrides: Any) -> Config:
    """Validate ``config`` (dict, YAML path, or Config) against the schema.

    Unknown keys and bad values raise ConfigError naming the key, the problem,
    and (for unknown keys) the closest known names.
    """
    if isinstance(config, Config):
        raw = dict(config.values)
    elif config is None:
        raw = {}
    elif isinstance(config, (str, Path)):
        raw = read_config_file(config)
    elif isinstance(config, Mapping):
        raw = dict(_unwrap_ros_params(config))
    else:
        raise ConfigError(f"config must be a dict or a YAML path, got {type(config).__name__}")
    flat = _flatten(raw)
    flat.update({k.replace("__", "."): v for k, v in overrides.items()})
    _rename_deprecated(flat)
    unknown = sorted(k for k in flat if k not in SCHEMA)
    if unknown:
        import difflib

        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, SCHEMA.keys(), n=2)
            hints.append(f"'{key}'" + (f" (did you mean {', '.join(repr(c) for c in close)}?)"
                                       if close else ""))
        raise ConfigError("unknown config key(s): " + "; ".join(hints)
                          + ". Known keys are listed in the parameter table of docs/node.md.")
    values = {}
    for spec in SCHEMA_LIST:
        values[spec.name] = spec.validate(flat[spec.name]) if spec.name in flat else \
            (list(spec.default) if isinstance(spec.default, list) else spec.default)
    if values["precision"] == "auto":
        values["precision"] = resolve_auto_precision(
            values["device"], values["backend"], values["engine"],
            compiled=bool(values["torch_compile"] or values["cuda_graphs"]))
    cfg = Config(values)
    _check_cross_field(cfg)
    return cfg


def read_cpu_flags() -> Optional[FrozenSet[str]]:
    """The ``flags`` of /proc/cpuinfo (x86 Linux), or None where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


#: what the CPU's matrix arithmetic can do fast, from its flags (``cpu_kind``):
#: ``amx`` AMX-BF16 (Intel Xeon: bf16 matmuls 700-2000 GFLOP/s on 2 threads, 5-15x fp32);
#: ``avx512_bf16`` AVX512-BF16 without AMX (AMD EPYC: bf16 ~2.3-5x fp32, int8 VNNI ~4x);
#: ``vnni`` AVX-512 VNNI without native bf16 (int8 dot products in one instruction, bf16
#: emulated: ~5x slower than fp32); ``avx512`` AVX-512 without VNNI; ``avx2`` x86 without
#: AVX-512 (bf16 in scalar code, ~400x slower than fp32); ``unknown`` no x86 flags
#: (aarch64, or /proc/cpuinfo unreadable). The first two compute bf16 natively.
CPU_KINDS = ("amx", "avx512_bf16", "vnni", "avx512", "avx2", "unknown")
NATIVE_BF16_KINDS = ("amx", "avx512_bf16")


def cpu_kind(flags: Optional[Iterable[str]] = None, *, read: bool = True) -> str:
    """One of ``CPU_KINDS`` for ``flags`` (None and ``read``: this machine's)."""
    if flags is None and read:
        flags = read_cpu_flags()
    if flags is None:
        return "unknown"
    flags = set(flags)
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512_bf16"
    if "avx512_vnni" in flags:
        return "vnni"
    if "avx512f" in flags:
        return "avx512"
    return "avx2"


def cpu_has_native_bf16() -> bool:
    """True on x86 CPUs with AVX512-BF16 or AMX-BF16, where bf16 matmuls run ~5x fp32
    (2-thread 2048² matmul: ≈740 vs ≈150 GFLOP/s, docs/benchmarks/cpu.md)."""
    return cpu_kind() in NATIVE_BF16_KINDS


#: engines whose labels hold in low precision (each engine's config module says so in its
#: ``AUTO_LOW_PRECISION``, with the measurement: docs/benchmarks/cpu.md, "precision: auto
#: per engine"); the others resolve ``auto`` to fp32. ``precision: bf16`` / ``fp16`` stay
#: available to every engine explicitly.
AUTO_LOW_PRECISION = {name: bool(getattr(module, "AUTO_LOW_PRECISION", False))
                      for name, module in ENGINE_CONFIGS.items()}
#: the precisions an engine runs unless its config module lists its own ``PRECISIONS``
DEFAULT_ENGINE_PRECISIONS = ("fp32", "fp16", "bf16")
ENGINE_PRECISIONS = {name: tuple(getattr(module, "PRECISIONS", DEFAULT_ENGINE_PRECISIONS))
                     for name, module in ENGINE_CONFIGS.items()}
#: CPU kind -> what ``auto`` picks with the torch backend, for an engine whose labels hold
#: in low precision and whose config module gives no ``AUTO_CPU_PRECISION`` of its own
#: (kinds not named: fp32)
DEFAULT_AUTO_CPU_PRECISION = {"amx": "bf16", "avx512_bf16": "bf16"}


def auto_cpu_precision(engine: str, kind: str) -> str:
    """What ``auto`` picks for ``engine`` on a CPU of ``kind`` (torch backend)."""
    if not AUTO_LOW_PRECISION.get(engine, False):
        return "fp32"
    table = getattr(ENGINE_CONFIGS.get(engine), "AUTO_CPU_PRECISION", DEFAULT_AUTO_CPU_PRECISION)
    return table.get(kind, "fp32")


def resolve_auto_precision(device: str, backend: str, engine: str = "proxyclip",
                           kind: Optional[str] = None, compiled: bool = False) -> str:
    """What ``precision: auto`` means for ``engine`` on this machine.

    The fastest arithmetic whose labels hold (>= 99.5 % of the fp32 labels, measured per
    engine: ``AUTO_LOW_PRECISION``): for those engines fp16 on CUDA (every CUDA GPU and
    Jetson has fast fp16); on the CPU with the torch backend the engine's pick for the
    CPU's kind (``kind``, None: this machine's ``cpu_kind()``; ``auto_cpu_precision``):
    bf16 or int8 where the CPU computes it natively and it measured faster, exact fp32
    where it does not (emulated bf16 is slower than fp32, and int8 unmeasured there). ONNX
    Runtime has neither bf16 nor int8 here: fp32. Engines whose labels move: fp32.
    int8 runs eagerly: with ``compiled`` (torch_compile or cuda_graphs on) an int8 pick
    becomes fp32, and the log line says so (config/cpu_realtime.yaml compiles, and must
    still start on a VNNI CPU).
    """
    if not AUTO_LOW_PRECISION.get(engine, False):
        return "fp32"
    if device.startswith("cuda"):
        return "fp16"
    if backend != "torch":
        return "fp32"
    kind = cpu_kind() if kind is None else kind
    chosen = auto_cpu_precision(engine, kind)
    if chosen == "int8" and compiled:
        log.warning("precision auto -> fp32 (%s on a %s CPU would run int8, but int8 runs "
                    "eagerly and torch_compile/cuda_graphs is on; set torch_compile false "
                    "for int8)", engine, kind)
        return "fp32"
    log.info("precision auto -> %s (%s on a %s CPU, torch backend)", chosen, engine, kind)
    return chosen


def _check_precision(cfg: Config) -> None:
    """A precision the engine, backend and device can run (int8: engines that list it, the
    torch backend, the CPU)."""
    prec, engine = cfg["precision"], cfg["engine"]
    supported = ENGINE_PRECISIONS.get(engine, DEFAULT_ENGINE_PRECISIONS)
    if prec not in supported:
        raise ConfigError(f"config key 'precision': {prec} is not supported by engine "
                          f"{engine!r} (it supports {', '.join(supported)}, or auto)")
    if prec == "int8":
        if cfg["backend"] != "torch":
            raise ConfigError(f"config key 'precision': int8 needs backend 'torch' (dynamic int8 "
                              f"linears in eager torch), not {cfg['backend']!r}")
        if not str(cfg["device"]).startswith("cpu"):
            raise ConfigError(f"config key 'precision': int8 runs on the CPU only, not on device "
                              f"{cfg['device']!r}; on CUDA use fp16 or auto")


def _check_cross_field(cfg: Config) -> None:
    _check_precision(cfg)
    # each engine group checks its own settings together (its config module's ``check``)
    for module in ENGINE_CONFIGS.values():
        check = getattr(module, "check", None)
        if check is not None:
            check(cfg)
    if cfg["prompt_templates"] == "custom":
        if not cfg["custom_templates"]:
            raise ConfigError("prompt_templates is 'custom' but custom_templates is empty")
    for t in cfg["custom_templates"]:
        if t.count("{}") != 1:
            raise ConfigError(f"custom template {t!r} must contain exactly one '{{}}'")
    # the form only: the node checks the size against the input limits where it warms up,
    # so a config that lowers max_input_pixels for the API alone stays valid
    parse_frame_size(cfg["warmup_size"], "warmup_size")
    flags = cfg["vocabulary_is_thing"]
    if flags and len(flags) != len(cfg["vocabulary"]):
        raise ConfigError(f"vocabulary_is_thing has {len(flags)} entries but vocabulary has "
                          f"{len(cfg['vocabulary'])}")


def parse_frame_size(text: str, key: str, *, max_side: int = 1 << 20,
                     max_pixels: int = 1 << 40) -> Optional[Tuple[int, int]]:
    """'WIDTHxHEIGHT' -> (width, height); '' -> None. ConfigError names ``key``, the value
    and the limit it breaks (each side 1..``max_side``, width*height <= ``max_pixels``)."""
    text = text.strip()
    if not text:
        return None
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ConfigError(f"config key '{key}' must be 'WIDTHxHEIGHT' with two positive "
                          f"integers (e.g. '640x480'), or '' for none; got {text!r}")
    w, h = (int(p) for p in parts)
    if not (1 <= w <= max_side and 1 <= h <= max_side):
        raise ConfigError(f"config key '{key}': each side must be 1..{max_side} "
                          f"(max_input_side), got {w}x{h}")
    if w * h > max_pixels:
        raise ConfigError(f"config key '{key}': {w}x{h} = {w * h} pixels is more than "
                          f"max_input_pixels ({max_pixels})")
    return w, h


def engine_keys() -> list:
    """Names of the settings the engines read (what the node forwards to load_segmenter)."""
    return [p.name for p in SCHEMA_LIST if not p.node_only]


__all__ = ["ConfigError", "ParamSpec", "SCHEMA", "SCHEMA_LIST", "Config", "make_config",
           "read_config_file", "engine_keys", "parse_frame_size", "resolve_auto_precision",
           "AUTO_LOW_PRECISION",
           "auto_cpu_precision", "cpu_kind", "read_cpu_flags", "CPU_KINDS", "NATIVE_BF16_KINDS",
           "ENGINE_PRECISIONS",
           "DEFAULT_ENGINE_PRECISIONS", "DEFAULT_AUTO_CPU_PRECISION", "cpu_has_native_bf16",
           "ENGINES", "ENGINE_CONFIGS", "BACKENDS",
           "PRECISIONS"]
