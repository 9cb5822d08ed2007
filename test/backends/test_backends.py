"""Backends behind one call: ``get_backend(name)(ExportSpec(m, ...), BackendSpec(...))(x)``
== ``m(x)``.

ONNX Runtime (CPU provider) against torch on a real tiny timm ViT image path,
its refusals (CUDA provider missing, bf16, fp16 on CPU, bad input), and the
whole segmenter giving the same labels with ``backend: onnxruntime`` as with
torch on the tiny ProxyCLIP config.
"""
import onnxruntime as ort
import pytest
import torch

from accel_models import dense_vit, export_of
from ovseg_ros.backends.base import BackendError, BackendSpec
from ovseg_ros.backends.onnx_export import max_abs_difference
from ovseg_ros.registry import get_backend, list_backends

torch.set_num_threads(1)
PARITY_ATOL = 1e-4   # unit-norm features, fp32 (observed ~3e-7)


def _cfg(tmp_path, **kw):
    return BackendSpec(**{"cache_dir": str(tmp_path / "engines"), "threads": 1, **kw})


def test_registry_lists_the_three_backends():
    assert {"torch", "onnxruntime", "tensorrt"} <= set(list_backends())
    assert get_backend("onnxruntime").name == "onnxruntime"


def test_onnxruntime_backend_matches_torch_for_each_size_and_batch(tmp_path):
    model = dense_vit(two_outputs=True)
    backend = get_backend("onnxruntime")(export_of(model), _cfg(tmp_path))
    for shape in [(1, 3, 64, 64), (3, 3, 64, 64), (2, 3, 40, 72)]:
        x = torch.rand(*shape)
        with torch.no_grad():
            ref = model(x)
        got = backend(x)
        assert isinstance(got, tuple) and len(got) == 2
        assert [g.shape for g in got] == [r.shape for r in ref]
        assert max(max_abs_difference(ref, got)) < PARITY_ATOL
    # one graph per input size, each with a dynamic batch
    graphs = sorted(p.name for p in (tmp_path / "engines").glob("*.onnx"))
    assert len(graphs) == 2 and all("-dynx3x" in g for g in graphs)


def test_single_output_model_returns_a_tensor(tmp_path):
    model = dense_vit()
    backend = get_backend("onnxruntime")(export_of(model), _cfg(tmp_path))
    backend.prepare([(64, 64)])
    assert len(list((tmp_path / "engines").glob("*.onnx"))) == 1
    x = torch.rand(2, 3, 64, 64)
    out = backend(x)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    with torch.no_grad():
        assert max_abs_difference(model(x), out)[0] < PARITY_ATOL


def test_cuda_without_cuda_provider_is_an_error_not_a_cpu_run(tmp_path):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA provider; the refusal cannot be seen here")
    with pytest.raises(BackendError, match="CUDAExecutionProvider.*onnxruntime-gpu"):
        get_backend("onnxruntime")(export_of(dense_vit()), _cfg(tmp_path, device="cuda"))


@pytest.mark.parametrize("precision,device,match", [("bf16", "cpu", "no bf16"),
                                                    ("int8", "cpu", "no int8 path"),
                                                    ("fp16", "cpu", "fp16 only with device cuda")])
def test_unsupported_precisions_are_refused(tmp_path, precision, device, match):
    with pytest.raises(BackendError, match=match):
        get_backend("onnxruntime")(export_of(dense_vit()),
                                   _cfg(tmp_path, precision=precision, device=device))


@pytest.mark.parametrize("name", ["torch", "onnxruntime"])
def test_backends_take_an_export_spec_and_a_backend_spec(tmp_path, name):
    from ovseg_ros.config import make_config

    with pytest.raises(TypeError, match="ExportSpec"):
        get_backend(name)(dense_vit(), _cfg(tmp_path))
    with pytest.raises(TypeError, match="BackendSpec"):
        get_backend(name)(export_of(dense_vit()), make_config({}))


def test_torch_backend_casts_weights_only_where_the_engine_says_how():
    model = dense_vit()
    seen = []
    backend = get_backend("torch")(export_of(model, cast_weights=seen.append),
                                   BackendSpec(precision="bf16"))
    assert seen == [torch.bfloat16] and backend.eager
    fp32 = []
    get_backend("torch")(export_of(dense_vit(), cast_weights=fp32.append),
                         BackendSpec(precision="fp32"))
    assert fp32 == []


