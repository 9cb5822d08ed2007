"""ONNX export of an image path: graph validity, ONNX Runtime parity, the export cache.

The image model here is a real timm ViT (the tiny DINO-like test model, random
weights) wrapped like an engine's image path: RGB in [0,1] -> normalised inside ->
dense L2-normalised patch features. Parity tolerance: 1e-4 absolute on unit-norm
features (observed ~3e-7; fp32 reorderings in ORT's fused kernels stay far below).
"""
import dataclasses
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from accel_models import dense_vit, export_of

from ovseg_ros.backends.base import BackendSpec
from ovseg_ros.backends.graph_cache import GraphCacheError
from ovseg_ros.backends.onnx_export import (DEFAULT_OPSET, export_cached, export_onnx,
                                           max_abs_difference)

torch.set_num_threads(1)
PARITY_ATOL = 1e-4


def _model(seed=0, **kw):
    return dense_vit(seed, **kw)


def _ort_run(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [torch.from_numpy(o) for o in sess.run(None, {"image": x.numpy()})]


def test_fixed_shape_export_checks_and_matches_torch(tmp_path):
    m = _model()
    path = tmp_path / "fixed.onnx"
    names, returns_tuple = export_onnx(m, (2, 3, 64, 64), path, dynamic_batch=False)
    assert names == ["out0"] and returns_tuple is False
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == DEFAULT_OPSET
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, 3, 64, 64]
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref = m(x)
    (got,) = _ort_run(path, x)
    assert got.shape == ref.shape == (2, 48, 8, 8)
    assert max_abs_difference(ref, got)[0] < PARITY_ATOL
    # a fixed-shape graph refuses another batch size
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        _ort_run(path, torch.rand(3, 3, 64, 64))


def test_dynamic_batch_export_runs_every_batch_size(tmp_path):
    m = _model(two_outputs=True)
    path = tmp_path / "dyn.onnx"
    names, returns_tuple = export_onnx(m, (2, 3, 48, 80), path, dynamic_batch=True)
    assert names == ["out0", "out1"] and returns_tuple is True
    model = onnx.load(str(path))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    for b in (1, 3, 5):
        x = torch.rand(b, 3, 48, 80)   # non-square: rows and columns must not swap
        with torch.no_grad():
            ref = m(x)
        got = _ort_run(path, x)
        assert got[0].shape == (b, 48, 6, 10)
        assert max(max_abs_difference(ref, got)) < PARITY_ATOL


def test_export_cache_reuses_rebuilds_and_keys(tmp_path):
    cfg = BackendSpec(cache_dir=str(tmp_path))
    m = export_of(_model(), graph_settings={"proxyclip.beta": 1.2})
    g1 = export_cached(m, cfg, (64, 64), batch=2)
    stat1 = os.stat(g1.path).st_mtime_ns
    meta = g1.path.with_suffix(".json")
    assert meta.exists()
    assert g1.key.extra["opset"] == DEFAULT_OPSET and g1.key.input_shape == (-1, 3, 64, 64)

    g2 = export_cached(m, cfg, (64, 64), batch=2)       # cache hit: same file untouched
    assert g2.path == g1.path and os.stat(g2.path).st_mtime_ns == stat1

    g3 = export_cached(m, dataclasses.replace(cfg, force_rebuild=True), (64, 64), batch=2)
    assert g3.path == g1.path and os.stat(g3.path).st_mtime_ns != stat1

    # anything in the key changes the file: weights, shape, fixed batch, opset, graph settings,
    # model id
    paths = {g1.path,
             export_cached(dataclasses.replace(m, module=_model(seed=1)), cfg, (64, 64),
                           batch=2).path,
             export_cached(m, cfg, (64, 72), batch=2).path,
             export_cached(m, cfg, (64, 64), batch=2, dynamic_batch=False).path,
             export_cached(m, cfg, (64, 64), batch=2, opset=18).path,
             export_cached(dataclasses.replace(m, graph_settings={"proxyclip.beta": 1.0}), cfg,
                           (64, 64), batch=2).path,
             export_cached(dataclasses.replace(m, model_id="other"), cfg, (64, 64),
                           batch=2).path}
    assert len(paths) == 7
    # run settings that do not shape the graph (threads, the device of eager runs): no new export
    assert export_cached(m, dataclasses.replace(cfg, threads=3), (64, 64),
                         batch=2).path == g1.path


