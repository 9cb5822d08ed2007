"""The several-cameras benchmark section (``camera_scaling`` in ovseg_ros/tools/bench/cameras.py)
in its smallest mode: one tiny model over 1 and 2 cameras; batched labels equal
one-at-a-time labels."""
from __future__ import annotations

import pytest

pytest.importorskip("torch")


def test_camera_scaling_tiny(tmp_path):
    from ovseg_ros.presets import TINY_PROXYCLIP
    from ovseg_ros.tools.bench.cameras import camera_scaling, markdown_section

    res = camera_scaling(dict(TINY_PROXYCLIP, num_threads=1, precision="fp32",
                              text_cache_dir=str(tmp_path / "text")),
                         cameras=[1, 2], size=(96, 72), iters=1, warmup=1)
    assert res["random_weights"] and res["size"] == "96x72"
    one, two = res["rows"]
    assert (one["cameras"], two["cameras"]) == (1, 2)
    for r in (one, two):
        assert r["labels_equal"] == 1.0          # the predict_batch contract
        assert r["batch_ms"] > 0 and r["fps_batched"] > 0 and r["fps_separate"] > 0
    assert two["model_mib_separate"] == pytest.approx(2 * two["model_mib_one"])
    assert two["model_mib_one"] > 0
    md = markdown_section([dict(res, preset="proxyclip-tiny")])
    assert md.count("| proxyclip-tiny |") == 2
    with pytest.raises(ValueError, match="positive"):
        camera_scaling(dict(TINY_PROXYCLIP), cameras=[0], size=(8, 8))
