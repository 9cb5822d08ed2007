"""ovseg-bench --node: frames through the real node process over DDS, and the report."""
import json
import random

import pytest

from ovseg_ros.tools import bench
from ovseg_ros.tools.bench import node_e2e as bench_node_e2e


def test_flags_kind_names_what_the_cpu_can_do():
    assert bench_node_e2e.flags_kind(["avx2", "avx512_bf16", "avx512_vnni"]) == "native bf16"
    assert bench_node_e2e.flags_kind(["avx2", "amx_bf16"]) == "native bf16"
    assert bench_node_e2e.flags_kind(["avx2", "avx512_vnni"]) == "VNNI-only"
    assert bench_node_e2e.flags_kind(["avx2"]) == "AVX2-only"
    assert bench_node_e2e.flags_kind([]) == "no AVX2"


def test_stamp_is_read_from_the_serialised_header():
    pytest.importorskip("rclpy")
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image

    msg = Image(encoding="mono16", height=1, width=1, step=2, data=b"\x01\x02")
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1765100000, 123456789
    assert bench_node_e2e.stamp_of(serialize_message(msg)) == 1765100000_123456789


def test_node_bench_runs_the_node_and_reports_each_subscription_set(tmp_path, monkeypatch):
    """A tiny preset through the node: both subscription sets answered, the machine line,
    and the model-only table beside it. No timing assertions."""
    pytest.importorskip("ovseg_ros.msg")
    # a domain of its own, and the DDS settings the bench selects undone afterwards
    monkeypatch.setenv("ROS_DOMAIN_ID", str(random.randint(101, 200)))
    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)
    monkeypatch.delenv("FASTDDS_BUILTIN_TRANSPORTS", raising=False)
    out = tmp_path / "node"
    rc = bench.main(["--node", "--preset", "proxyclip-tiny", "--sizes", "64x48",
                     "--precisions", "fp32", "--threads", "1", "--rate", "10", "--seconds", "1",
                     "--node-warmup", "1", "--start-timeout", "120", "--iters", "2",
                     "--no-photos", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    report = json.loads((out / "node_e2e.json").read_text())
    assert rc == 0, report["node"]
    m = report["machine"]
    assert m["cpu"] and m["cpu_flags_kind"] in ("native bf16", "VNNI-only", "AVX2-only",
                                                 "no AVX2")
    assert report["threads"] == 1 and set(report["ceilings_gflops"]) == {"fp32", "bf16"}
    assert len(report["loadavg"]) == 2 and "fastdds_camera.xml" in report["dds"]
    (case,) = report["node"]
    assert case["preset"] == "proxyclip-tiny" and case["random_weights"] is True
    # the start: spawn to active, of which configure's warm-up at the size sent
    assert case["start_s"] > 0 and case["warmup_size"] == "64x48"
    assert case["warmup_s"] >= 0 and case["warmup_compiled"] is False
    windows = {w["subscription_set"]: w for w in case["windows"]}
    assert windows["labels+segments"]["subscribed"] == ["semantic", "segments"]
    assert set(windows["all 2D"]["subscribed"]) == {"semantic", "panoptic", "confidence",
                                                     "colored", "segments"}
    for w in windows.values():
        assert w["sent"] >= w["answered"] >= 1 and w["dropped"] == w["sent"] - w["answered"]
        assert w["fps"] > 0 and w["latency_ms_p95"] >= w["latency_ms_p50"] > 0
        # every subscribed output came back for the frames of the window
        assert all(n >= 1 for n in w["answers_per_output"].values()), w
        assert w["node_inference_ms"] is not None
        # the node's per-frame stages besides the model, from its diagnostics
        assert set(w["node_stages_ms"]) == {"wait", "decode", "outputs", "publish"}, w
        assert all(v >= 0 for v in w["node_stages_ms"].values())
    (model,) = report["model"]
    assert model["precision"] == "fp32" and model["stage_precision"]
    md = (out / "node_e2e.md").read_text()
    assert m["cpu_flags_kind"] in md and "| proxyclip-tiny | fp32 | 64x48 | random |" in md
    assert "labels+segments (semantic, segments)" in md and "### Model only" in md
    assert "Start of proxyclip-tiny fp32 64x48: process spawn → active" in md


def test_node_bench_refuses_an_unknown_precision(tmp_path):
    with pytest.raises(SystemExit, match="fp32, bf16, int8, auto"):
        bench.main(["--node", "--precisions", "fp16", "--out", str(tmp_path)])
