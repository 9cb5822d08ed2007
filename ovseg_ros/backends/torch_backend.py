"""The default backend: runs an engine's image model eagerly with torch.

The backend contract (constructor ``(ExportSpec, BackendSpec)``, call, device,
describe) is in ``ovseg_ros/backends/base.py``.

Precision: ``fp32`` is exact; ``bf16`` runs under autocast (CPU and CUDA);
``fp16`` runs under autocast on CUDA only (CPU fp16 is slower than fp32 and
is rejected with a clear error). Where the engine gives ``cast_weights``, the
weights are stored once in the low-precision dtype: on the CPU, autocast alone
re-casts every weight per call (measured on ProxyCLIP: ~35% of the bf16 run
time in copies). ``int8`` (CPU only) calls the engine's ``quantize_int8`` once at
load: its heavy linears become dynamic int8 linears (``models/quantize.py``), the
rest runs in fp32 without autocast; an image path without it is refused.
"""
from __future__ import annotations

import contextlib

import torch

from ..config import ConfigError
from ..registry import register_backend
from .base import (BackendSpec, ExportSpec, autocast_context, check_backend_args,
                   check_precision, resolve_device)
from .torch_fast import (CudaGraphRunner, check_fast_options, compile_model, has_convolutions,
                         profiling_off)


@register_backend("torch")
class TorchBackend:
    name = "torch"

    #: the module runs per call, so its in-forward stage timers measure something
    eager = True

    def __init__(self, export: ExportSpec, spec: BackendSpec):
        check_backend_args(self.name, export, spec)
        self.export = export
        self.spec = spec
        self.device = resolve_device(spec.device)
        self.precision = spec.precision
        self.autocast_dtype = check_precision(self.precision, self.device)
        self.model_id = export.model_id
        image_model = export.module
        if self.autocast_dtype is not None and export.cast_weights is not None:
            export.cast_weights(self.autocast_dtype)
        self.int8_linears = 0
        if self.precision == "int8":
            self.int8_linears = self._quantize(export, spec)
        for p in image_model.parameters():
            p.requires_grad_(False)
        self.model = image_model.eval().to(self.device)
        # optional speed-ups (ovseg_ros/backends/torch_fast.py); the eager path is unchanged
        check_fast_options(spec, self.device)
        self.channels_last = spec.channels_last and self.device.type == "cuda" \
            and has_convolutions(self.model)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.torch_compile = spec.torch_compile
        self.cuda_graphs = spec.cuda_graphs
        self._run = self.model
        if self.torch_compile:
            self._run = compile_model(self.model, self.cuda_graphs, self.device)
        elif self.cuda_graphs:
            self._run = CudaGraphRunner(self.model, self.device)

    def _quantize(self, export: ExportSpec, spec: BackendSpec) -> int:
        """int8: the engine's linears quantised once (on the CPU, where the model is)."""
        if export.quantize_int8 is None:
            raise ConfigError(f"config key 'precision': int8 is not available for "
                              f"{export.model_id.split('|')[0]!r}: its image path has no int8 "
                              "form; use fp32, bf16 or auto")
        if spec.torch_compile or spec.cuda_graphs:
            raise ConfigError("config key 'precision': int8 runs eagerly; set torch_compile and "
                              "cuda_graphs false (or use precision bf16 with torch_compile)")
        return int(export.quantize_int8())

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
                "torch_compile": self.torch_compile, "cuda_graphs": self.cuda_graphs,
                **({"int8_linears": self.int8_linears} if self.int8_linears else {})}


__all__ = ["TorchBackend", "resolve_device", "check_precision", "autocast_context"]
