"""The outputs table (ovseg_ros/core/outputs.py) is the one list of per-camera outputs: the
docs, the node's messages, bag inference and the per-camera output path follow it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ovseg_ros.core.camera_outputs import CameraOutputs
from ovseg_ros.core.outputs import (BY_KEY, OUTPUTS, check_keys, keys_for, markdown_table,
                                    outputs_for)
from ovseg_ros.core.products import build_products

from test_products import NAMES, _prediction, _rgb

ROOT = Path(__file__).resolve().parents[2]


def test_rows_are_unique_and_needs_known():
    assert len({o.key for o in OUTPUTS}) == len(OUTPUTS)
    assert len({o.topic for o in OUTPUTS}) == len(OUTPUTS)
    assert {o.needs for o in OUTPUTS} == {"", "camera_info", "depth", "embeddings"}
    assert all(o.msg_type.count("/msg/") == 1 for o in OUTPUTS)
    assert BY_KEY["embeddings"].topic == "segment_embeddings"
    assert BY_KEY["camera_info"].topic == "camera_info_out"


def test_outputs_for_meets_needs():
    today = ("semantic", "panoptic", "confidence", "colored", "segments", "camera_info")
    assert keys_for() == today
    assert keys_for(camera_info=False) == today[:-1]
    assert keys_for(depth=True)[len(today):] == ("points", "segments_3d", "markers")
    assert keys_for(embeddings=True)[len(today):] == ("embeddings",)
    assert len(outputs_for(depth=True, embeddings=True)) == len(OUTPUTS)


def test_unknown_keys_are_named():
    assert check_keys(["semantic"]) == {"semantic"}
    with pytest.raises(ValueError, match=r"\['labels'\]"):
        check_keys(["semantic", "labels"])


def test_docs_output_table_is_generated_from_the_table():
    assert markdown_table() in (ROOT / "docs" / "node.md").read_text(), \
        "docs/node.md is stale: run python scripts/node_param_table.py --update"
    assert all(f"| `{o.topic}` | `{o.key}` |" in markdown_table() for o in OUTPUTS)


def test_product_messages_follow_the_table():
    pytest.importorskip("rclpy")
    from std_msgs.msg import Header

    from ovseg_ros.ros.messages import product_messages

    products = build_products(_prediction(), _rgb(), NAMES, overlay_alpha=0.5,
                              random_weights=False)
    msgs = product_messages(products, Header(frame_id="cam"))
    assert list(msgs) == list(keys_for(camera_info=False))
    for key, msg in msgs.items():
        row = BY_KEY[key]
        assert type(msg).__module__.startswith(row.msg_type.split("/")[0])
        assert type(msg).__name__ == row.msg_type.split("/")[-1]
        if row.encoding:
            assert msg.encoding == row.encoding


def test_camera_outputs_remember_the_latest_frame():
    out = CameraOutputs("front", overlay_alpha=0.3)
    assert out.latest is None
    pred, rgb = _prediction(), _rgb()
    first = out.process(pred, rgb, 11, wanted={"semantic", "colored"})
    want = build_products(pred, rgb, pred.vocabulary, overlay_alpha=0.3, random_weights=False,
                          wanted={"semantic", "colored"})
    np.testing.assert_array_equal(first.colored, want.colored)
    assert first.confidence is None
    assert out.latest.stamp == 11 and out.latest.products is first
    assert out.latest.prediction is pred
    second = out.process(pred, rgb, 12)                 # every output
    assert second.confidence is not None and out.latest.stamp == 12
    out.overlay_alpha = 0.9                              # a runtime change: next frame on
    assert not np.array_equal(out.process(pred, rgb, 13).colored, first.colored)