def test_bad_input_is_named(tmp_path):
    backend = get_backend("onnxruntime")(export_of(dense_vit()), _cfg(tmp_path))
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        backend(torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match="float32"):
        backend(torch.rand(1, 3, 64, 64, dtype=torch.float64))


# --- the whole segmenter ------------------------------------------------------------------------
def test_proxyclip_onnxruntime_gives_the_torch_labels(tiny_config, rgb_frame, tmp_path):
    from ovseg_ros import load_segmenter

    cache = tmp_path / "engines"
    ref = load_segmenter(tiny_config).predict(rgb_frame, scores=True)
    seg = load_segmenter({**tiny_config, "backend": "onnxruntime",
                          "graph_cache_dir": str(cache)})
    got = seg.predict(rgb_frame, scores=True)
    assert got.semantic.shape == ref.semantic.shape
    assert (got.semantic == ref.semantic).all()
    assert abs(got.scores - ref.scores).max() < 1e-4
    assert seg.describe()["backend"] == "onnxruntime"
    graphs = sorted(cache.glob("*.onnx"))
    assert len(graphs) == 1
    # a new vocabulary reuses the graph: nothing is exported again
    mtime = graphs[0].stat().st_mtime_ns
    seg.set_vocabulary(["grass", "road", "person", "building"])
    pred = seg.predict(rgb_frame, scores=True)
    assert pred.scores.shape[0] == 4 and pred.vocabulary_version == 2
    assert sorted(cache.glob("*.onnx")) == graphs and graphs[0].stat().st_mtime_ns == mtime


def test_fcclip_onnxruntime_gives_the_torch_labels(tmp_path, rgb_frame):
    from ovseg_ros import load_segmenter

    cfg = {"engine": "fcclip", "random_init": True, "num_threads": 1, "precision": "fp32",
           "fcclip.clip_model": "ovseg-tiny-ConvNeXt", "fcclip.short_side": 64,
           "fcclip.max_size": 96, "fcclip.num_queries": 8,
           "text_cache_dir": str(tmp_path / "text"), "graph_cache_dir": str(tmp_path / "e"),
           "vocabulary": ["person", "wall", "car", "floor"]}
    ref = load_segmenter(cfg).predict(rgb_frame, scores=True)
    got = load_segmenter({**cfg, "backend": "onnxruntime"}).predict(rgb_frame, scores=True)
    assert (got.semantic == ref.semantic).all()
    assert (got.panoptic > 0).sum() == (ref.panoptic > 0).sum()
    assert abs(got.scores - ref.scores).max() < 1e-4


# --- torch backend fast-path options -------------------------------------------------------------
def test_cuda_graphs_need_cuda(tmp_path):
    from ovseg_ros.config import ConfigError

    cfg = BackendSpec(device="cpu", cuda_graphs=True)
    with pytest.raises(ConfigError, match="cuda_graphs.*device: cuda"):
        get_backend("torch")(export_of(dense_vit()), cfg)


def test_torch_backend_cpu_fp32_stays_eager_and_exact():
    model = dense_vit()
    backend = get_backend("torch")(export_of(model), BackendSpec(precision="fp32"))
    info = backend.describe()
    # channels_last is a CUDA-only layout change; compile and graphs are opt-in
    assert info["channels_last"] is False and not info["torch_compile"] and not info["cuda_graphs"]
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(backend(x), model(x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("options", [{"cuda_graphs": True}, {"channels_last": True},
                                     {"cuda_graphs": True, "precision": "fp16"}])
def test_cuda_fast_paths_match_eager(options):
    model = dense_vit(two_outputs=True).cuda()
    eager = get_backend("torch")(export_of(model), BackendSpec(device="cuda", channels_last=False,
                                                   precision=options.get("precision", "fp32")))
    fast = get_backend("torch")(export_of(model), BackendSpec(device="cuda", **options))
    tol = 2e-2 if options.get("precision") == "fp16" else 1e-4
    for b in (1, 3, 1):   # a new shape captures a new graph; a seen one replays
        x = torch.rand(b, 3, 64, 64, device="cuda")
        ref, got = eager(x), fast(x)
        assert max(max_abs_difference(ref, got)) < tol
    if options.get("cuda_graphs"):
        assert len(fast._run.graphs) == 2
