"""ovseg-bench: a real (tiny) run writes complete JSON and markdown; refusals are reported."""
import json

import numpy as np
import pytest

from ovseg_ros.tools import bench


def test_tiny_run_writes_machine_settings_and_figures(tmp_path):
    out = tmp_path / "bench"
    rc = bench.main(["--preset", "proxyclip-tiny", "--backends", "torch,onnxruntime",
                     "--precisions", "fp32,bf16", "--sizes", "96x64", "--iters", "2",
                     "--threads", "1", "--cache-dir", str(tmp_path / "cache"),
                     "--out", str(out)])
    assert rc == 0
    report = json.loads((out / "bench.json").read_text())
    assert report["machine"]["cpu"] and report["settings"]["threads"] == 1
    assert report["ceilings_gflops"]["fp32"] > 0 and report["ceilings_gflops"]["bf16"] > 0
    rows = {(r["backend"], r["precision"]): r for r in report["results"]}
    assert set(rows) == {("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32"),
                         ("onnxruntime", "bf16")}
    ok = rows[("torch", "fp32")]
    assert ok["random_weights"] is True and ok["iterations"] == 2
    assert ok["fps"] > 0 and ok["latency_ms_p95"] >= ok["latency_ms_p50"] > 0
    assert ok["peak_memory_mib"] > 0 and ok["flops_per_frame"] > 0
    assert "image_model" in ok["stages_ms"] and ok["achieved_gflops"] > 0
    assert rows[("onnxruntime", "fp32")]["labels_equal_fp32_pct"] == 100.0
    assert "no bf16 path" in rows[("onnxruntime", "bf16")]["error"]
    md = (out / "bench.md").read_text()
    assert report["machine"]["cpu"] in md
    assert "| proxyclip-tiny | onnxruntime | fp32 | 96x64 |" in md
    assert "random" in md and "Not run" in md


def test_sizes_are_validated():
    assert bench.parse_size("640x480") == (640, 480)
    with pytest.raises(SystemExit, match="WIDTHxHEIGHT"):
        bench.parse_size("640*480")


