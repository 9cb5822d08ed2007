"""``backend: tensorrt`` — the image path as a serialized TensorRT engine.

Pipeline: the image model is exported to ONNX (``onnx_export``, dynamic
batch, fp32 graph, cached), parsed with ``trt.OnnxParser`` into an
explicit-batch network, and built with ``Builder.build_serialized_network``
under a BuilderConfig carrying the precision flag (FP16 for ``precision:
fp16``, BF16 for ``bf16``; fp32 builds keep TensorRT's default TF32 for
matrix products), one optimisation profile for batch 1..max_batch at the
fixed H x W, and a persistent timing cache (so rebuilding after a weights
change skips most kernel timing).

Engines are cached by model, weights hash, input shape, batch profile,
precision, GPU name, compute capability and TensorRT version; a JSON sidecar
with that key and a SHA-256 of the engine is validated before every
deserialisation (GraphCache). Inference binds torch CUDA tensors directly
(``set_tensor_address``) and enqueues with ``execute_async_v3`` on
``torch.cuda.current_stream()``, so it orders with the surrounding torch
work without pycuda or extra synchronisation.

Written against the documented TensorRT 10 Python API (8.6 works too: the
EXPLICIT_BATCH flag is set where it still exists). TensorRT is not
installable on the project's CI machines; there this module imports fine and
the backend's constructor raises a clear error.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Tuple

from ..registry import register_backend
from .graph_cache import CacheKey, GraphCache, GraphCacheError, weights_hash
from .base import (BackendError, BackendSpec, ExportSpec, check_backend_args,
                   check_image_batch)
from .onnx_export import DEFAULT_OPSET, ExportedGraph, export_cached

log = logging.getLogger(__name__)

ENGINE_SUFFIX = ".engine"
DEFAULT_WORKSPACE_BYTES = 4 << 30


def import_tensorrt():
    """The ``tensorrt`` module, or BackendError saying how to get it."""
    try:
        import tensorrt as trt  # noqa: F401  (optional dependency)
    except ImportError as exc:
        raise BackendError(
            "backend 'tensorrt' needs NVIDIA TensorRT's Python package (import tensorrt failed: "
            f"{exc}). Install it on a CUDA machine (pip install tensorrt, or JetPack on Jetson), "
            "or use backend 'onnxruntime' or 'torch'.") from exc
    return trt


def tensorrt_cache_key(onnx_key: CacheKey, *, max_batch: int, precision: str, gpu_name: str,
                       compute_capability: Tuple[int, int], trt_version: str) -> CacheKey:
    """Key of an engine built from the graph ``onnx_key`` on one GPU with one TensorRT."""
    _, c, h, w = onnx_key.input_shape
    return CacheKey(
        kind="tensorrt",
        model=onnx_key.model,
        weights_hash=onnx_key.weights_hash,
        input_shape=(-1, c, h, w),
        precision=precision,
        graph_settings=onnx_key.graph_settings,
        extra={"onnx_key": onnx_key.digest(), "opset": onnx_key.extra.get("opset"),
               "profile_batch": [1, int(max_batch), int(max_batch)],
               "gpu_name": gpu_name, "compute_capability": list(compute_capability),
               "tensorrt": trt_version},
    )


def timing_cache_path(cache_dir: Path, gpu_name: str, trt_version: str) -> Path:
    """One timing cache per GPU model and TensorRT version (its entries are only valid there)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", gpu_name)
    return Path(cache_dir) / f"timing-{slug}-trt{trt_version}.cache"


