"""One output path (ovseg_ros/core/products.py): the rules of the published products, the
ROS messages built from them, and bag-to-bag inference writing the same images."""
from __future__ import annotations

import numpy as np
import pytest

from ovseg_ros.core import palette
from ovseg_ros.core.products import (RANDOM_WEIGHTS_BANNER, WITHOUT_CONFIDENCE, build_products,
                                     draw_banner, needs_confidence, semantic_u16)
from ovseg_ros.core.types import UNLABELED, Prediction, Segment

NAMES = ("person", "sofa, couch", "floor")


def _prediction(h=6, w=8):
    sem = np.zeros((h, w), np.int32)
    sem[:, 4:] = 1
    sem[0, 0] = -1                      # negative: outside the vocabulary
    sem[0, 1] = 7                       # beyond the vocabulary
    sem[0, 2] = UNLABELED
    pan = np.zeros((h, w), np.int32)
    pan[:, 4:] = 3
    pan[2:4, 0:2] = 5
    conf = np.linspace(0, 1, h * w, dtype=np.float32).reshape(h, w)
    segs = [Segment(id=5, class_id=0, is_thing=True, score=0.9, area=4, bbox=(0, 2, 2, 2)),
            Segment(id=3, class_id=1, is_thing=False, score=0.7, area=int((pan == 3).sum()))]
    return Prediction(semantic=sem, confidence=conf, panoptic=pan, segments=segs,
                      vocabulary=NAMES, vocabulary_version=4, random_weights=False,
                      engine="proxyclip")


def _rgb(h=6, w=8):
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_one_rule_for_ids_outside_the_vocabulary():
    p = build_products(_prediction(), _rgb(), NAMES, overlay_alpha=0.5, random_weights=False)
    assert p.semantic.dtype == np.uint16
    assert p.semantic[0, 0] == p.semantic[0, 1] == p.semantic[0, 2] == UNLABELED
    assert p.semantic[0, 4] == 1 and p.semantic[5, 0] == 0
    np.testing.assert_array_equal(semantic_u16(np.array([[-3, 0, 2, 3, 65535]]), 3),
                                  [[UNLABELED, 0, 2, UNLABELED, UNLABELED]])
    with pytest.raises(ValueError, match="H x W"):
        semantic_u16(np.zeros((2, 2, 2)), 3)


def test_segments_names_areas_bboxes_and_overlay():
    pred = _prediction()
    rgb = _rgb()
    p = build_products(pred, rgb, NAMES, overlay_alpha=0.5, random_weights=False)
    assert p.panoptic.dtype == np.int32 and p.confidence.dtype == np.float32
    np.testing.assert_array_equal(p.confidence, pred.confidence)
    assert [s["id"] for s in p.segments] == [3, 5]          # sorted by id
    s3, s5 = p.segments
    assert s3 == {"id": 3, "class_id": 1, "class_name": "sofa", "is_thing": False,
                  "score": pytest.approx(0.7), "area": 24, "bbox": [4, 0, 4, 6]}
    assert s5["class_name"] == "person" and s5["area"] == 4 and s5["bbox"] == [0, 2, 2, 2]
    labels = p.semantic.astype(np.int32)
    labels[p.semantic == UNLABELED] = -1
    np.testing.assert_array_equal(p.colored, palette.overlay(rgb, labels, 0.5, 3))
    np.testing.assert_array_equal(p.colored[0, 0], rgb[0, 0])   # unlabelled keeps the image
    assert p.vocabulary_version == 4 and p.size == (6, 8)


def test_random_weights_banner_and_optional_products():
    pred, rgb = _prediction(60, 200), _rgb(60, 200)
    plain = build_products(pred, rgb, NAMES, overlay_alpha=0.5, random_weights=False)
    flagged = build_products(pred, rgb, NAMES, overlay_alpha=0.5, random_weights=True)
    np.testing.assert_array_equal(flagged.colored, draw_banner(plain.colored,
                                                               RANDOM_WEIGHTS_BANNER))
    assert (flagged.colored != plain.colored).any()
    bare = build_products(pred, rgb, NAMES, overlay_alpha=0.5, random_weights=True,
                          wanted={"semantic", "segments"})
    assert bare.colored is None and bare.confidence is None
    np.testing.assert_array_equal(bare.semantic, plain.semantic)
    with pytest.raises(ValueError, match="unknown output keys.*'colour'"):
        build_products(pred, rgb, NAMES, overlay_alpha=0.5, random_weights=True,
                       wanted={"semantic", "colour"})


