"""TensorRT backend: cache keys, cache-file validation, and (where TensorRT and CUDA
exist) a real engine build with output parity against torch.

TensorRT cannot be installed on the project's CI machines, so the build/run tests
skip there with a reason; the graph cache (keys, sidecar metadata, corrupt /
truncated / mismatched files) is the same code for ONNX graphs and engines and is
exercised here with real files.
"""
import json

import pytest
import torch

from accel_models import dense_vit, export_of
from ovseg_ros.backends.base import BackendError, BackendSpec
from ovseg_ros.backends.graph_cache import (CacheKey, GraphCache, GraphCacheError,
                                             file_sha256)
from ovseg_ros.backends.onnx_export import export_cached, max_abs_difference
from ovseg_ros.backends.tensorrt_backend import (ENGINE_SUFFIX, tensorrt_cache_key,
                                                 timing_cache_path)
from ovseg_ros.registry import get_backend

torch.set_num_threads(1)

try:
    import tensorrt  # noqa: F401
    HAVE_TRT = True
except ImportError:
    HAVE_TRT = False
HAVE_CUDA = torch.cuda.is_available()


def _onnx_key(tmp_path, seed=0, hw=(64, 64)):
    spec = BackendSpec(cache_dir=str(tmp_path / "engines"))
    return export_cached(export_of(dense_vit(seed)), spec, hw, batch=4).key


def _trt_key(onnx_key, **kw):
    args = dict(max_batch=4, precision="fp16", gpu_name="NVIDIA H100 80GB HBM3",
                compute_capability=(9, 0), trt_version="10.13.0.35")
    args.update(kw)
    return tensorrt_cache_key(onnx_key, **args)


def _commit_engine(cache, key, payload=b"serialized-engine-bytes" * 64):
    with cache.temp_dir() as tmp:
        from pathlib import Path
        built = Path(tmp) / (key.stem() + ENGINE_SUFFIX)
        built.write_bytes(payload)
        return cache.commit(key, [(built, built.name)], {"onnx": "x.onnx"})


def test_engine_key_covers_gpu_tensorrt_precision_profile_and_weights(tmp_path):
    k = _trt_key(_onnx_key(tmp_path))
    assert k.kind == "tensorrt" and k.input_shape == (-1, 3, 64, 64)
    assert k.extra["gpu_name"] == "NVIDIA H100 80GB HBM3" and k.extra["tensorrt"] == "10.13.0.35"
    variants = [k,
                _trt_key(_onnx_key(tmp_path), gpu_name="Orin"),
                _trt_key(_onnx_key(tmp_path), trt_version="8.6.2"),
                _trt_key(_onnx_key(tmp_path), precision="fp32"),
                _trt_key(_onnx_key(tmp_path), max_batch=8),
                _trt_key(_onnx_key(tmp_path), compute_capability=(8, 7)),
                _trt_key(_onnx_key(tmp_path, seed=1)),
                _trt_key(_onnx_key(tmp_path, hw=(64, 96)))]
    assert len({v.stem() for v in variants}) == len(variants)
    # stems are readable: model, shape, precision, then the digest
    assert k.stem().startswith("dense-vit-dynx3x64x64-fp16-")
    # same inputs, same key (a rebuild is never triggered by chance)
    assert _trt_key(_onnx_key(tmp_path)).digest() == k.digest()


def test_timing_cache_is_per_gpu_and_version(tmp_path):
    a = timing_cache_path(tmp_path, "NVIDIA GeForce RTX 4090", "10.1.0")
    b = timing_cache_path(tmp_path, "Orin (nvgpu)", "10.1.0")
    assert a != b and a.parent == tmp_path and " " not in a.name and "(" not in b.name


def test_valid_engine_file_is_found_and_checked(tmp_path):
    cache = GraphCache(tmp_path)
    key = _trt_key(_onnx_key(tmp_path))
    assert cache.lookup(key, ENGINE_SUFFIX) is None   # nothing built yet
    path = _commit_engine(cache, key)
    assert cache.lookup(key, ENGINE_SUFFIX) == path
    meta = json.loads(cache.metadata_path(key).read_text())
    assert meta["key"]["extra"]["gpu_name"] == "NVIDIA H100 80GB HBM3"
    assert meta["files"][path.name]["sha256"] == file_sha256(path)


def test_corrupt_engine_file_is_an_error(tmp_path):
    cache = GraphCache(tmp_path)
    key = _trt_key(_onnx_key(tmp_path))
    path = _commit_engine(cache, key)
    data = bytearray(path.read_bytes())
    data[10] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(GraphCacheError, match="SHA-256.*force_rebuild: true"):
        cache.lookup(key, ENGINE_SUFFIX)


def test_truncated_engine_file_is_an_error(tmp_path):
    cache = GraphCache(tmp_path)
    key = _trt_key(_onnx_key(tmp_path))
    path = _commit_engine(cache, key)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(GraphCacheError, match="has 100 bytes.*truncated"):
        cache.lookup(key, ENGINE_SUFFIX)