def test_engine_graph_settings_leave_runtime_keys_out():
    """What an engine bakes into its cache key: its non-runtime group keys only, so a
    runtime threshold never causes a new export."""
    from ovseg_ros.config import make_config
    from ovseg_ros.engines.base import graph_settings

    cfg = make_config({})
    gs = graph_settings(cfg, "proxyclip")
    assert gs["proxyclip.beta"] == 1.2 and "proxyclip.min_thing_area" not in gs
    assert all(k.startswith("proxyclip.") for k in gs)
    assert graph_settings(cfg.replace(prob_thd=0.5, proxyclip__min_thing_area=5),
                          "proxyclip") == gs
    assert graph_settings(cfg.replace(proxyclip__beta=1.0), "proxyclip") != gs


def test_damaged_export_is_reported_then_rebuilt_on_request(tmp_path):
    cfg = BackendSpec(cache_dir=str(tmp_path))
    m = export_of(_model())
    g = export_cached(m, cfg, (64, 64))
    data = bytearray(g.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    g.path.write_bytes(bytes(data))
    with pytest.raises(GraphCacheError, match="SHA-256.*force_rebuild"):
        export_cached(m, cfg, (64, 64))
    g2 = export_cached(m, dataclasses.replace(cfg, force_rebuild=True), (64, 64))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert max_abs_difference(m.module(x), _ort_run(g2.path, x)[0])[0] < PARITY_ATOL


def test_fp16_graph_keeps_float32_io(tmp_path):
    cfg = BackendSpec(cache_dir=str(tmp_path))
    g = export_cached(export_of(_model()), cfg, (64, 64), precision="fp16")
    model = onnx.load(str(g.path))
    onnx.checker.check_model(model, full_check=True)
    f32 = onnx.TensorProto.FLOAT
    assert model.graph.input[0].type.tensor_type.elem_type == f32
    assert model.graph.output[0].type.tensor_type.elem_type == f32
    # the weights themselves are half precision
    kinds = {init.data_type for init in model.graph.initializer if len(init.dims) >= 2}
    assert onnx.TensorProto.FLOAT16 in kinds and f32 not in kinds
    assert g.key.precision == "fp16"


def test_export_error_names_the_problem(tmp_path):
    class NotATensor(torch.nn.Module):
        def forward(self, x):
            return {"a": x}

    from ovseg_ros.backends.onnx_export import ExportError
    with pytest.raises(ExportError, match="tensor or a tuple"):
        export_onnx(NotATensor(), (1, 3, 8, 8), tmp_path / "x.onnx")
    with pytest.raises(ExportError, match="3-channel"):
        export_onnx(_model(), (1, 4, 64, 64), tmp_path / "y.onnx")


def test_outputs_are_deterministic_numpy_float32(tmp_path):
    path = tmp_path / "d.onnx"
    export_onnx(_model(), (1, 3, 64, 64), path)
    x = torch.rand(1, 3, 64, 64)
    a, = _ort_run(path, x)
    b, = _ort_run(path, x)
    assert a.dtype == torch.float32 and np.array_equal(a.numpy(), b.numpy())


def test_cli_exports_fp32_whatever_the_config_precision(tmp_path, capsys):
    """Regressions: `python -m ovseg_ros.backends.onnx_export` traced the model in the config's
    precision (a bf16 / auto->bf16 config failed with 'Input type (float) and bias type
    (c10::BFloat16)'), and config / weights errors ended in a traceback."""
    import yaml

    from ovseg_ros.backends.onnx_export import main

    cfg = yaml.safe_load(open(os.path.join(os.path.dirname(__file__), os.pardir, "configs",
                                           "tiny_proxyclip.yaml")))
    cfg.update(precision="bf16", graph_cache_dir=str(tmp_path / "cache"),
               text_cache_dir=str(tmp_path / "text"))
    (tmp_path / "bf16.yaml").write_text(yaml.safe_dump(cfg))
    assert main([str(tmp_path / "bf16.yaml"), "--size", "112x112", "--batch", "1"]) == 0
    path = capsys.readouterr().out.strip().splitlines()[-1]
    assert path.endswith(".onnx") and "fp32" in os.path.basename(path)
    onnx.checker.check_model(path)
    for argv, msg in (([str(tmp_path / "missing.yaml"), "--size", "112x112"],
                       "cannot read config file"),
                      ([str(tmp_path / "bf16.yaml"), "--size", "0x112"], "must be positive")):
        with pytest.raises(SystemExit) as ex:
            main(argv)
        err = capsys.readouterr().err
        assert ex.value.code == 2 and msg in err and "Traceback" not in err