def test_products_at_the_camera_resolution():
    pred = _prediction()
    p = build_products(pred, _rgb(12, 16), NAMES, overlay_alpha=0.3, random_weights=False)
    assert p.semantic.shape == p.panoptic.shape == p.confidence.shape == (12, 16)
    assert p.colored.shape == (12, 16, 3)
    for s in p.segments:            # measured on the resized map
        m = p.panoptic == s["id"]
        ys, xs = np.nonzero(m)
        assert s["area"] == int(m.sum())
        assert s["bbox"] == [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1,
                             int(np.ptp(ys)) + 1]


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="uint8"):
        build_products(_prediction(), np.zeros((6, 8), np.uint8), NAMES, overlay_alpha=0.5,
                       random_weights=False)
    with pytest.raises(ValueError, match="overlay_alpha"):
        build_products(_prediction(), _rgb(), NAMES, overlay_alpha=1.5, random_weights=False)


def test_which_outputs_need_the_confidence():
    """The engine may skip the confidence only when nothing of the frame uses it."""
    assert not needs_confidence({"semantic", "panoptic", "colored"}, tracking=False,
                                embeddings=False)
    assert not needs_confidence(set(), tracking=False, embeddings=False)
    for key in ("confidence", "segments", "segments_3d", "markers", "embeddings"):
        assert key not in WITHOUT_CONFIDENCE
        assert needs_confidence({"semantic", key}, tracking=False, embeddings=False)
    assert needs_confidence({"semantic"}, tracking=True, embeddings=False)
    assert needs_confidence({"semantic"}, tracking=False, embeddings=True)
    # a prediction made without it builds what needs none, and refuses the confidence image
    pred = _prediction()
    pred.confidence = None
    out = build_products(pred, _rgb(), NAMES, overlay_alpha=0.5, random_weights=False,
                         wanted={"semantic", "colored"})
    assert out.confidence is None and out.colored is not None
    with pytest.raises(ValueError, match="confidence=False"):
        build_products(pred, _rgb(), NAMES, overlay_alpha=0.5, random_weights=False,
                       wanted={"confidence"})


def test_product_messages_carry_the_products():
    pytest.importorskip("ovseg_ros.msg")
    from std_msgs.msg import Header

    from ovseg_ros.ros.image_conv import image_to_array
    from ovseg_ros.ros.messages import product_messages

    p = build_products(_prediction(), _rgb(), NAMES, overlay_alpha=0.5, random_weights=True)
    header = Header(frame_id="cam")
    msgs = product_messages(p, header)
    assert set(msgs) == {"semantic", "panoptic", "segments", "colored", "confidence"}
    # the node asks only for the outputs that have subscribers
    assert set(product_messages(p, header, {"semantic", "segments"})) == {"semantic",
                                                                          "segments"}
    np.testing.assert_array_equal(image_to_array(msgs["semantic"]), p.semantic)
    np.testing.assert_array_equal(image_to_array(msgs["panoptic"]), p.panoptic)
    np.testing.assert_array_equal(image_to_array(msgs["colored"]), p.colored)
    np.testing.assert_array_equal(image_to_array(msgs["confidence"]), p.confidence)
    segs = msgs["segments"]
    assert segs.header.frame_id == "cam" and segs.vocabulary_version == 4
    assert [(s.id, s.class_name, s.area, s.bbox.x_offset, s.bbox.width) for s in segs.segments] \
        == [(d["id"], d["class_name"], d["area"], d["bbox"][0], d["bbox"][2])
            for d in p.segments]


def test_bag_to_bag_holds_the_products_of_each_prediction(tiny_config, tmp_path):
    from ovseg_ros import load_segmenter
    from ovseg_ros.eval import bags as B
    from ovseg_ros.eval.bag_infer import infer_bag

    rng = np.random.default_rng(1)
    frames = [(1_000_000_000 + 50_000_000 * i, rng.integers(0, 256, (48, 64, 3), np.uint8), None)
              for i in range(3)]
    B.write_image_bag(tmp_path / "in", frames, label_topic=None)
    seg = load_segmenter(dict(tiny_config, vocabulary=["person", "sky", "floor"]))
    infer_bag(seg, tmp_path / "in", tmp_path / "out", "/camera/image", overlay_alpha=0.4,
              progress=False)
    by_stamp = {stamp: rgb for stamp, rgb, _ in frames}
    store = B.make_typestore()
    reader = B.open_reader(tmp_path / "out")
    seen = {"semantic": 0, "panoptic": 0, "colored": 0, "segments": 0}
    try:
        for conn, _, raw in reader.messages():
            name = conn.topic.rsplit("/", 1)[-1]
            if not conn.topic.startswith("/ovseg/") or name not in seen:
                continue
            msg = store.deserialize_cdr(raw, conn.msgtype)
            rgb = by_stamp[B.stamp_ns(msg.header)]
            pred = seg.predict(rgb)
            want = build_products(pred, rgb, pred.vocabulary, overlay_alpha=0.4,
                                  random_weights=pred.random_weights)
            if name == "segments":
                got = [(s.id, s.class_id, s.class_name, s.area,
                        [s.bbox.x_offset, s.bbox.y_offset, s.bbox.width, s.bbox.height])
                       for s in msg.segments]
                assert got == [(d["id"], d["class_id"], d["class_name"], d["area"], d["bbox"])
                               for d in want.segments]
            else:
                np.testing.assert_array_equal(B.image_to_numpy(msg), getattr(want, name))
            seen[name] += 1
    finally:
        reader.close()
    assert seen == {"semantic": 3, "panoptic": 3, "colored": 3, "segments": 3}


