"""Metrics: hand-computed cases and random label maps against torchmetrics."""
import math

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassJaccardIndex
from torchmetrics.detection import PanopticQuality

from ovseg_ros.core.types import UNLABELED
from ovseg_ros.eval.metrics import (IGNORE, LabelError, PanopticQualityMetric,
                                    SemanticSegmentationMetric, semantic_from_panoptic)

torch.set_num_threads(1)


# --- semantic ----------------------------------------------------------------------------------
def test_semantic_hand_computed():
    gt = np.array([[0, 0, 1, 1],
                   [0, 2, 2, IGNORE]])
    pred = np.array([[0, 1, 1, 1],
                     [0, 2, UNLABELED, 0]])
    m = SemanticSegmentationMetric(3)
    m.update(pred, gt)
    r = m.compute()
    # class 0: tp 2, gt 3, pred 2 -> IoU 2/3 ; class 1: tp 2, gt 2, pred 3 -> 2/3
    # class 2: tp 1, gt 2 (one unlabelled prediction), pred 1 -> 1/2 ; ignored pixel not counted
    assert r["per_class_iou"] == pytest.approx([2 / 3, 2 / 3, 1 / 2])
    assert r["mIoU"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 2) / 3)
    assert r["pAcc"] == pytest.approx(5 / 7)
    assert r["per_class_acc"] == pytest.approx([2 / 3, 1.0, 0.5])
    assert r["pixels"] == 7
    assert m.confusion[2, 3] == 1          # the "no prediction" column


def test_semantic_absent_class_is_nan_and_left_out():
    m = SemanticSegmentationMetric(3)
    m.update(np.zeros((2, 2), np.int64), np.zeros((2, 2), np.int64))
    r = m.compute()
    assert r["per_class_iou"][0] == 1.0 and math.isnan(r["per_class_iou"][2])
    assert r["mIoU"] == 1.0


def test_semantic_rejects_labels_outside_class_list():
    m = SemanticSegmentationMetric(3)
    with pytest.raises(LabelError, match=r"outside \[0, 3\).*class-name file"):
        m.update(np.zeros((2, 2), int), np.array([[0, 5], [1, 2]]))
    with pytest.raises(LabelError, match="vocabulary"):
        m.update(np.array([[0, 7], [1, 2]]), np.zeros((2, 2), int))
    with pytest.raises(LabelError, match="differ in size"):
        m.update(np.zeros((2, 3), int), np.zeros((2, 2), int))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_semantic_random_against_torchmetrics(seed):
    rng = np.random.default_rng(seed)
    c = 7
    ours = SemanticSegmentationMetric(c)
    tm_cm = MulticlassConfusionMatrix(num_classes=c, ignore_index=IGNORE)
    tm_iou = MulticlassJaccardIndex(num_classes=c, average=None, ignore_index=IGNORE)
    for _ in range(4):
        gt = rng.integers(0, c - 1, size=(13, 17))      # class c-1 never in gt
        gt[rng.random(gt.shape) < 0.1] = IGNORE
        pred = np.where(rng.random(gt.shape) < 0.6, gt, rng.integers(0, c - 1, size=gt.shape))
        pred[pred == IGNORE] = 0
        ours.update(pred, gt)
        tm_cm.update(torch.from_numpy(pred), torch.from_numpy(gt))
        tm_iou.update(torch.from_numpy(pred), torch.from_numpy(gt))
    r = ours.compute()
    np.testing.assert_array_equal(ours.confusion[:, :c].numpy(), tm_cm.compute().numpy())
    assert ours.confusion[:, c].sum() == 0
    ref = tm_iou.compute().numpy()
    present = ~np.isnan(np.array(r["per_class_iou"]))
    np.testing.assert_allclose(np.array(r["per_class_iou"])[present], ref[present], rtol=1e-6)
    assert r["mIoU"] == pytest.approx(ref[present].mean())


def test_semantic_merge_equals_single_run():
    rng = np.random.default_rng(5)
    frames = [(rng.integers(0, 4, (8, 8)), rng.integers(0, 4, (8, 8))) for _ in range(6)]
    single = SemanticSegmentationMetric(4)
    for p, g in frames:
        single.update(p, g)
    shards = [SemanticSegmentationMetric(4) for _ in range(3)]
    for i, (p, g) in enumerate(frames):
        shards[i % 3].update(p, g)
    merged = shards[0]
    for s in shards[1:]:
        merged.merge_state(s)
    assert torch.equal(merged.confusion, single.confusion)
    assert merged.compute()["mIoU"] == single.compute()["mIoU"]


