"""ovseg-segment with the tiny ProxyCLIP: images, folders and a video -> label PNGs, overlays,
COCO panoptic PNG + JSON; clear errors for unreadable inputs."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from ovseg_ros.eval.datasets import rgb_to_panoptic_id
from ovseg_ros.tools.segment import main

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "test" / "configs" / "tiny_proxyclip.yaml")


def _scene(i=0):
    img = np.zeros((40, 56, 3), np.uint8)
    img[:, : 20 + 3 * i] = (200, 40, 40)
    img[:20, 20 + 3 * i:] = (30, 180, 60)
    img[20:, 20 + 3 * i:] = (40, 60, 220)
    return img


def _write_video(path: Path, frames):
    for fourcc, suffix in (("mp4v", ".mp4"), ("MJPG", ".avi")):
        p = path.with_suffix(suffix)
        w = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*fourcc), 5, (56, 40))
        if w.isOpened():
            for f in frames:
                w.write(f[..., ::-1])
            w.release()
            return p
    pytest.skip("this OpenCV build cannot write videos")


def test_images_folder_video(tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "one.png"), _scene(0)[..., ::-1])
    (tmp_path / "dir").mkdir()
    cv2.imwrite(str(tmp_path / "dir" / "two.png"), _scene(1)[..., ::-1])
    video = _write_video(tmp_path / "clip", [_scene(i) for i in range(4)])
    out = tmp_path / "out"
    code = main([str(tmp_path / "one.png"), str(tmp_path / "dir"), str(video),
                 "--config", TINY, "--set", f"text_cache_dir={tmp_path / 'text'}",
                 "--vocab", "person", "sky,heaven", "floor", "--panoptic", "--every", "2",
                 "--out", str(out), "--quiet"])
    assert code == 0
    # regression: the console did not say that the labels come from random weights
    assert "segmented 4 images" in (said := capsys.readouterr().out) and "RANDOM WEIGHTS" in said
    names = ["one", "two", "clip/frame_000000", "clip/frame_000002"]
    for n in names:
        for kind in ("semantic", "overlay", "panoptic"):
            assert (out / f"{n}_{kind}.png").is_file(), (n, kind)
    assert not (out / "clip/frame_000001_semantic.png").exists()
    assert not list(out.rglob("*.tmp*"))

    from ovseg_ros import load_segmenter

    seg = load_segmenter(TINY, text_cache_dir=str(tmp_path / "text"))
    seg.set_vocabulary(["person", "sky,heaven", "floor"])
    pred = seg.predict(_scene(0))
    sem = cv2.imread(str(out / "one_semantic.png"), cv2.IMREAD_UNCHANGED)
    assert sem.dtype == np.uint16 and np.array_equal(sem, pred.semantic)
    pan_rgb = cv2.imread(str(out / "one_panoptic.png"), cv2.IMREAD_COLOR)[..., ::-1]
    assert np.array_equal(rgb_to_panoptic_id(pan_rgb), pred.panoptic)

    info = json.loads((out / "panoptic.json").read_text())
    assert [c["name"] for c in info["categories"]] == ["person", "sky", "floor"]
    assert info["categories"][1]["synonyms"] == ["sky", "heaven"]
    ann = {a["image_id"]: a for a in info["annotations"]}
    assert set(ann) == set(names)
    segs = ann["one"]["segments_info"]
    assert [s["id"] for s in segs] == [s.id for s in pred.segments]
    assert sum(s["area"] for s in segs) == int((pred.panoptic > 0).sum())
    assert json.loads((out / "vocabulary.json").read_text())["random_weights"] is True


def test_segment_errors(tmp_path, capsys):
    base = ["--config", TINY, "--set", f"text_cache_dir={tmp_path / 'text'}", "--out",
            str(tmp_path / "out"), "--quiet"]
    assert main([str(tmp_path / "missing.png"), *base]) == 2
    assert "missing.png does not exist" in capsys.readouterr().err
    (tmp_path / "bad.png").write_bytes(b"not an image")
    assert main([str(tmp_path / "bad.png"), *base]) == 2
    assert "cannot read image" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("x")
    assert main([str(tmp_path / "notes.txt"), *base]) == 2
    assert "unknown file type '.txt'" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), *base]) == 2
    assert "holds no images" in capsys.readouterr().err
    (tmp_path / "broken.mp4").write_bytes(b"\0" * 100)
    assert main([str(tmp_path / "broken.mp4"), *base]) == 2
    assert "broken.mp4" in capsys.readouterr().err


def test_inputs_with_the_same_output_name_are_refused(tmp_path, capsys):
    """Regression: a/photo.png and b/photo.png both wrote photo_*.png, the second silently
    overwriting the first (and panoptic.json got two annotations with one image_id)."""
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        cv2.imwrite(str(tmp_path / d / "photo.png"), _scene(0)[..., ::-1])
    assert main([str(tmp_path / "a" / "photo.png"), str(tmp_path / "b" / "photo.png"),
                 "--config", TINY, "--set", f"text_cache_dir={tmp_path / 'text'}",
                 "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "two inputs give the output name 'photo'" in capsys.readouterr().err