def test_synthetic_frame_is_deterministic_rgb():
    a, b = bench.synthetic_frame(64, 48), bench.synthetic_frame(64, 48)
    assert a.shape == (48, 64, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert len(np.unique(a.reshape(-1, 3), axis=0)) > 10



@pytest.mark.parametrize("argv, msg", [
    (["--backends", "tourch"], "unknown backend 'tourch'"),
    (["--precisions", "fp64"], "unknown precision 'fp64'"),
    (["--device", "nonsense"], "--device 'nonsense'"),
])
def test_bad_lists_fail_before_any_case(tmp_path, capsys, argv, msg):
    """Regression: --precisions fp64 and a CUDA --device without a GPU ended in tracebacks, and
    --backends tourch ran every case into 'not run' instead of naming the typo."""
    with pytest.raises(SystemExit) as ex:
        bench.main([*argv, "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert ex.value.code == 2 and msg in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_gpu_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit) as ex:
        bench.main(["--device", "cuda", "--out", str(tmp_path / "b")])
    assert ex.value.code == 2 and "CUDA is not available" in capsys.readouterr().err


def test_vocabulary_axis_reports_encoding_reload_post_and_memory(tmp_path):
    out = tmp_path / "bench"
    rc = bench.main(["--preset", "proxyclip-tiny", "--backends", "torch", "--precisions", "fp32",
                     "--sizes", "64x48", "--iters", "1", "--threads", "1", "--no-flops",
                     "--vocab-sizes", "3,10", "--set", "prompt_templates=custom",
                     "--set", "custom_templates=['a photo of a {}.', '{}']",
                     "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    assert rc == 0
    rows = json.loads((out / "bench.json").read_text())["results"]
    assert [r["num_classes"] for r in rows] == [3, 10]
    assert rows[0]["num_synonyms"] >= 3 and rows[0]["num_templates"] == 2
    for r in rows:       # a fresh text cache per case: every synonym encoded, then reloaded
        assert r["text_prompts"] == 2 * r["num_synonyms"]
        assert r["text_reload_disk_hits"] == r["num_synonyms"]
        assert r["text_encoder_mode"] == "shared_prefix"     # the engine's real path
        assert r["text_encode_s"] > 0 and r["text_reload_s"] > 0 and "post" in r["stages_ms"]
        # the same frames without the confidence, as the node runs them when nothing uses it
        lo = r["labels_only"]
        assert lo["latency_ms_p50"] > 0 and "post" in lo["stages_ms"]
        assert "label_candidates" in lo["counts"] or "label_full_argmax" in lo["counts"]
    md = (out / "bench.md").read_text()
    assert "labels only: × smallest, model time held" in md
    assert "## Vocabulary size" in md and "| proxyclip-tiny | torch | fp32 | 64x48 | 10 |" in md
    assert bench.vocabulary_of_size(150)[0] == "wall" and len(bench.vocabulary_of_size(847)) == 847
    with pytest.raises(SystemExit, match="1..847"):
        bench.vocabulary_of_size(900)


def test_node_overhead_times_each_stage_with_a_listener(tmp_path):
    """The node's own per-frame work (no model), published to a listener process: every
    output subscribed, then only the label image and segments (the others not built)."""
    pytest.importorskip("ovseg_ros.msg")
    out = tmp_path / "bench"
    assert bench.main(["--node-overhead", "--sizes", "64x48,96x64", "--iters", "3",
                       "--node-classes", "12", "--out", str(out)]) == 0
    report = json.loads((out / "node_overhead.json").read_text())
    rows = report["rows"]
    every = "colored,confidence,panoptic,segments,semantic"
    assert [(r["size"], r["subscribed"]) for r in rows] == [
        ("64x48", every), ("96x64", every), ("64x48", "segments,semantic"),
        ("96x64", "segments,semantic")]
    for r in rows:
        stages = [r[k] for k in ("decode_ms", "products_ms", "messages_ms", "publish_ms")]
        assert all(v > 0 for v in stages) and r["segments"] >= 1
        assert r["total_ms"] >= max(stages)
    assert report["machine"]["cpu"] and "--node-overhead" in report["command"]
    md = (out / "node_overhead.md").read_text()
    assert f"| 64x48 | {every} | bgr8 | 12 |" in md and "listener process" in md
    # the 3D case: what a camera with depth adds, at cloud_stride 1 and 2
    rows_3d = report["rows_3d"]
    assert [(r["size"], r["stride"]) for r in rows_3d] == [
        ("64x48", 1), ("64x48", 2), ("96x64", 1), ("96x64", 2)]
    for r in rows_3d:
        stages = [r[k] for k in ("depth_ms", "3d_ms", "messages_ms", "publish_ms")]
        assert all(v > 0 for v in stages) and r["segments"] >= 1
        assert r["total_ms"] >= max(stages)
        w, h = (int(v) for v in r["size"].split("x"))
        assert r["cloud_bytes"] == 32 * -(-w // r["stride"]) * -(-h // r["stride"])
        assert r["points_serialise_ms"] > 0 and r["points_memcpy_ms"] > 0 < r["total_cpu_ms"]
    assert set(report["ceilings_gflops"]) == {"fp32", "bf16"} and len(report["loadavg"]) == 2
    assert "### 3D outputs beyond the 2D ones" in md and "| 64x48 | 2 |" in md


def test_shapes_mode_reports_worst_shape_next_to_the_baseline(tmp_path):
    out = tmp_path / "s"
    assert bench.main(["--shapes", "--preset", "proxyclip-tiny", "--sizes", "64x48,1000x3,1x1",
                       "--iters", "1", "--threads", "1", "--out", str(out)]) == 0
    report = json.loads((out / "shapes.json").read_text())
    assert report["machine"]["cpu"] and report["precision"] == "fp32"
    assert set(report["matmul_ceiling_gflops"]) == {"fp32", "bf16"}
    (res,) = report["results"]
    rows = {r["shape"]: r for r in res["rows"]}
    assert list(rows) == ["64x48", "1000x3", "1x1"]
    # 1000 wide, 3 high: 112 x 37333 (666 windows) before the cap, 8 after, and noted
    assert rows["1000x3"]["windows"] == 8 and rows["1000x3"]["model_pixels"] > 0
    assert rows["1000x3"]["notes"][0].startswith("clamped by proxyclip.max_windows=8:")
    assert rows["64x48"]["notes"] == [] and rows["1x1"]["windows"] == 1
    assert res["worst"]["shape"] in ("1000x3", "1x1")
    md = (out / "shapes.md").read_text()
    assert "**worst:" in md and "clamped by proxyclip.max_windows=8" in md
