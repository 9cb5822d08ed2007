"""What an engine hands a backend, and the contract every backend follows.

An engine never imports a concrete backend: it describes its image path once
(``ExportSpec``), takes the run settings from the config (``BackendSpec``) and
asks the registry for the backend by name::

    spec = BackendSpec.from_config(cfg, max_batch=8)
    export = ExportSpec(image_model, model_id="...", graph_settings={...})
    backend = get_backend(cfg["backend"])(export, spec)
    out = backend(x)        # x: B x 3 x H x W float32 in [0, 1] (any device)
                            # out: the image model's output as float32 on backend.device
    backend.device          # torch.device the outputs live on
    backend.eager           # True when the module itself runs per call (its stage timers work)
    backend.export, backend.spec
    backend.describe()      # dict for logs/diagnostics

A backend knows no engine: everything engine-specific (the module, the id and
settings that name its cached graphs, how to store its weights in a low
precision) comes in the ``ExportSpec``; everything else in the ``BackendSpec``.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Tuple

from ..config import ConfigError
from ..core.cpu_bf16 import check_cpu_bf16

#: name of the image input in exported graphs
INPUT_NAME = "image"


class BackendError(RuntimeError):
    """A backend cannot run as configured (missing provider, package, device or precision)."""


@dataclass(frozen=True)
class BackendSpec:
    """How to run an image path: the backend-related top-level config keys, typed.

    ``precision`` is already resolved (fp32, fp16, bf16 or int8; the config turns
    ``auto`` into one of them). ``max_batch`` is the largest batch the engine
    sends (ProxyCLIP's window batch; 1 for one image per call): exported graphs
    and TensorRT profiles are sized for it.
    """

    device: str = "cpu"
    precision: str = "fp32"
    max_batch: int = 1
    cache_dir: str = "~/.cache/ovseg_ros/engines"
    threads: int = 0
    force_rebuild: bool = False
    channels_last: bool = True    # as the config default: only applies on CUDA
    torch_compile: bool = False
    cuda_graphs: bool = False

    def __post_init__(self):
        if self.precision not in ("fp32", "fp16", "bf16", "int8"):
            raise ConfigError(f"config key 'precision': expected fp32, fp16, bf16 or int8 here, "
                              f"got {self.precision!r}")
        if int(self.max_batch) < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")

    @classmethod
    def from_config(cls, cfg, *, max_batch: int = 1) -> "BackendSpec":
        """The spec from a ``Config``'s top-level keys (no engine group is read)."""
        return cls(device=cfg["device"], precision=cfg["precision"], max_batch=int(max_batch),
                   cache_dir=cfg["graph_cache_dir"], threads=int(cfg["num_threads"]),
                   force_rebuild=bool(cfg["force_rebuild"]),
                   channels_last=bool(cfg["channels_last"]),
                   torch_compile=bool(cfg["torch_compile"]), cuda_graphs=bool(cfg["cuda_graphs"]))


@dataclass(frozen=True)
class ExportSpec:
    """An engine's description of its image path, for running and for export.

    ``module`` takes one float32 B x 3 x H x W tensor (RGB in [0, 1]) and
    returns a tensor or a tuple of tensors. ``model_id`` and ``graph_settings``
    (the engine settings baked into the graph as constants) name cached
    graphs together with the weights hash, so a changed setting never reuses a
    stale graph. ``output_names`` default to out0..outN-1; with a dynamic
    batch, axis 0 of the input and of every output is symbolic (``dynamic_axes``).
    ``cast_weights(dtype)``, when given, stores the module's weights in a low
    precision for eager bf16/fp16 runs (None: fp32 weights under autocast).
    ``quantize_int8()``, when given, turns the module's heavy linears into dynamic int8
    ones in place (``precision: int8``, torch backend on the CPU); without it the image
    path has no int8 form and the backend refuses int8.
    ``input_channels`` is 3 for image paths; a second graph of an engine may take
    more (OVSeg's CLIP-crop graph: normalised RGB crop + its mask, 4).
    """

    module: Any
    model_id: str
    graph_settings: Mapping[str, Any] = field(default_factory=dict)
    input_name: str = INPUT_NAME
    output_names: Optional[Tuple[str, ...]] = None
    cast_weights: Optional[Callable[[Any], Any]] = None
    input_channels: int = 3
    quantize_int8: Optional[Callable[[], Any]] = None

    def __post_init__(self):
        if not self.model_id:
            raise ValueError("ExportSpec needs a model_id (it names cached graphs)")

    def example_input(self, batch: int, hw: Tuple[int, int]):
        """A random input of the module's contract, on the module's device."""
        import torch

        try:
            device = next(self.module.parameters()).device
        except (StopIteration, AttributeError):
            device = torch.device("cpu")
        return torch.rand(int(batch), int(self.input_channels), int(hw[0]), int(hw[1]),
                          device=device)

    def names_for(self, count: int) -> Tuple[str, ...]:
        """Output names for a module returning ``count`` tensors."""
        if self.output_names is None:
            return tuple(f"out{i}" for i in range(count))
        if len(self.output_names) != count:
            raise ValueError(f"ExportSpec names {len(self.output_names)} outputs "
                             f"{self.output_names} but the module returns {count}")
        return tuple(self.output_names)

    def dynamic_axes(self, output_names) -> dict:
        """The batch axis of the input and of every output, for a dynamic-batch export."""
        return {self.input_name: {0: "batch"}, **{n: {0: "batch"} for n in output_names}}


def check_image_batch(x, channels: int = 3) -> None:
    """The image-path input contract: float32 B x 3 x H x W (``channels`` for graphs that
    declare another ``ExportSpec.input_channels``)."""
    import torch

    if not isinstance(x, torch.Tensor):
        raise TypeError(f"the image path takes a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"the image path takes a B x {channels} x H x W tensor, got shape "
                         f"{tuple(x.shape)}")
    if x.dtype != torch.float32:
        raise ValueError(f"the image path takes float32 RGB in [0, 1], got {x.dtype}")


def check_backend_args(name: str, export, spec) -> None:
    """Every backend's constructor takes (ExportSpec, BackendSpec); say so when it does not."""
    if not isinstance(export, ExportSpec):
        raise TypeError(f"backend {name!r} takes an ExportSpec (ovseg_ros.backends.base) as its "
                        f"first argument, got {type(export).__name__}")
    if not isinstance(spec, BackendSpec):
        raise TypeError(f"backend {name!r} takes a BackendSpec (ovseg_ros.backends.base) as its "
                        f"second argument, got {type(spec).__name__}")


def resolve_device(name: str):
    """'cpu', 'cuda' or 'cuda:N' -> torch.device; CUDA without a GPU is an error."""
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"config key 'device': {name!r} is not a torch device "
                          "(use 'cpu', 'cuda' or 'cuda:N')") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"config key 'device' is {name!r} but CUDA is not available "
                              f"(torch {torch.__version__}, built with CUDA "
                              f"{torch.version.cuda}); set device: cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"config key 'device' is {name!r} but only "
                              f"{torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type != "cpu":
        raise ConfigError(f"config key 'device': {name!r} is not supported (use 'cpu' or 'cuda')")
    return dev


def check_precision(precision: str, device):
    """The autocast dtype for a precision setting (None = fp32 arithmetic, no autocast:
    fp32, and int8, whose quantised linears take and give fp32)."""
    import torch

    if precision == "fp32":
        return None
    if precision == "int8":
        if device.type != "cpu":
            raise ConfigError(f"config key 'precision': int8 runs on the CPU only (dynamic int8 "
                              f"linears, fbgemm/oneDNN CPU kernels), not on device {device}; "
                              "on CUDA use fp16 or auto")
        return None
    if precision == "bf16":
        if device.type == "cpu":
            # emulated bf16: warned with its measured slowdown, or refused (no AVX-512)
            check_cpu_bf16()
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise ConfigError("config key 'precision': fp16 needs device: cuda; on the CPU use "
                              "bf16 (autocast) or fp32")
        return torch.float16
    raise ConfigError(f"config key 'precision': unknown value {precision!r}")


def autocast_context(device, dtype):
    """torch.autocast for ``dtype`` on ``device``'s type; no context for fp32 (None)."""
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


__all__ = ["BackendError", "BackendSpec", "ExportSpec", "INPUT_NAME", "check_image_batch",
           "check_backend_args", "resolve_device", "check_precision", "autocast_context"]
