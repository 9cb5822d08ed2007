"""Export an engine's image path (described by its ``ExportSpec``) to ONNX.

The image path takes one float32 B x 3 x H x W tensor (RGB in [0, 1];
normalisation is inside the graph) and returns dense, vocabulary-free
outputs, so one exported graph serves every vocabulary. Nothing here knows
an engine: the module, the model id and the baked-in settings that name a
cached graph all come from the ``ExportSpec`` (ovseg_ros/backends/base.py).

Exporter: torch 2.14's default ``torch.onnx.export(dynamo=True)`` needs the
``onnxscript`` package, which is not among this project's pinned
dependencies; the TorchScript-based exporter (``dynamo=False``) ships with
torch, traces these straight-line vision models exactly, and writes opset 17,
the first opset with a fused ``LayerNormalization`` (fewer nodes, one
TensorRT layer) and well supported by ONNX Runtime >= 1.14 and
TensorRT >= 8.6. The graph is checked with ``onnx.checker`` (full check with
shape inference) before it enters the cache.
"""
from __future__ import annotations

import collections
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from .base import INPUT_NAME, BackendError, BackendSpec, ExportSpec, check_image_batch
from .graph_cache import CacheKey, GraphCache, GraphCacheError, weights_hash

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
EXPORTER = "torchscript"
#: protobuf cannot hold a single message above 2 GiB; bigger graphs keep weights beside them
_PROTOBUF_LIMIT = 2 ** 31 - 1


class ExportError(RuntimeError):
    """The image model could not be exported or the exported graph is invalid."""


@dataclass(frozen=True)
class ExportedGraph:
    """A cached ONNX graph of an image path and what is needed to run it."""

    path: Path
    key: CacheKey
    input_name: str
    output_names: Tuple[str, ...]
    #: True when the torch module returns a tuple (even of one tensor)
    returns_tuple: bool
    dynamic_batch: bool


def output_names_for(count: int) -> List[str]:
    return [f"out{i}" for i in range(count)]


def _probe_outputs(module, example) -> Tuple[int, bool]:
    import torch

    with torch.no_grad():
        out = module(example)
    if isinstance(out, torch.Tensor):
        return 1, False
    if isinstance(out, (tuple, list)) and out and all(isinstance(t, torch.Tensor) for t in out):
        return len(out), True
    raise ExportError("the image model must return a tensor or a tuple of tensors to be exported, "
                      f"got {type(out).__name__}")


def _dynamic_timm_vits(module) -> list:
    try:
        from timm.models.vision_transformer import VisionTransformer
    except ImportError:   # timm is a dependency, but export works for any module without it
        return []
    return [m for m in module.modules() if isinstance(m, VisionTransformer)
            and getattr(m, "dynamic_img_size", False) and m.pos_embed is not None]


def specialise_for_export(module, example):
    """A copy of ``module`` whose timm ViTs use position embeddings fixed to this input size.

    timm ViTs built with ``dynamic_img_size`` resample their position
    embedding on every call with antialiased bicubic interpolation, which has
    no ONNX operator before opset 18 and no TensorRT layer. A graph is
    exported for one H x W, so the copy gets the embedding resampled once, by
    timm's own ``resample_abs_pos_embed`` (identical numbers), and skips the
    resampling inside the graph. Modules without such ViTs are returned as is.
    """
    import copy
    import types

    import torch

    if not _dynamic_timm_vits(module):
        return module
    from timm.layers import resample_abs_pos_embed

    module = copy.deepcopy(module)
    vits = _dynamic_timm_vits(module)
    grids = {}
    hooks = [v.patch_embed.register_forward_hook(
        lambda mod, inp, out, v=v: grids.__setitem__(id(v), tuple(out.shape[1:3])))
        for v in vits]
    try:
        with torch.no_grad():
            module(example)
    finally:
        for h in hooks:
            h.remove()
    for v in vits:
        if id(v) not in grids:
            continue   # this ViT is not on the image path for this input
        grid = grids[id(v)]
        with torch.no_grad():
            fixed = resample_abs_pos_embed(
                v.pos_embed, new_size=grid, old_size=v.patch_embed.grid_size,
                num_prefix_tokens=0 if v.no_embed_class else v.num_prefix_tokens)
        v.pos_embed = torch.nn.Parameter(fixed.detach().clone(), requires_grad=False)
        v.patch_embed.grid_size = grid
        v._pos_embed = types.MethodType(_fixed_grid_pos_embed(grid), v)
    return module