def test_engine_built_for_another_gpu_is_reported_with_the_difference(tmp_path):
    cache = GraphCache(tmp_path)
    onnx_key = _onnx_key(tmp_path)
    built = _trt_key(onnx_key, gpu_name="Orin")
    wanted = _trt_key(onnx_key)
    path = _commit_engine(cache, built)
    # a user copies the engine (and its sidecar) to the name the new GPU looks for
    path.rename(cache.artifact_path(wanted, ENGINE_SUFFIX))
    sidecar = json.loads(cache.metadata_path(built).read_text())
    sidecar["files"] = {cache.artifact_path(wanted, ENGINE_SUFFIX).name:
                        next(iter(sidecar["files"].values()))}
    cache.metadata_path(wanted).write_text(json.dumps(sidecar))
    with pytest.raises(GraphCacheError, match="another setting.*gpu_name: cached 'Orin'"):
        cache.lookup(wanted, ENGINE_SUFFIX)


@pytest.mark.parametrize("damage", ["missing_sidecar", "bad_json", "missing_engine", "old_format"])
def test_damaged_sidecars_are_errors(tmp_path, damage):
    cache = GraphCache(tmp_path)
    key = _trt_key(_onnx_key(tmp_path))
    path = _commit_engine(cache, key)
    meta = cache.metadata_path(key)
    if damage == "missing_sidecar":
        meta.unlink()
        match = "no metadata"
    elif damage == "bad_json":
        meta.write_text("{not json")
        match = "not valid JSON"
    elif damage == "missing_engine":
        path.unlink()
        match = "is missing"
    else:
        data = json.loads(meta.read_text())
        data["metadata_version"] = 0
        meta.write_text(json.dumps(data))
        match = "has version 0"
    with pytest.raises(GraphCacheError, match=match):
        cache.lookup(key, ENGINE_SUFFIX)


def test_remove_clears_engine_and_sidecar(tmp_path):
    cache = GraphCache(tmp_path)
    key = _trt_key(_onnx_key(tmp_path))
    _commit_engine(cache, key)
    cache.remove(key, (ENGINE_SUFFIX,))
    assert cache.lookup(key, ENGINE_SUFFIX) is None


def test_cache_key_is_plain_json(tmp_path):
    k = CacheKey("tensorrt", "m", "abc", (-1, 3, 8, 8), "fp16", {"proxyclip.beta": 1.2},
                 {"gpu_name": "g"})
    assert json.loads(json.dumps(k.as_dict()))["input_shape"] == [-1, 3, 8, 8]


@pytest.mark.skipif(HAVE_TRT, reason="tensorrt is installed: the missing-package error "
                                     "cannot be seen here")
def test_backend_without_tensorrt_says_how_to_get_it(tmp_path):
    spec = BackendSpec(device="cuda", cache_dir=str(tmp_path))
    with pytest.raises(BackendError, match="needs NVIDIA TensorRT.*pip install tensorrt"):
        get_backend("tensorrt")(export_of(dense_vit()), spec)


@pytest.mark.skipif(not HAVE_TRT, reason="tensorrt Python package not installed")
def test_backend_refuses_cpu_device(tmp_path):
    spec = BackendSpec(device="cpu", cache_dir=str(tmp_path))
    with pytest.raises(BackendError, match="CUDA device"):
        get_backend("tensorrt")(export_of(dense_vit()), spec)


@pytest.mark.skipif(not (HAVE_TRT and HAVE_CUDA), reason="needs tensorrt and a CUDA GPU")
@pytest.mark.parametrize("precision,atol", [("fp32", 2e-3), ("fp16", 3e-2)])
def test_tensorrt_engine_matches_torch_and_is_cached(tmp_path, precision, atol):
    # fp32 engines may use TF32 matmuls (TensorRT's default), hence 2e-3 on unit vectors
    model = dense_vit(two_outputs=True).cuda()
    spec = BackendSpec(device="cuda", precision=precision, cache_dir=str(tmp_path), max_batch=4)
    backend = get_backend("tensorrt")(export_of(model), spec)
    for b in (1, 4, 6):   # 6 > profile max: run in slices
        x = torch.rand(b, 3, 64, 64, device="cuda")
        with torch.no_grad():
            ref = model(x)
        got = backend(x)
        torch.cuda.synchronize()
        assert max(max_abs_difference(ref, got)) < atol
    engines = list(tmp_path.glob("*.engine"))
    assert len(engines) == 1 and engines[0].with_suffix(".json").exists()
    assert list(tmp_path.glob("timing-*.cache"))
    mtime = engines[0].stat().st_mtime_ns
    again = get_backend("tensorrt")(export_of(model), spec)
    again(torch.rand(1, 3, 64, 64, device="cuda"))
    assert engines[0].stat().st_mtime_ns == mtime   # loaded, not rebuilt
