"""Shared pytest fixtures: the tiny randomly initialised ProxyCLIP configuration.

    def test_x(tiny_config):            # dict, text cache in a fresh tmp dir
        seg = load_segmenter(tiny_config)

    def test_y(tiny_segmenter, rgb_frame):   # a loaded Segmenter and a small RGB frame
        pred = tiny_segmenter.predict(rgb_frame)
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

TEST_DIR = Path(__file__).resolve().parent
# The tests live in one folder per package area (test/core, test/node, ...);
# their shared helpers (node_harness.py, accel_models.py) stay here, importable by name.
sys.path.insert(0, str(TEST_DIR))
TINY_CONFIG_PATH = TEST_DIR / "configs" / "tiny_proxyclip.yaml"


def pytest_configure(config):
    # Two shared cores: one torch thread per test process keeps the suite predictable.
    import torch

    torch.set_num_threads(1)
    # the tiny random-weight test models (production code registers them only on demand)
    import ovseg_ros.testing.tiny_models  # noqa: F401


@pytest.fixture
def tiny_config(tmp_path) -> dict:
    """The tiny ProxyCLIP config (test/configs/tiny_proxyclip.yaml) with a private text cache."""
    cfg = yaml.safe_load(TINY_CONFIG_PATH.read_text())
    cfg["text_cache_dir"] = str(tmp_path / "text_cache")
    return cfg


@pytest.fixture
def tiny_segmenter(tiny_config):
    from ovseg_ros import load_segmenter

    return load_segmenter(tiny_config)


@pytest.fixture
def rgb_frame() -> np.ndarray:
    """A 96 x 128 RGB frame with structure (coloured blocks plus noise), seeded."""
    rng = np.random.default_rng(0)
    img = np.zeros((96, 128, 3), np.uint8)
    img[:, :64] = (200, 40, 40)
    img[:48, 64:] = (30, 180, 60)
    img[48:, 64:] = (40, 60, 220)
    noise = rng.integers(-20, 21, img.shape)
    return np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)