def _fixed_grid_pos_embed(grid):
    def _pos_embed(self, x):
        # x is the patch grid B x H x W x C (dynamic_img_size layout)
        if tuple(x.shape[1:3]) != grid:
            raise ExportError(f"position embedding was fixed to a {grid} patch grid for export, "
                              f"got {tuple(x.shape[1:3])}")
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        self.dynamic_img_size = False   # timm's fixed-size branch: add self.pos_embed as is
        try:
            return type(self)._pos_embed(self, x)
        finally:
            self.dynamic_img_size = True
    return _pos_embed


def export_onnx(module, input_shape: Sequence[int], path: Path, *, opset: int = DEFAULT_OPSET,
                dynamic_batch: bool = True, input_name: str = INPUT_NAME,
                output_names: Optional[Sequence[str]] = None,
                channels: int = 3) -> Tuple[List[str], bool]:
    """Export ``module`` for inputs of ``input_shape`` (B, 3, H, W) to ``path``; check the graph.

    With ``dynamic_batch`` the batch dimension is symbolic (``batch``) in the
    input and every output; height and width are always fixed, which lets
    the exporter fold the positional-embedding interpolation into constants.
    ``output_names`` default to out0..outN-1. Returns (output names, whether
    the module returns a tuple).
    """
    import onnx
    import torch

    b, c, h, w = (int(v) for v in input_shape)
    if c != channels:
        raise ExportError(f"this image model takes {channels}-channel input, got input shape "
                          f"{input_shape}")
    try:
        ref = next(module.parameters())
        device = ref.device
    except StopIteration:
        device = torch.device("cpu")
    example = torch.rand(b, c, h, w, device=device)
    module = specialise_for_export(module.eval(), example)
    count, returns_tuple = _probe_outputs(module, example)
    if output_names is not None and len(output_names) != count:
        raise ExportError(f"{len(output_names)} output names {list(output_names)} for a module "
                          f"returning {count} tensors")
    outputs = list(output_names) if output_names is not None else output_names_for(count)
    dynamic_axes = None
    if dynamic_batch:
        dynamic_axes = {input_name: {0: "batch"}, **{n: {0: "batch"} for n in outputs}}
    path = Path(path)
    with warnings.catch_warnings():
        # the legacy exporter warns that it is legacy and about traced shape arithmetic;
        # both are expected here (H and W are fixed per graph on purpose)
        warnings.simplefilter("ignore")
        # nn.MultiheadAttention's inference fast path (open_clip's CLIP blocks) is one fused
        # op with no ONNX form; the regular path it replaces computes the same attention
        fastpath = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            with torch.no_grad():
                torch.onnx.export(module, (example,), str(path), dynamo=False,
                                  opset_version=opset, input_names=[input_name],
                                  output_names=outputs, dynamic_axes=dynamic_axes,
                                  do_constant_folding=True)
        except Exception as exc:  # the exporter raises many types; name the model and shape
            raise ExportError(f"torch.onnx.export failed for {type(module).__name__} with input "
                              f"{tuple(input_shape)} at opset {opset}: {exc}") from exc
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)
    _consolidate_external_data(path)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"exported graph {path} fails onnx.checker: {exc}") from exc
    return outputs, returns_tuple


def _consolidate_external_data(path: Path) -> None:
    """Graphs above 2 GiB come out with one weight file per tensor; keep one ``.data`` file."""
    import onnx

    siblings = [p for p in path.parent.iterdir() if p != path and not p.name.startswith(".")]
    if not siblings:
        return
    model = onnx.load(str(path), load_external_data=True)
    for p in siblings:
        p.unlink()
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=path.name + ".data", size_threshold=1024)


