"""``backend: onnxruntime`` — the image path as an exported ONNX graph in ONNX Runtime.

Called like the image model: a float32 B x 3 x H x W tensor in (any device),
the same tensor (or tuple of tensors) out as float32 on ``backend.device``. One graph with a
dynamic batch is exported (and cached) per input size H x W the first time
that size is seen; ``prepare`` builds them ahead of the first frame.

Providers follow the config's ``device``: ``cpu`` runs the
CPUExecutionProvider; ``cuda``/``cuda:N`` asks for the CUDAExecutionProvider
on GPU N and fails with a clear error where that provider is not installed
or ONNX Runtime cannot load it — it never quietly runs on the CPU instead.

Precision: fp32 everywhere; fp16 with the CUDA provider (weights converted
to fp16, float32 inputs/outputs). bf16 has no general ONNX Runtime path, so
it is refused with a pointer to the torch backend.
"""
from __future__ import annotations

import logging
from typing import Dict, Iterable, Tuple

from ..registry import register_backend
from .graph_cache import weights_hash
from .base import (BackendError, BackendSpec, ExportSpec, check_backend_args,
                   check_image_batch)
from .onnx_export import DEFAULT_OPSET, ExportedGraph, export_cached

log = logging.getLogger(__name__)


def _parse_device(device: str):
    import torch

    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise BackendError(f"config key 'device' must be 'cpu', 'cuda' or 'cuda:N', got "
                           f"{device!r}") from exc


def providers_for(device, available: Iterable[str]) -> list:
    """ONNX Runtime providers for a torch device; raises BackendError when CUDA is missing."""
    available = list(available)
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise BackendError(
                "backend 'onnxruntime' with device "
                f"'{device}' needs ONNX Runtime's CUDAExecutionProvider, but this onnxruntime "
                f"offers only {available}. Install the GPU build (pip install onnxruntime-gpu, "
                "matching your CUDA) or set device: cpu.")
        return [("CUDAExecutionProvider", {"device_id": device.index or 0})]
    raise BackendError(f"backend 'onnxruntime' runs on 'cpu' or 'cuda[:N]', not {device}")


class _Session:
    """One ONNX Runtime session for one exported graph (one input size)."""

    def __init__(self, graph: ExportedGraph, device, providers: list, threads: int):
        import onnxruntime as ort

        self.graph = graph
        self.device = device
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads > 0:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(graph.path), sess_options=opts,
                                                providers=providers)
        except Exception as exc:  # ORT raises its own Fail/InvalidGraph types
            raise BackendError(f"ONNX Runtime could not load {graph.path}: {exc}") from exc
        wanted = providers[0] if isinstance(providers[0], str) else providers[0][0]
        got = self.session.get_providers()
        if not got or got[0] != wanted:
            # ORT falls back to the CPU when the CUDA libraries fail to load; we do not
            raise BackendError(f"ONNX Runtime did not enable {wanted} (active: {got}); check that "
                               "the CUDA and cuDNN libraries onnxruntime-gpu needs are installed, "
                               "or set device: cpu")
        self._outputs = [o.name for o in self.session.get_outputs()]
        self._output_dims = [o.shape for o in self.session.get_outputs()]

    def __call__(self, x):
        import torch

        if self.device.type == "cpu":
            feeds = {self.graph.input_name: x.detach().to("cpu").contiguous().numpy()}
            results = self.session.run(self._outputs, feeds)
            outs = tuple(torch.from_numpy(r) for r in results)
        else:
            outs = self._run_cuda(x)
        return outs

    def _run_cuda(self, x):
        """Zero-copy run on GPU memory through IO binding (torch owns every buffer)."""
        import numpy as np
        import torch

        x = x.detach().to(self.device).contiguous()
        binding = self.session.io_binding()
        dev_id = self.device.index or 0
        binding.bind_input(self.graph.input_name, "cuda", dev_id, np.float32, tuple(x.shape),
                           x.data_ptr())
        outs = []
        for name, dims in zip(self._outputs, self._output_dims):
            # exported outputs are static except the batch dimension
            shape = [x.shape[0] if not isinstance(d, int) else d for d in dims]
            out = torch.empty(shape, dtype=torch.float32, device=self.device)
            binding.bind_output(name, "cuda", dev_id, np.float32, tuple(shape), out.data_ptr())
            outs.append(out)
        # ORT runs on its own stream: the input must be complete before it starts
        torch.cuda.current_stream(self.device).synchronize()
        self.session.run_with_iobinding(binding)
        return tuple(outs)


@register_backend("onnxruntime")
class OnnxRuntimeBackend:
    """Runs the exported ONNX graph of ``export.module`` in ONNX Runtime (see module doc)."""

    name = "onnxruntime"
    #: the torch module never runs per call (its stage timers stay silent)
    eager = False

    def __init__(self, export: ExportSpec, spec: BackendSpec, *, opset: int = DEFAULT_OPSET):
        import onnxruntime as ort

        check_backend_args(self.name, export, spec)
        self.export = export
        self.spec = spec
        self.device = _parse_device(spec.device)
        self.precision = spec.precision
        if self.precision in ("bf16", "int8"):
            raise BackendError(f"backend 'onnxruntime' has no {self.precision} path; use "
                               "precision fp32 (or fp16 on CUDA), or backend 'torch' for "
                               f"{self.precision}")
        if self.precision == "fp16" and self.device.type != "cuda":
            raise BackendError("backend 'onnxruntime' runs fp16 only with device cuda (the CPU "
                               "provider has few fp16 kernels); use precision fp32 on the CPU, "
                               "or backend 'torch' with precision bf16 for a faster CPU path")
        self.providers = providers_for(self.device, ort.get_available_providers())
        self.max_batch = spec.max_batch
        self.model_id = export.model_id
        self.opset = opset
        self.threads = spec.threads
        # hash once: the weights do not change while the backend lives
        self.weights_digest = weights_hash(export.module)
        self._sessions: Dict[Tuple[int, int], _Session] = {}

    def prepare(self, sizes: Iterable[Tuple[int, int]]) -> None:
        """Export/load the graphs for these H x W sizes now instead of on the first frame."""
        for hw in sizes:
            self._session(tuple(int(v) for v in hw))

    def graph(self, hw: Tuple[int, int]) -> ExportedGraph:
        return self._session(hw).graph

    def _session(self, hw: Tuple[int, int]) -> _Session:
        sess = self._sessions.get(hw)
        if sess is None:
            graph = export_cached(self.export, self.spec, hw, batch=self.max_batch,
                                  dynamic_batch=True, precision=self.precision,
                                  opset=self.opset, weights_digest=self.weights_digest)
            sess = _Session(graph, self.device, self.providers, self.threads)
            self._sessions[hw] = sess
        return sess

    def __call__(self, x):
        check_image_batch(x, self.export.input_channels)
        sess = self._session((int(x.shape[2]), int(x.shape[3])))
        outs = sess(x)
        return outs if sess.graph.returns_tuple else outs[0]

    def describe(self) -> dict:
        return {"backend": self.name, "providers": [p if isinstance(p, str) else p[0]
                                                    for p in self.providers],
                "precision": self.precision, "graphs": [str(s.graph.path)
                                                        for s in self._sessions.values()]}


__all__ = ["OnnxRuntimeBackend", "providers_for", "BackendError"]
