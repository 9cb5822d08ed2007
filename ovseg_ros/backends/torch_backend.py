"""The default backend: runs an engine's image model eagerly with torch.

Backend contract (every backend in this package follows it)::

    backend = get_backend(name)(image_model, cfg, model_id="...")
    out = backend(x)        # x: B x 3 x H x W float32 in [0, 1] (any device)
                            # out: the image model's output as float32 on backend.device
    backend.device          # torch.device the outputs live on
    backend.describe()      # dict for logs/diagnostics

``model_id`` names the model and its weights (for caches of exported engines).

Precision: ``fp32`` is exact; ``bf16`` runs under autocast (CPU and CUDA);
``fp16`` runs under autocast on CUDA only (CPU fp16 is slower than fp32 and
is rejected with a clear error).
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch

from ..config import Config, ConfigError
from ..registry import register_backend
from .torch_fast import (CudaGraphRunner, check_fast_options, compile_model, has_convolutions,
                         profiling_off)


def resolve_device(name: str) -> torch.device:
    """'cpu', 'cuda' or 'cuda:N' -> torch.device; CUDA without a GPU is an error."""
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


def check_precision(precision: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype for a precision setting (None = fp32, no autocast)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise ConfigError("config key 'precision': fp16 needs device: cuda; on the CPU use "
                              "bf16 (autocast) or fp32")
        return torch.float16
    raise ConfigError(f"config key 'precision': unknown value {precision!r}")


def autocast_context(device: torch.device, dtype: Optional[torch.dtype]):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@register_backend("torch")
class TorchBackend:
    name = "torch"

    def __init__(self, image_model: torch.nn.Module, cfg: Config, model_id: str = ""):
        self.device = resolve_device(cfg["device"])
        self.precision = cfg["precision"]
        self.autocast_dtype = check_precision(self.precision, self.device)
        self.model_id = model_id
        for p in image_model.parameters():
            p.requires_grad_(False)
        self.model = image_model.eval().to(self.device)
        # optional speed-ups (ovseg_ros/backends/torch_fast.py); the eager path is unchanged
        check_fast_options(cfg, self.device)
        self.channels_last = bool(cfg["channels_last"]) and self.device.type == "cuda" \
            and has_convolutions(self.model)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.torch_compile = bool(cfg["torch_compile"])
        self.cuda_graphs = bool(cfg["cuda_graphs"])
        self._run = self.model
        if self.torch_compile:
            self._run = compile_model(self.model, self.cuda_graphs)
        elif self.cuda_graphs:
            self._run = CudaGraphRunner(self.model, self.device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        fast = self.torch_compile or self.cuda_graphs
        with torch.inference_mode(), autocast_context(self.device, self.autocast_dtype), \
                (profiling_off(self.model) if fast else contextlib.nullcontext()):
            out = self._run(x)
        if isinstance(out, (tuple, list)):     # multi-output image paths (FC-CLIP, MAFT+)
            return tuple(o.float() for o in out)
        return out.float()

    def describe(self) -> dict:
        return {"backend": self.name, "device": str(self.device), "precision": self.precision,
                "threads": torch.get_num_threads(), "channels_last": self.channels_last,
                "torch_compile": self.torch_compile, "cuda_graphs": self.cuda_graphs}


__all__ = ["TorchBackend", "resolve_device", "check_precision", "autocast_context"]
