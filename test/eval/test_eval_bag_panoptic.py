"""PQ on bags: a panoptic label topic (32SC1 ids or the COCO rgb8 encoding) with an
ovseg_ros/msg/Segments topic, evaluated by `ovseg-eval bag` against the metric run by hand."""
import json
from pathlib import Path

import numpy as np
import pytest

from ovseg_ros.eval import bags as B
from ovseg_ros.eval.cli import main
from ovseg_ros.eval.datasets import panoptic_id_to_rgb
from ovseg_ros.eval.metrics import PanopticQualityMetric, SemanticSegmentationMetric
from ovseg_ros.eval.state import _nan_to_none

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "test" / "configs" / "tiny_proxyclip.yaml")
CLASSES = "person\tthing\nsky\tstuff\nfloor\tstuff\n"
SEGMENT_CLASSES = {1: 0, 2: 0, 7: 1, 9: 2}      # two persons, sky, floor


def panoptic_frame(i, h=40, w=48):
    """An image of two persons (class 0) on sky (1) over floor (2), its segment ids and a void
    strip (id 0)."""
    img = np.zeros((h, w, 3), np.uint8)
    ids = np.zeros((h, w), np.int32)
    ids[: h // 2] = 7
    ids[h // 2:] = 9
    x = 6 + 3 * i
    ids[8:30, x:x + 10] = 1
    ids[10:34, x + 20:x + 30] = 2
    ids[:, -3:] = 0
    colours = {0: (0, 0, 0), 1: (220, 60, 60), 2: (200, 90, 40), 7: (40, 160, 220),
               9: (90, 200, 60)}
    for sid, c in colours.items():
        img[ids == sid] = c
    return 10**9 + i * 10**8, img, ids


def write_panoptic_bag(path, n, encoding="32SC1", with_labels=False):
    """Images, panoptic ids and Segments messages (and, optionally, semantic labels)."""
    from rosbags.rosbag2 import Writer

    store = B.make_typestore()
    T = store.types
    w = Writer(path, version=9)
    w.open()
    ci = w.add_connection("/camera/image", B.IMAGE_TYPE, typestore=store)
    cp = w.add_connection("/camera/panoptic", B.IMAGE_TYPE, typestore=store)
    cs = w.add_connection("/camera/segments", "ovseg_ros/msg/Segments", typestore=store)
    cl = w.add_connection("/camera/labels", B.IMAGE_TYPE, typestore=store) if with_labels \
        else None
    for i in range(n):
        stamp, img, ids = panoptic_frame(i)
        hdr = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](
            sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="camera")
        w.write(ci, stamp, store.serialize_cdr(B.numpy_to_image(store, img, "rgb8", hdr),
                                               B.IMAGE_TYPE))
        pan = panoptic_id_to_rgb(ids) if encoding == "rgb8" else ids
        w.write(cp, stamp, store.serialize_cdr(B.numpy_to_image(store, pan, encoding, hdr),
                                               B.IMAGE_TYPE))
        roi = T["sensor_msgs/msg/RegionOfInterest"]
        segs = [T["ovseg_ros/msg/Segment"](
            id=sid, class_id=cls, class_name="x", is_thing=cls == 0, score=1.0,
            area=int((ids == sid).sum()), bbox=roi(x_offset=0, y_offset=0, height=0, width=0,
                                                   do_rectify=False))
            for sid, cls in SEGMENT_CLASSES.items()]
        w.write(cs, stamp, store.serialize_cdr(
            T["ovseg_ros/msg/Segments"](header=hdr, vocabulary_version=1, segments=segs),
            "ovseg_ros/msg/Segments"))
        if cl is not None:
            sem = np.full(ids.shape, 65535, np.uint16)
            for sid, cls in SEGMENT_CLASSES.items():
                sem[ids == sid] = cls
            w.write(cl, stamp, store.serialize_cdr(B.numpy_to_image(store, sem, "16UC1", hdr),
                                                   B.IMAGE_TYPE))
    w.close()
    return path


def expected(seg, n):
    """PQ and mIoU of the engine's predictions computed directly with the metrics."""
    pq = PanopticQualityMetric([True, False, False])
    sem = SemanticSegmentationMetric(3)
    for i in range(n):
        _, img, ids = panoptic_frame(i)
        pred = seg.predict(img)
        gt_segs = {k: (v, False) for k, v in SEGMENT_CLASSES.items()}
        pq.update(pred.panoptic, {s.id: s.class_id for s in pred.segments}, ids, gt_segs)
        gt = np.full(ids.shape, -1, np.int64)
        for sid, cls in SEGMENT_CLASSES.items():
            gt[ids == sid] = cls
        sem.update(pred.semantic, gt)
    return pq.compute(), sem.compute()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("panbag")
    (d / "classes.txt").write_text(CLASSES)
    return d


def _args(work, bag, out, *extra):
    return ["bag", "--config", TINY, "--set", f"text_cache_dir={work / 'text'}", "--bag",
            str(bag), "--image-topic", "/camera/image", "--classes", str(work / "classes.txt"),
            "--out", str(out), "--quiet", *extra]


@pytest.mark.parametrize("encoding", ["32SC1", "rgb8"])
def test_bag_pq_equals_direct_metric(work, encoding):
    bag = write_panoptic_bag(work / f"pan_{encoding}", 3, encoding)
    out = work / f"out_{encoding}"
    assert main(_args(work, bag, out, "--panoptic-topic", "/camera/panoptic",
                      "--segments-topic", "/camera/segments")) == 0
    res = json.loads((out / "results.json").read_text())
    from ovseg_ros import load_segmenter

    seg = load_segmenter(TINY, text_cache_dir=str(work / "text"))
    seg.set_vocabulary(["person", "sky", "floor"], [True, False, False])
    pq, sem = expected(seg, 3)
    assert res["num_images"] == 3
    assert res["panoptic"] == _nan_to_none(pq)       # results.json writes NaN as null
    # without a label topic the semantic ground truth is the panoptic one (void ignored)
    assert res["semantic"]["gt_pixels"] == sem["gt_pixels"]
    assert res["semantic"]["mIoU"] == sem["mIoU"]
    assert sum(res["panoptic"]["tp"]) + sum(res["panoptic"]["fn"]) == 3 * 4
    assert "| PQ All |" in (out / "report.md").read_text()


def test_bag_pq_with_label_topic_and_errors(work, capsys):
    bag = write_panoptic_bag(work / "pan_lab", 2, with_labels=True)
    out = work / "out_lab"
    assert main(_args(work, bag, out, "--label-topic", "/camera/labels", "--panoptic-topic",
                      "/camera/panoptic", "--segments-topic", "/camera/segments")) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["panoptic"]["All"]["n"] >= 1 and res["semantic"]["pixels"] == 2 * 40 * 45
    capsys.readouterr()
    # a panoptic topic without its segments topic, and a segments topic of the wrong type
    assert main(_args(work, bag, work / "e1", "--panoptic-topic", "/camera/panoptic")) == 2
    assert "--segments-topic" in capsys.readouterr().err
    assert main(_args(work, bag, work / "e2", "--panoptic-topic", "/camera/panoptic",
                      "--segments-topic", "/camera/labels")) == 2
    err = capsys.readouterr().err
    assert "segments topic '/camera/labels' has type" in err and "Segments" in err
    assert main(_args(work, bag, work / "e3")) == 2
    assert "--label-topic" in capsys.readouterr().err
