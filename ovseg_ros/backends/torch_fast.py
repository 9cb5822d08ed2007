"""Optional speed-ups of the torch backend (config keys ``channels_last``,
``torch_compile``, ``cuda_graphs``); used by ``torch_backend.TorchBackend``.

- channels_last (CUDA): convolution weights and the input in NHWC, which is
  what cuDNN's fast fp16/bf16 convolution kernels want (ConvNeXt in FC-CLIP).
  ViT image paths only have their patch-embedding convolution affected.
- torch.compile: Inductor kernels for the whole image path, specialised per
  input shape (``dynamic=False``: the crop size is fixed, the window batch
  takes at most two values).
- CUDA graphs: per input shape, the image path is captured once and replayed,
  removing Python and kernel-launch overhead (large for small batches on fast
  GPUs). Together with torch.compile this is Inductor's ``reduce-overhead``
  mode instead of a hand-made capture.

Attention already runs through ``F.scaled_dot_product_attention`` (timm's
fused attention, open_clip's nn.MultiheadAttention), which picks flash /
memory-efficient kernels on CUDA by itself; ProxyCLIP's proxy attention uses
an attention matrix that does not come from q·k and stays a batched matmul.

Per-stage profiling inside an image model (the ``profile`` attribute, and
``core/stage_timing.py`` marks, which synchronise the GPU and read clocks) cannot be captured in a
CUDA graph or compiled usefully; these modes switch it off for the call.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, Tuple

import torch

from ..config import ConfigError
from ..core.stage_timing import stage_timer


def has_convolutions(model: torch.nn.Module) -> bool:
    return any(isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)) for m in model.modules())


@contextlib.contextmanager
def profiling_off(model: torch.nn.Module):
    """Temporarily disable an engine's in-forward stage timing (see module doc)."""
    saved = {}
    for name, off in (("profile", False),):
        if hasattr(model, name):
            saved[name] = getattr(model, name)
            setattr(model, name, off)
    try:
        with stage_timer(None):   # marks inside the forward (ovseg_ros/core/stage_timing.py)
            yield
    finally:
        for name, value in saved.items():
            setattr(model, name, value)


def check_fast_options(spec, device: torch.device) -> None:
    """``spec``: the BackendSpec (ovseg_ros/backends/base.py)."""
    if spec.cuda_graphs and device.type != "cuda":
        raise ConfigError("config key 'cuda_graphs' needs device: cuda (CUDA graphs replay GPU "
                          f"work); device is {str(device)!r}. Set cuda_graphs: false.")


#: Inductor options of the CPU path. ``freezing``: the weights become constants of the
#: graph, so oneDNN gets its linear/convolution weights prepacked once (eager bf16 reorders
#: them on every call) and what depends only on weights is folded; the weights can no
#: longer change, which an inference image path never does. Measured against plain
#: compile, whole model vs per trunk, and max-autotune: docs/benchmarks/cpu.md,
#: "Compiled bf16".
CPU_INDUCTOR_OPTIONS = {"freezing": True}


def compile_model(model: torch.nn.Module, cuda_graphs: bool,
                  device: torch.device = torch.device("cpu")) -> Callable:
    """``torch.compile`` of the whole image path, static shapes (the engine's crop sizes
    are fixed; each new shape compiles once, at the node's warm-up for the cameras' size)."""
    if device.type == "cpu":
        return torch.compile(model, dynamic=False, options=dict(CPU_INDUCTOR_OPTIONS))
    # reduce-overhead = Inductor kernels + Inductor-managed CUDA graphs
    mode = "reduce-overhead" if cuda_graphs else None
    return torch.compile(model, dynamic=False, mode=mode)


class CudaGraphRunner:
    """Capture ``fn(x)`` once per input shape on the GPU and replay it.

    The captured graph reads a static input buffer and writes static outputs;
    each call copies the input in and returns clones of the outputs, so a
    result stays valid after the next call. All shapes share one memory pool.
    """

    def __init__(self, fn: Callable, device: torch.device, warmup: int = 2):
        self.fn = fn
        self.device = device
        self.warmup = warmup
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: Dict[Tuple[int, ...], tuple] = {}

    def _capture(self, x: torch.Tensor) -> tuple:
        static_in = x.clone()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            # warm-up outside capture: cuDNN/cuBLAS autotuning and lazy allocations
            for _ in range(self.warmup):
                self.fn(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            static_out = self.fn(static_in)
        return graph, static_in, static_out

    def __call__(self, x: torch.Tensor):
        key = tuple(x.shape) + (x.dtype,)
        entry = self.graphs.get(key)
        if entry is None:
            entry = self.graphs[key] = self._capture(x)
        graph, static_in, static_out = entry
        static_in.copy_(x)
        graph.replay()
        if isinstance(static_out, (tuple, list)):
            return tuple(o.clone() for o in static_out)
        return static_out.clone()


__all__ = ["has_convolutions", "profiling_off", "check_fast_options", "compile_model",
           "CPU_INDUCTOR_OPTIONS",
           "CudaGraphRunner"]