def convert_fp16(src: Path, dst: Path) -> None:
    """fp16 weights and arithmetic with float32 inputs/outputs (for ONNX Runtime's CUDA EP).

    Uses the converter that ships with onnxruntime; inputs and outputs stay
    float32 so callers do not change.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src), load_external_data=True)
    half = convert_float_to_float16(model, keep_io_types=True)
    _sort_nodes(half.graph)
    large = half.ByteSize() > _PROTOBUF_LIMIT
    onnx.save_model(half, str(dst), save_as_external_data=large, all_tensors_to_one_file=True,
                    location=dst.name + ".data")
    onnx.checker.check_model(str(dst), full_check=True)


def _sort_nodes(graph) -> None:
    """Topologically order a graph's nodes in place.

    The converter appends the input/output Cast nodes at the end; ONNX Runtime
    accepts that, but the ONNX spec (and onnx.checker, and TensorRT's parser)
    want producers before consumers.
    """
    nodes = list(graph.node)
    producer = {out: i for i, n in enumerate(nodes) for out in n.output if out}
    deps = [{producer[i] for i in n.input if i in producer} for n in nodes]
    order = []
    ready = collections.deque(i for i, d in enumerate(deps) if not d)
    users = {}
    for i, d in enumerate(deps):
        for j in d:
            users.setdefault(j, []).append(i)
    remaining = [len(d) for d in deps]
    while ready:
        i = ready.popleft()
        order.append(i)
        for u in users.get(i, []):
            remaining[u] -= 1
            if remaining[u] == 0:
                ready.append(u)
    if len(order) != len(nodes):
        raise ExportError("the fp16 graph has a cycle; cannot order its nodes")
    del graph.node[:]
    graph.node.extend(nodes[i] for i in order)


def onnx_cache_key(export: ExportSpec, input_hw: Tuple[int, int], *, batch: int,
                   dynamic_batch: bool, precision: str = "fp32", opset: int = DEFAULT_OPSET,
                   weights_digest: Optional[str] = None) -> CacheKey:
    """The cache key of an exported graph (see GraphCache)."""
    import torch

    h, w = (int(v) for v in input_hw)
    return CacheKey(
        kind="onnx",
        model=export.model_id,
        weights_hash=weights_digest or weights_hash(export.module),
        input_shape=(-1 if dynamic_batch else int(batch), int(export.input_channels), h, w),
        precision=precision,
        graph_settings=dict(export.graph_settings),
        extra={"opset": opset, "exporter": EXPORTER, "torch": torch.__version__.split("+")[0]},
    )


def export_cached(export: ExportSpec, spec: BackendSpec, input_hw: Tuple[int, int], *,
                  batch: int = 1, dynamic_batch: bool = True, precision: str = "fp32",
                  opset: int = DEFAULT_OPSET, weights_digest: Optional[str] = None
                  ) -> ExportedGraph:
    """The ONNX graph of ``export.module`` for H x W inputs, exported once and cached in
    ``spec.cache_dir``.

    ``precision`` fp32 is the exported graph itself; fp16 is derived from it
    (fp16 weights, float32 I/O). A valid cached file is reused unless
    ``spec.force_rebuild`` is set; a damaged one raises GraphCacheError.
    """
    if not isinstance(export, ExportSpec) or not isinstance(spec, BackendSpec):
        raise TypeError("export_cached takes an ExportSpec and a BackendSpec "
                        f"(ovseg_ros.backends.base), got {type(export).__name__} and "
                        f"{type(spec).__name__}")
    if precision not in ("fp32", "fp16"):
        raise ExportError(f"ONNX graphs are exported in fp32 or fp16, not {precision!r}")
    cache = GraphCache(spec.cache_dir)
    digest = weights_digest or weights_hash(export.module)
    key = onnx_cache_key(export, input_hw, batch=batch, dynamic_batch=dynamic_batch,
                         precision=precision, opset=opset, weights_digest=digest)
    suffixes = (".onnx", ".onnx.data")
    if spec.force_rebuild:
        cache.remove(key, suffixes)
    found = cache.lookup(key, ".onnx")
    if found is not None:
        info = cache.read_metadata(key)["info"]
        log.info("using cached ONNX graph %s", found)
        return ExportedGraph(found, key, export.input_name, tuple(info["output_names"]),
                             bool(info["returns_tuple"]), dynamic_batch)

    stem = key.stem()
    if precision == "fp16":
        base = export_cached(export, spec, input_hw, batch=batch, dynamic_batch=dynamic_batch,
                             precision="fp32", opset=opset, weights_digest=digest)
        with cache.temp_dir() as tmp:
            out = Path(tmp) / f"{stem}.onnx"
            convert_fp16(base.path, out)
            files = [(out, out.name)] + _data_file(out)
            path = cache.commit(key, files, {"output_names": list(base.output_names),
                                             "returns_tuple": base.returns_tuple,
                                             "derived_from": base.key.digest()})
        return ExportedGraph(path, key, export.input_name, base.output_names,
                             base.returns_tuple, dynamic_batch)

    log.info("exporting %s to ONNX for input %s (opset %d)", key.model,
             key.input_shape, opset)
    with cache.temp_dir() as tmp:
        # a private sub-directory: the exporter may drop external-data files beside the graph
        work = Path(tmp) / "export"
        work.mkdir()
        out = work / f"{stem}.onnx"
        names, returns_tuple = export_onnx(export.module,
                                           (max(1, batch), export.input_channels, *input_hw),
                                           out, opset=opset, dynamic_batch=dynamic_batch,
                                           input_name=export.input_name,
                                           output_names=export.output_names,
                                           channels=export.input_channels)
        files = [(out, out.name)] + _data_file(out)
        path = cache.commit(key, files, {"output_names": names, "returns_tuple": returns_tuple,
                                         "onnx_opset": opset, "exporter": EXPORTER})
    return ExportedGraph(path, key, export.input_name, tuple(names), returns_tuple,
                         dynamic_batch)


def _data_file(onnx_path: Path) -> List[Tuple[Path, str]]:
    data = onnx_path.with_name(onnx_path.name + ".data")
    return [(data, data.name)] if data.exists() else []


def max_abs_difference(reference, outputs) -> List[float]:
    """Largest absolute difference per output (for parity checks and the benchmark)."""
    import torch

    ref = (reference,) if isinstance(reference, torch.Tensor) else tuple(reference)
    got = (outputs,) if isinstance(outputs, torch.Tensor) else tuple(outputs)
    if len(ref) != len(got):
        raise ValueError(f"{len(ref)} reference outputs but {len(got)} outputs")
    return [float((a.float().cpu() - b.float().cpu()).abs().max()) for a, b in zip(ref, got)]


# BackendError and check_image_batch live in .base; re-exported here for older imports
__all__ = ["ExportError", "BackendError", "check_image_batch", "ExportedGraph", "export_onnx",
           "export_cached", "onnx_cache_key", "convert_fp16", "max_abs_difference",
           "DEFAULT_OPSET", "INPUT_NAME", "GraphCacheError"]


def main(argv=None) -> int:
    """``python -m ovseg_ros.backends.onnx_export CONFIG --size HxW``: export (cached) and print
    the graph's path, e.g. to hand it to ``trtexec`` or another runtime."""
    import argparse

    import torch

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("config", help="YAML config (same keys as the node / load_segmenter)")
    p.add_argument("--size", required=True, help="input H x W of the image path, e.g. 336x336 "
                   "(an engine that slides windows: the crop size, or its padded single window)")
    p.add_argument("--batch", type=int, default=None, help="example/fixed batch size "
                   "(default: the largest batch the engine sends)")
    p.add_argument("--fixed-batch", action="store_true", help="export a fixed batch dimension")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp32")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("--verify", action="store_true",
                   help="run the graph in ONNX Runtime (CPU) and print the difference to torch")
    args = p.parse_args(argv)

    from ..config import ConfigError
    from ..segmenter import load_segmenter
    from ..weights import WeightsError

    try:
        h, w = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        p.error(f"--size must be HxW, got {args.size!r}")
    if h < 1 or w < 1 or (args.batch is not None and args.batch < 1):
        p.error("--size and --batch must be positive")
    try:
        # the graph is always traced in fp32 (fp16 is derived from it): precision 'auto' or
        # 'bf16' in the config would otherwise cast the torch weights and break the trace
        seg = load_segmenter(args.config, backend="torch", precision="fp32")
    except (ConfigError, WeightsError, FileNotFoundError) as exc:
        p.exit(2, f"{p.prog}: error: {exc}\n")
    # the description and settings the engine gave its backend: the same cache entry as at
    # runtime (only the precision differs: the graph is traced in fp32)
    backend = seg.engine.backend
    export, spec = backend.export, backend.spec
    model = export.module
    batch = args.batch or spec.max_batch
    graph = export_cached(export, spec, (h, w), batch=batch,
                          dynamic_batch=not args.fixed_batch, precision=args.precision,
                          opset=args.opset)
    print(graph.path)
    if args.verify:
        import onnxruntime as ort

        x = torch.rand(batch, 3, h, w)
        with torch.no_grad():
            ref = model.to("cpu")(x)
        sess = ort.InferenceSession(str(graph.path), providers=["CPUExecutionProvider"])
        outs = [torch.from_numpy(o) for o in sess.run(None, {graph.input_name: x.numpy()})]
        print("max |onnxruntime - torch| per output:", max_abs_difference(ref, outs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
