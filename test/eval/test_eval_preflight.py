"""Cheap checks before the engine: topic typos, damaged bag metadata, class files and existing
outputs fail at once with one line, and no model is built (``load_segmenter`` is never
called)."""
from pathlib import Path

import numpy as np
import pytest

import ovseg_ros
from ovseg_ros.eval import bags as B
from ovseg_ros.eval.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "test" / "configs" / "tiny_proxyclip.yaml")


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    d = tmp_path_factory.mktemp("pre")
    frames = [(10**9 + i, np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint16))
              for i in range(2)]
    B.write_image_bag(d / "in", frames)
    (d / "classes.txt").write_text("a\nb\n")
    return d


@pytest.fixture
def no_model(monkeypatch):
    """Building an engine fails the test: every error here must come before it."""
    def refuse(*a, **k):
        raise AssertionError("load_segmenter was called before the cheap checks failed")
    monkeypatch.setattr(ovseg_ros, "load_segmenter", refuse)


def _err(capsys, argv):
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


def test_topic_typo_fails_before_the_model(bag, capsys, no_model):
    base = ["--config", TINY, "--bag", str(bag / "in"), "--quiet"]
    code, err = _err(capsys, ["infer-bag", *base, "--image-topic", "/camera/imag",
                              "--out", str(bag / "o1")])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "image topic '/camera/imag' is not in the bag" in err
    assert "/camera/image [sensor_msgs/msg/Image]" in err
    code, err = _err(capsys, ["bag", *base, "--image-topic", "/camera/image", "--label-topic",
                              "/camera/label", "--classes", str(bag / "classes.txt"),
                              "--out", str(bag / "o2")])
    assert code == 2 and "label topic '/camera/label' is not in the bag" in err
    code, err = _err(capsys, ["infer-bags", "--config", TINY, "--bags", str(bag / "in"),
                              "--image-topic", "/cam", "--out-dir", str(bag / "o3")])
    assert code == 2 and "image topic '/cam' is not in the bag" in err
    # an output that exists, and a class file that does not
    (bag / "exists").mkdir(exist_ok=True)
    code, err = _err(capsys, ["infer-bag", *base, "--image-topic", "/camera/image",
                              "--out", str(bag / "exists")])
    assert code == 2 and "exists; pass --overwrite" in err
    code, err = _err(capsys, ["infer-bag", *base, "--image-topic", "/camera/image",
                              "--classes", str(bag / "nope.txt"), "--out", str(bag / "o4")])
    assert code == 2 and "nope.txt" in err
    assert not (bag / "o1").exists() and not (bag / "o2").exists()


def test_existing_state_refused_before_the_model(bag, capsys, no_model):
    out = bag / "state_out"
    out.mkdir()
    (out / "state_shard0of1.npz").write_bytes(b"x")
    code, err = _err(capsys, ["bag", "--config", TINY, "--bag", str(bag / "in"), "--image-topic",
                              "/camera/image", "--label-topic", "/camera/labels", "--classes",
                              str(bag / "classes.txt"), "--out", str(out), "--quiet"])
    assert code == 2 and "pass --resume" in err


@pytest.mark.parametrize("damage, expect", [
    (lambda t: t.replace("rosbag2_bagfile_information:\n",
                         "rosbag2_bagfile_information:\n  version: [9\n", 1),
     "metadata.yaml is not valid YAML (line"),
    (lambda t: t.replace("  version: 9", "  versio: 9"), "metadata.yaml lacks version"),
    (lambda t: "- a\n- list\n", "no 'rosbag2_bagfile_information' mapping"),
    (lambda t: "", "no 'rosbag2_bagfile_information' mapping"),
])
def test_damaged_metadata_is_one_line(bag, tmp_path, capsys, no_model, damage, expect):
    import shutil

    b = tmp_path / "broken"
    shutil.copytree(bag / "in", b)
    meta = b / "metadata.yaml"
    meta.write_text(damage(meta.read_text()))
    for argv in (["infer-bag", "--config", TINY, "--bag", str(b), "--image-topic",
                  "/camera/image", "--out", str(tmp_path / "o")],
                 ["bag", "--config", TINY, "--bag", str(b), "--image-topic", "/camera/image",
                  "--label-topic", "/camera/labels", "--classes", str(bag / "classes.txt"),
                  "--out", str(tmp_path / "e")]):
        code, err = _err(capsys, argv)
        assert code == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("ovseg-eval: error: bag "), err
        assert expect in err and "ros2 bag reindex" in err
        assert "^" not in err and "<unicode string>" not in err     # no parser dump


def test_missing_storage_file_named(bag, tmp_path, capsys, no_model):
    import shutil

    b = tmp_path / "nofile"
    shutil.copytree(bag / "in", b)
    for f in b.glob("*.db3"):
        f.unlink()
    code, err = _err(capsys, ["infer-bag", "--config", TINY, "--bag", str(b), "--image-topic",
                              "/camera/image", "--out", str(tmp_path / "o")])
    assert code == 2 and "lists storage file" in err and ".db3" in err


def test_label_encoding_and_ignore_label_checked_before_the_model(bag, capsys, no_model):
    frames = [(10**9, np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8))]
    B.write_image_bag(bag / "rgb_labels", frames, label_encoding="rgb8")
    base = ["bag", "--config", TINY, "--image-topic", "/camera/image", "--label-topic",
            "/camera/labels", "--classes", str(bag / "classes.txt"), "--quiet"]
    code, err = _err(capsys, [*base, "--bag", str(bag / "rgb_labels"), "--out", str(bag / "r")])
    assert code == 2 and "encoding 'rgb8' is not a class-id image" in err
    code, err = _err(capsys, [*base, "--bag", str(bag / "in"), "--out", str(bag / "r"),
                              "--ignore-label", "x"])
    assert code == 2 and "--ignore-label must be an integer or 'none'" in err