# --- panoptic ----------------------------------------------------------------------------------
def test_pq_hand_computed():
    # classes: 0 = person (thing), 1 = sky (stuff)
    gt = np.array([[1, 1, 2, 2],
                   [1, 1, 2, 2],
                   [3, 3, 3, 3],
                   [0, 0, 3, 3]])
    gt_seg = {1: (0, False), 2: (0, False), 3: (1, False)}
    pred = np.array([[1, 1, 1, 2],
                     [1, 1, 2, 2],
                     [3, 3, 3, 3],
                     [3, 3, 3, 3]])
    pred_seg = {1: 0, 2: 0, 3: 1}
    m = PanopticQualityMetric([True, False])
    m.update(pred, pred_seg, gt, gt_seg)
    r = m.compute()
    # person A: inter 4, union 5+4-4 = 5 -> 0.8 ; person B: inter 3, union 3+4-3 = 4 -> 0.75
    # sky: inter 6, union 8 + 6 - 6 - 2 (predicted pixels on void) = 6 -> 1.0
    assert m.tp.tolist() == [2, 1] and m.fp.tolist() == [0, 0] and m.fn.tolist() == [0, 0]
    assert r["per_class_sq"] == pytest.approx([(0.8 + 0.75) / 2, 1.0])
    assert r["Things"]["PQ"] == pytest.approx(0.775)
    assert r["Stuff"]["PQ"] == pytest.approx(1.0)
    assert r["All"]["PQ"] == pytest.approx((0.775 + 1.0) / 2)


def test_pq_false_positive_negative_and_crowd():
    # gt: a person (1), a crowd of persons (2), void elsewhere
    gt = np.zeros((4, 6), np.int64)
    gt[:2, :2] = 1
    gt[:, 4:] = 2
    gt_seg = {1: (0, False), 2: (0, True)}
    pred = np.zeros((4, 6), np.int64)
    pred[2:, :2] = 1          # misses the person: FP (on void -> ignored!), person -> FN
    pred[:, 3:] = 2           # 8 of 12 pixels on the crowd, 4 on void -> not an FP
    m = PanopticQualityMetric([True])
    m.update(pred, {1: 0, 2: 0}, gt, gt_seg)
    assert (m.tp.item(), m.fp.item(), m.fn.item()) == (0, 0, 1)
    pred[2:, :2] = 0
    pred[0, 2] = pred[0, 3] = 3   # a prediction with 2 pixels on void ...
    pred[1, 1] = 3                # ... and 1 on the person: mostly void, not an FP
    m2 = PanopticQualityMetric([True])
    m2.update(pred, {2: 0, 3: 0}, gt, gt_seg)
    assert (m2.tp.item(), m2.fp.item(), m2.fn.item()) == (0, 0, 1)
    pred[1, 0] = 3                # now exactly half on void: counts as an FP
    m3 = PanopticQualityMetric([True])
    m3.update(pred, {2: 0, 3: 0}, gt, gt_seg)
    assert (m3.tp.item(), m3.fp.item(), m3.fn.item()) == (0, 1, 1)
    assert m3.compute()["All"]["PQ"] == 0.0


def test_pq_rejects_bad_segments():
    m = PanopticQualityMetric([True, False])
    with pytest.raises(LabelError, match="class id 4"):
        m.update(np.zeros((2, 2), int), {}, np.ones((2, 2), int), {1: (4, False)})
    with pytest.raises(LabelError, match="segment id 9"):
        m.update(np.full((2, 2), 9), {}, np.ones((2, 2), int), {1: (0, False)})


def _random_panoptic(rng, h, w, things, stuffs, void_cat=None):
    """Random (category, instance) map built from rectangles; returns HxWx2."""
    out = np.zeros((h, w, 2), np.int64)
    out[..., 0] = rng.choice(stuffs)
    for _ in range(rng.integers(2, 7)):
        y0, x0 = rng.integers(0, h - 2), rng.integers(0, w - 2)
        y1, x1 = rng.integers(y0 + 1, h + 1), rng.integers(x0 + 1, w + 1)
        cat = rng.choice(list(things) + list(stuffs) + ([void_cat] if void_cat is not None else []))
        out[y0:y1, x0:x1, 0] = cat
        out[y0:y1, x0:x1, 1] = rng.integers(1, 4) if cat in things else 0
    return out