def make_trt_logger(trt):
    """A trt.ILogger forwarding to Python logging; errors are kept for exception messages."""

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors = []

        def log(self, severity, msg):
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(msg)
                log.error("TensorRT: %s", msg)
            elif severity == trt.ILogger.Severity.WARNING:
                log.warning("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

    return Logger()


def build_engine(trt, trt_logger, onnx_path: Path, *, input_name: str, input_chw: Tuple[int, ...],
                 max_batch: int, precision: str, timing_cache: Optional[Path],
                 workspace_bytes: int = DEFAULT_WORKSPACE_BYTES) -> bytes:
    """ONNX file -> serialized engine bytes (the ``trtexec --onnx ... --saveEngine`` step)."""
    builder = trt.Builder(trt_logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        # TensorRT 8.x needs it; 10.x networks are always explicit-batch (flag deprecated)
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, trt_logger)
    # parse_from_file resolves external-data weight files relative to the graph
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT's ONNX parser rejected {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if precision == "fp16":
        # deprecated in TensorRT 10 (every supported GPU has fp16); checked where it exists
        if not getattr(builder, "platform_has_fast_fp16", True):
            raise BackendError("precision fp16 was asked for but this GPU has no fast fp16; "
                               "set precision: fp32")
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "bf16":
        if not hasattr(trt.BuilderFlag, "BF16"):
            raise BackendError(f"TensorRT {trt.__version__} has no BF16 builder flag "
                               "(TensorRT >= 9 does); set precision: fp16")
        config.set_flag(trt.BuilderFlag.BF16)

    profile = builder.create_optimization_profile()
    c, h, w = input_chw
    profile.set_shape(input_name, (1, c, h, w), (max_batch, c, h, w), (max_batch, c, h, w))
    config.add_optimization_profile(profile)

    cache_obj = None
    if timing_cache is not None:
        blob = b""
        if timing_cache.exists():
            blob = timing_cache.read_bytes()
        cache_obj = config.create_timing_cache(blob)
        if cache_obj is None or not config.set_timing_cache(cache_obj, ignore_mismatch=False):
            raise BackendError(f"TensorRT rejected the timing cache {timing_cache}; delete it "
                               "(it is only a build-time speed-up) and build again")

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        errors = "; ".join(getattr(trt_logger, "errors", [])) or "see the TensorRT log above"
        raise BackendError(f"TensorRT could not build an engine from {onnx_path}: {errors}")
    if timing_cache is not None:
        updated = config.get_timing_cache()
        if updated is not None:
            tmp = timing_cache.with_suffix(".tmp")
            tmp.write_bytes(memoryview(updated.serialize()))
            tmp.replace(timing_cache)
    return bytes(memoryview(serialized))


def _torch_dtype(trt, dtype):
    import torch

    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
             trt.int8: torch.int8, trt.bool: torch.bool}
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    if hasattr(trt, "int64"):
        table[trt.int64] = torch.int64
    if dtype not in table:
        raise BackendError(f"TensorRT tensor type {dtype} has no torch equivalent here")
    return table[dtype]


class _Engine:
    """One deserialized engine and its execution context (one input size)."""

    def __init__(self, trt, runtime, blob: bytes, graph: ExportedGraph, device, max_batch: int,
                 path: Path):
        self.trt = trt
        self.graph = graph
        self.device = device
        self.max_batch = max_batch
        self.engine = runtime.deserialize_cuda_engine(blob)
        if self.engine is None:
            raise GraphCacheError(f"TensorRT could not deserialize {path} (built by another "
                                   "TensorRT version or for another GPU?); delete it or set "
                                   "force_rebuild: true")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names
                       if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = list(graph.output_names)
        missing = [n for n in self.outputs if n not in names]
        if self.inputs != [graph.input_name] or missing:
            raise GraphCacheError(f"engine {path} has tensors {names}, expected input "
                                   f"{graph.input_name!r} and outputs {self.outputs}; "
                                   "delete it or set force_rebuild: true")
        self.out_dtypes = [_torch_dtype(trt, self.engine.get_tensor_dtype(n))
                           for n in self.outputs]

    def __call__(self, x):
        import torch

        results = []
        # the optimisation profile ends at max_batch: run larger batches in slices
        for chunk in torch.split(x, self.max_batch, dim=0):
            chunk = chunk.contiguous()
            ctx = self.context
            if not ctx.set_input_shape(self.graph.input_name, tuple(chunk.shape)):
                raise BackendError(f"TensorRT refused input shape {tuple(chunk.shape)}")
            ctx.set_tensor_address(self.graph.input_name, chunk.data_ptr())
            outs = []
            for name, dtype in zip(self.outputs, self.out_dtypes):
                shape = tuple(ctx.get_tensor_shape(name))
                out = torch.empty(shape, dtype=dtype, device=self.device)
                ctx.set_tensor_address(name, out.data_ptr())
                outs.append(out)
            stream = torch.cuda.current_stream(self.device)
            if not ctx.execute_async_v3(stream.cuda_stream):
                raise BackendError("TensorRT execute_async_v3 failed (see the TensorRT log)")
            results.append(outs)
        if len(results) == 1:
            return tuple(o.float() for o in results[0])
        return tuple(torch.cat([r[i] for r in results], 0).float()
                     for i in range(len(self.outputs)))