def test_segment_cli_writes_the_products(tiny_segmenter, tmp_path):
    import cv2

    from ovseg_ros.tools.segment import segment_all

    rgb = np.random.default_rng(2).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    segment_all(tiny_segmenter, [str(tmp_path / "a.png")], tmp_path / "out", alpha=0.6,
                progress=False)
    pred = tiny_segmenter.predict(rgb)
    want = build_products(pred, rgb, pred.vocabulary, overlay_alpha=0.6, random_weights=True)
    sem = cv2.imread(str(tmp_path / "out" / "a_semantic.png"), cv2.IMREAD_UNCHANGED)
    col = cv2.cvtColor(cv2.imread(str(tmp_path / "out" / "a_overlay.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(sem, want.semantic)
    np.testing.assert_array_equal(col, want.colored)      # banner included


# --- the fast paths of the output products ------------------------------------------------
def float_blend(rgb, labels, alpha, n):
    """The overlay written out in float: round((1 - a) x + a c); unlabelled keep x."""
    pal = palette.palette(max(n, int(labels.max()) + 1))
    valid = (labels >= 0) & (labels < len(pal))
    col = pal[np.where(valid, labels, 0)].astype(np.float64)
    out = np.rint((1 - alpha) * rgb + alpha * col)
    return np.where(valid[..., None], out, rgb).astype(np.uint8)


@pytest.mark.parametrize("n", [3, 200, 300])          # 8-bit table and gather paths
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_overlay_equals_the_float_blend_and_keeps_unlabelled_pixels(n, alpha):
    rng = np.random.default_rng(n)
    rgb = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    labels = rng.integers(-1, n, (37, 53))
    out = palette.overlay(rgb, labels, alpha, n)
    want = float_blend(rgb, labels, alpha, n)
    assert int(np.abs(out.astype(int) - want).max()) <= 1        # OpenCV rounds in float32
    np.testing.assert_array_equal(out[labels < 0], rgb[labels < 0])
    sem = np.where(labels < 0, UNLABELED, labels).astype(np.uint16)
    np.testing.assert_array_equal(palette.overlay_u16(rgb, sem, alpha, n), out)
    # a class keeps its colour whatever the vocabulary size (the table and the gather agree)
    small = rng.integers(0, 3, (5, 5))
    img = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(palette.overlay(img, small, alpha, 3),
                                  palette.overlay(img, small, alpha, 300))
    with pytest.raises(ValueError, match="uint16"):
        palette.overlay_u16(rgb, labels, alpha, n)


def test_semantic_u16_fast_path_equals_the_rule():
    rng = np.random.default_rng(3)
    ids = rng.integers(-70000, 70000, (40, 50)).astype(np.int32)
    ids[::7, ::3] = rng.integers(0, 12, ids[::7, ::3].shape)
    for dtype in (np.int32, np.int64, np.int16):
        arr = ids.astype(dtype)
        v = arr.astype(np.int64)
        want = np.where((v >= 0) & (v < 12), v, UNLABELED).astype(np.uint16)
        np.testing.assert_array_equal(semantic_u16(arr, 12), want)


def test_segment_areas_from_counts_equal_unique():
    pred = _prediction(30, 40)
    pred.panoptic[10:20, 10:15] = 9              # an id with no Segment: not reported
    p = build_products(pred, _rgb(30, 40), NAMES, overlay_alpha=0.5, random_weights=False)
    ids, counts = np.unique(p.panoptic, return_counts=True)
    area = dict(zip(ids.tolist(), counts.tolist()))
    assert [(s["id"], s["area"]) for s in p.segments] == [(3, area[3]), (5, area[5])]


@pytest.mark.parametrize("ids", [(0, 3), (0, 255), (0, 256), (-2, 9), (70000, 70003)])
def test_segment_areas_equal_unique_counts_on_every_path(ids):
    from ovseg_ros.core.products import _areas

    pan = np.random.default_rng(ids[1]).integers(*ids, (41, 57)).astype(np.int32)
    u, c = np.unique(pan, return_counts=True)
    assert _areas(pan) == dict(zip(u.tolist(), c.tolist()))
    assert _areas(np.zeros((0, 4), np.int32)) == {}
