"""configure's warm-up prediction (ovseg_ros/core/warmup.py) and where torch.compile's cache
goes (segmenter.apply_process_settings), on the tiny ProxyCLIP without compiling (the node
test test/node/test_node_warmup.py compiles)."""
from __future__ import annotations

import os

import numpy as np

from ovseg_ros import make_config
from ovseg_ros.backends.graph_cache import INDUCTOR_CACHE_ENV, inductor_cache_dir
from ovseg_ros.core.warmup import uses_torch_compile, warm_up, warmup_frame
from ovseg_ros.segmenter import apply_process_settings


def test_the_warm_up_predicts_once_per_batch_size_at_the_size_asked(tiny_segmenter, monkeypatch):
    seen = []
    predict, predict_batch = tiny_segmenter.predict, tiny_segmenter.predict_batch
    monkeypatch.setattr(tiny_segmenter, "predict",
                        lambda rgb: seen.append((1, rgb.shape)) or predict(rgb))
    monkeypatch.setattr(tiny_segmenter, "predict_batch",
                        lambda rgbs: seen.append((len(rgbs), rgbs[0].shape)) or predict_batch(rgbs))
    report = warm_up(tiny_segmenter, (200, 150), batch=3)
    assert seen == [(1, (150, 200, 3)), (3, (150, 200, 3))]
    assert report.size == (200, 150) and report.batches == (1, 3)
    assert report.compiled is False and report.seconds > 0
    # the default vocabulary was encoded on the way (fresh text cache) and is counted apart
    assert report.text_encode_s > 0
    assert "warm-up at 200x150, batches [1, 3]: first prediction" in report.describe()
    assert warm_up(tiny_segmenter, (64, 48)).batches == (1,)


def test_the_warm_up_frame_is_a_deterministic_rgb_image():
    a, b = warmup_frame(64, 48), warmup_frame(64, 48)
    assert a.shape == (48, 64, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert a.std() > 10          # not a flat frame


def test_compile_is_read_from_the_backends_description(tiny_segmenter):
    assert uses_torch_compile(tiny_segmenter.describe()) is False
    assert uses_torch_compile({"backends": {"image": {"torch_compile": True}}}) is True
    assert uses_torch_compile({}) is False


def test_torch_compile_puts_inductors_cache_under_the_graph_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(INDUCTOR_CACHE_ENV, "/tmp/somewhere_else")   # restored after the test
    apply_process_settings(make_config(graph_cache_dir=str(tmp_path / "graphs")))
    assert os.environ[INDUCTOR_CACHE_ENV] == "/tmp/somewhere_else"  # no compile: untouched
    apply_process_settings(make_config(graph_cache_dir=str(tmp_path / "graphs"),
                                       torch_compile=True))
    assert os.environ[INDUCTOR_CACHE_ENV] == str(tmp_path / "graphs" / "inductor")
    assert inductor_cache_dir("~/x") == inductor_cache_dir(os.path.expanduser("~/x"))