@register_backend("tensorrt")
class TensorRTBackend:
    """Runs ``export.module`` as TensorRT engines, one per input size (see module doc)."""

    name = "tensorrt"
    #: the torch module never runs per call (its stage timers stay silent)
    eager = False

    def __init__(self, export: ExportSpec, spec: BackendSpec, *, opset: int = DEFAULT_OPSET,
                 workspace_bytes: int = DEFAULT_WORKSPACE_BYTES):
        import torch

        check_backend_args(self.name, export, spec)
        self.trt = import_tensorrt()
        self.device = torch.device(spec.device)
        if self.device.type != "cuda":
            raise BackendError(f"backend 'tensorrt' runs on a CUDA device; config says device "
                               f"{spec.device!r}. Set device: cuda (or cuda:N).")
        if not torch.cuda.is_available():
            raise BackendError("backend 'tensorrt' needs CUDA, but torch sees no CUDA device "
                               "(torch.cuda.is_available() is False)")
        if self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.export = export
        self.spec = spec
        self.precision = spec.precision
        if self.precision == "int8":
            # TensorRT int8 needs a calibration set this project does not ship
            raise BackendError("backend 'tensorrt' has no int8 path; use precision fp16 or fp32 "
                               "(int8 is the torch backend on the CPU)")
        self.max_batch = spec.max_batch
        self.model_id = export.model_id
        self.opset = opset
        self.workspace_bytes = workspace_bytes
        self.cache = GraphCache(spec.cache_dir)
        self.gpu_name = torch.cuda.get_device_name(self.device)
        self.compute_capability = tuple(torch.cuda.get_device_capability(self.device))
        self.trt_version = str(self.trt.__version__)
        self.weights_digest = weights_hash(export.module)
        self.logger = make_trt_logger(self.trt)
        self.runtime = self.trt.Runtime(self.logger)
        self._engines: Dict[Tuple[int, int], _Engine] = {}

    def prepare(self, sizes: Iterable[Tuple[int, int]]) -> None:
        """Build/load the engines for these H x W sizes now (building takes minutes)."""
        for hw in sizes:
            self._engine(tuple(int(v) for v in hw))

    def _engine(self, hw: Tuple[int, int]) -> _Engine:
        eng = self._engines.get(hw)
        if eng is not None:
            return eng
        # the ONNX graph is always fp32: TensorRT picks fp16/bf16 kernels itself from the flag
        graph = export_cached(self.export, self.spec, hw, batch=self.max_batch,
                              dynamic_batch=True, precision="fp32", opset=self.opset,
                              weights_digest=self.weights_digest)
        key = tensorrt_cache_key(graph.key, max_batch=self.max_batch, precision=self.precision,
                                 gpu_name=self.gpu_name,
                                 compute_capability=self.compute_capability,
                                 trt_version=self.trt_version)
        if self.spec.force_rebuild:
            self.cache.remove(key, (ENGINE_SUFFIX,))
        path = self.cache.lookup(key, ENGINE_SUFFIX)
        if path is None:
            log.warning("building a TensorRT engine for %s at %dx%d (%s); this takes minutes "
                        "once, then it is cached in %s", key.model, hw[0], hw[1],
                        self.precision, self.cache.directory)
            blob = build_engine(self.trt, self.logger, graph.path, input_name=graph.input_name,
                                input_chw=(self.export.input_channels, hw[0], hw[1]),
                                max_batch=self.max_batch,
                                precision=self.precision,
                                timing_cache=timing_cache_path(self.cache.directory,
                                                               self.gpu_name, self.trt_version),
                                workspace_bytes=self.workspace_bytes)
            with self.cache.temp_dir() as tmp:
                built = Path(tmp) / (key.stem() + ENGINE_SUFFIX)
                built.write_bytes(blob)
                path = self.cache.commit(key, [(built, built.name)],
                                         {"onnx": graph.path.name,
                                          "output_names": list(graph.output_names)})
        else:
            blob = path.read_bytes()
        eng = _Engine(self.trt, self.runtime, blob, graph, self.device, self.max_batch, path)
        self._engines[hw] = eng
        return eng

    def __call__(self, x):
        check_image_batch(x, self.export.input_channels)
        eng = self._engine((int(x.shape[2]), int(x.shape[3])))
        outs = eng(x.to(self.device, non_blocking=True))
        return outs if eng.graph.returns_tuple else outs[0]

    def describe(self) -> Dict[str, Any]:
        return {"backend": self.name, "precision": self.precision, "gpu": self.gpu_name,
                "tensorrt": self.trt_version, "max_batch": self.max_batch}


__all__ = ["TensorRTBackend", "tensorrt_cache_key", "timing_cache_path", "build_engine",
           "import_tensorrt"]