def _to_ours(catinst, class_index, void_cat=None):
    """(category, instance) map -> (segment id map, {id: class}) with 0 for void."""
    flat = catinst.reshape(-1, 2)
    keys, inv = np.unique(flat, axis=0, return_inverse=True)
    ids = np.arange(1, len(keys) + 1)
    segs = {}
    for k, sid in zip(keys.tolist(), ids.tolist()):
        if k[0] == void_cat:
            ids[sid - 1] = 0
        else:
            segs[sid] = class_index[k[0]]
    return ids[inv.ravel()].reshape(catinst.shape[:2]), segs


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_pq_random_against_torchmetrics(seed):
    # torchmetrics has no crowd regions and, unlike COCO, discounts predicted void:
    # compare where both definitions agree (no crowd, no void in the predictions).
    rng = np.random.default_rng(seed)
    things, stuffs, void = [1, 2, 5], [7, 9], 11
    cats = things + stuffs
    class_index = {c: i for i, c in enumerate(cats)}
    ours = PanopticQualityMetric([c in things for c in cats])
    tm = PanopticQuality(things=set(things), stuffs=set(stuffs), return_sq_and_rq=True,
                         return_per_class=True)
    for _ in range(5):
        gt = _random_panoptic(rng, 24, 32, things, stuffs, void_cat=void)
        pred = gt.copy() if rng.random() < 0.5 else _random_panoptic(rng, 24, 32, things, stuffs)
        noise = _random_panoptic(rng, 24, 32, things, stuffs)
        keep = rng.random((24, 32)) < 0.8
        pred = np.where(keep[..., None], pred, noise)
        pred[pred[..., 0] == void] = noise[pred[..., 0] == void]
        tm.update(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None])
        gp, gs = _to_ours(gt, class_index, void_cat=void)
        pp, ps = _to_ours(pred, class_index)
        ours.update(pp, ps, gp, {k: (v, False) for k, v in gs.items()})
    ref = tm.compute()   # per class: (C, 3) PQ, SQ, RQ; classes = sorted things, sorted stuffs
    r = ours.compute()
    order = [class_index[c] for c in sorted(things) + sorted(stuffs)]
    pq = np.nan_to_num(np.array(r["per_class_pq"])[order])
    np.testing.assert_allclose(pq, ref[:, 0].numpy(), atol=1e-6)
    sq = np.nan_to_num(np.array(r["per_class_sq"])[order])
    np.testing.assert_allclose(sq, ref[:, 1].numpy(), atol=1e-6)
    tm_overall = PanopticQuality(things=set(things), stuffs=set(stuffs))
    tm_overall.merge_state({k: getattr(tm, k) for k in ("iou_sum", "true_positives",
                                                        "false_positives", "false_negatives")})
    tm_overall._update_count = 1    # states were merged in, not updated
    assert r["All"]["PQ"] == pytest.approx(tm_overall.compute().item(), abs=1e-6)
    assert r["All"]["PQ"] > 0.1 and sum(r["fp"]) > 0   # the case is not trivial


def test_pq_merge_equals_single_run():
    rng = np.random.default_rng(9)
    things, stuffs = [1, 2], [3]
    ci = {1: 0, 2: 1, 3: 2}
    frames = []
    for _ in range(4):
        gt = _random_panoptic(rng, 16, 16, things, stuffs)
        pred = _random_panoptic(rng, 16, 16, things, stuffs)
        frames.append((_to_ours(pred, ci), _to_ours(gt, ci)))
    single = PanopticQualityMetric([True, True, False])
    a, b = PanopticQualityMetric([True, True, False]), PanopticQualityMetric([True, True, False])
    for i, ((pp, ps), (gp, gs)) in enumerate(frames):
        gs = {k: (v, False) for k, v in gs.items()}
        single.update(pp, ps, gp, gs)
        (a if i % 2 else b).update(pp, ps, gp, gs)
    a.merge_state(b)
    assert a.compute() == single.compute()


def test_semantic_from_panoptic():
    pan = np.array([[0, 4], [7, 4]])
    sem = semantic_from_panoptic(pan, {4: (2, False), 7: (0, True)})
    assert sem.tolist() == [[IGNORE, 2], [0, 2]]
