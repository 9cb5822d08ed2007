"""PQ against an independent re-implementation of the COCO panoptic reference's per-image loop
(panopticapi ``pq_compute_single_core``): random synthetic panoptic pairs with void, several
crowd segments of one category in one image, and listed segments the image does not show."""
import math
from collections import defaultdict

import numpy as np
import pytest

from ovseg_ros.eval.metrics import PanopticQualityMetric

OFFSET = 256 * 256 * 256
VOID = 0


def reference_image(pan_gt, gt_info, pan_pred, pred_info, stat):
    """The reference's rules, written out as it states them.

    gt_info / pred_info: lists of dicts {id, category_id, iscrowd} in segments_info order.
    stat: category -> [iou, tp, fp, fn] (accumulated).
    """
    gt_segms = {el["id"]: dict(el) for el in gt_info}
    pred_segms = {el["id"]: dict(el) for el in pred_info}
    for segms, pan in ((gt_segms, pan_gt), (pred_segms, pan_pred)):
        labels, cnt = np.unique(pan, return_counts=True)
        for seg in segms.values():
            seg["area"] = 0
        for lab, c in zip(labels.tolist(), cnt.tolist()):
            if lab in segms:
                segms[lab]["area"] = c
    joint = pan_gt.astype(np.uint64) * OFFSET + pan_pred.astype(np.uint64)
    gt_pred_map = {}
    labels, cnt = np.unique(joint, return_counts=True)
    for lab, inter in zip(labels.tolist(), cnt.tolist()):
        gt_pred_map[(lab // OFFSET, lab % OFFSET)] = inter
    gt_matched, pred_matched = set(), set()
    for (g, p), inter in gt_pred_map.items():
        if g not in gt_segms or p not in pred_segms:
            continue
        if gt_segms[g]["iscrowd"] == 1:
            continue
        if gt_segms[g]["category_id"] != pred_segms[p]["category_id"]:
            continue
        union = (pred_segms[p]["area"] + gt_segms[g]["area"] - inter
                 - gt_pred_map.get((VOID, p), 0))
        iou = inter / union
        if iou > 0.5:
            s = stat[gt_segms[g]["category_id"]]
            s[1] += 1
            s[0] += iou
            gt_matched.add(g)
            pred_matched.add(p)
    crowd = {}
    for g, info in gt_segms.items():
        if g in gt_matched:
            continue
        if info["iscrowd"] == 1:
            crowd[info["category_id"]] = g
            continue
        stat[info["category_id"]][3] += 1
    for p, info in pred_segms.items():
        if p in pred_matched:
            continue
        inter = gt_pred_map.get((VOID, p), 0)
        if info["category_id"] in crowd:
            inter += gt_pred_map.get((crowd[info["category_id"]], p), 0)
        if inter / info["area"] > 0.5:
            continue
        stat[info["category_id"]][2] += 1


def reference_pq(stat, cats, isthing):
    """PQ averaged as the reference does (classes with tp + fp + fn > 0)."""
    vals = []
    for c in cats:
        if isthing is not None and isthing != (c < 3):
            continue
        iou, tp, fp, fn = stat[c]
        if tp + fp + fn == 0:
            continue
        vals.append(iou / (tp + 0.5 * fp + 0.5 * fn))
    return sum(vals) / len(vals) if vals else float("nan")


def _random_pair(rng, h=20, w=24, num_cats=5):
    """A ground truth with void, crowds (two of category 1 whenever possible) and a
    prediction that overlaps it partly. Categories 0-2 are things, 3-4 stuff."""
    gt = np.zeros((h, w), np.int64)
    info = []
    next_id = 1
    for _ in range(rng.integers(4, 9)):
        y0, x0 = rng.integers(0, h - 3), rng.integers(0, w - 3)
        y1, x1 = rng.integers(y0 + 2, h + 1), rng.integers(x0 + 2, w + 1)
        gt[y0:y1, x0:x1] = next_id
        info.append({"id": next_id, "category_id": int(rng.integers(0, num_cats)),
                     "iscrowd": int(rng.random() < 0.3)})
        next_id += 1
    # two crowd regions of category 1 side by side
    for x0 in (0, w // 2):
        gt[h - 5:, x0:x0 + w // 2 - 1] = next_id
        info.append({"id": next_id, "category_id": 1, "iscrowd": 1})
        next_id += 1
    gt[rng.random((h, w)) < 0.05] = VOID
    present = set(np.unique(gt).tolist())
    info = [el for el in info if el["id"] in present]
    if rng.random() < 0.5:       # listed but not in the image (e.g. lost when resized)
        info.append({"id": next_id, "category_id": int(rng.integers(0, num_cats)),
                     "iscrowd": 0})
    rng.shuffle(info)
    # prediction: the gt with jittered boxes, changed categories and extra segments
    pred = np.zeros((h, w), np.int64)
    pinfo = []
    pid = 1
    for el in info:
        ys, xs = np.nonzero(gt == el["id"])
        if len(ys) == 0:
            continue
        dy, dx = rng.integers(-2, 3, 2)
        y0, y1 = np.clip([ys.min() + dy, ys.max() + 1 + dy], 0, h)
        x0, x1 = np.clip([xs.min() + dx, xs.max() + 1 + dx], 0, w)
        if y1 <= y0 or x1 <= x0:
            continue
        pred[y0:y1, x0:x1] = pid
        cat = el["category_id"] if rng.random() < 0.8 else int(rng.integers(0, num_cats))
        pinfo.append({"id": pid, "category_id": cat, "iscrowd": 0})
        pid += 1
    for _ in range(rng.integers(0, 3)):
        y0, x0 = rng.integers(0, h - 2), rng.integers(0, w - 2)
        pred[y0:y0 + 3, x0:x0 + 3] = pid
        pinfo.append({"id": pid, "category_id": int(rng.integers(0, num_cats)), "iscrowd": 0})
        pid += 1
    shown = set(np.unique(pred).tolist())
    pinfo = [el for el in pinfo if el["id"] in shown]
    return gt, info, pred, pinfo


@pytest.mark.parametrize("seed", range(6))
def test_pq_equals_reference_loop(seed):
    rng = np.random.default_rng(100 + seed)
    cats = list(range(5))
    ours = PanopticQualityMetric([c < 3 for c in cats])
    stat = defaultdict(lambda: [0.0, 0, 0, 0])
    two_crowds = 0
    for _ in range(12):
        gt, info, pred, pinfo = _random_pair(rng)
        reference_image(gt, info, pred, pinfo, stat)
        ours.update(pred, {el["id"]: el["category_id"] for el in pinfo}, gt,
                    {el["id"]: (el["category_id"], bool(el["iscrowd"])) for el in info})
        two_crowds += sum(el["iscrowd"] and el["category_id"] == 1 for el in info) >= 2
    assert two_crowds > 0
    r = ours.compute()
    assert ours.tp.tolist() == [stat[c][1] for c in cats]
    assert ours.fp.tolist() == [stat[c][2] for c in cats]
    assert ours.fn.tolist() == [stat[c][3] for c in cats]
    # the exact sum rounded once vs. the reference's running float sum: equal to ~1 ulp
    np.testing.assert_allclose(ours.iou_sum, [stat[c][0] for c in cats], rtol=1e-14, atol=0)
    for group, isthing in (("All", None), ("Things", True), ("Stuff", False)):
        ref = reference_pq(stat, cats, isthing)
        assert r[group]["PQ"] == pytest.approx(ref, rel=1e-12, abs=0) or \
            (math.isnan(ref) and math.isnan(r[group]["PQ"]))
    assert sum(ours.fp.tolist()) > 0 and sum(ours.tp.tolist()) > 0


def test_two_crowds_of_one_class_the_last_listed_is_the_region():
    """The case that differed from the reference: a prediction lies on the first of two crowd
    regions of its class. The reference only knows the last one, so it is a false positive."""
    gt = np.zeros((4, 8), np.int64)
    gt[:, :4] = 1
    gt[:, 4:] = 2
    pred = np.zeros((4, 8), np.int64)
    pred[:, :4] = 7                              # entirely on crowd 1
    crowds = {1: (0, True), 2: (0, True)}
    m = PanopticQualityMetric([True])
    m.update(pred, {7: 0}, gt, crowds)
    assert (m.tp.item(), m.fp.item(), m.fn.item()) == (0, 1, 0)
    listed_other_way = {2: (0, True), 1: (0, True)}
    m = PanopticQualityMetric([True])
    m.update(pred, {7: 0}, gt, listed_other_way)
    assert (m.tp.item(), m.fp.item(), m.fn.item()) == (0, 0, 0)


def test_iou_sums_are_order_independent_bit_for_bit():
    """Adding the same images in any order (or over any split) gives identical states."""
    rng = np.random.default_rng(7)
    frames = [_random_pair(rng) for _ in range(10)]

    def run(order):
        m = PanopticQualityMetric([True, True, True, False, False])
        for i in order:
            gt, info, pred, pinfo = frames[i]
            m.update(pred, {el["id"]: el["category_id"] for el in pinfo}, gt,
                     {el["id"]: (el["category_id"], bool(el["iscrowd"])) for el in info})
        return m

    a, b = run(range(10)), run(rng.permutation(10))
    assert a.iou_fixed.tolist() == b.iou_fixed.tolist()
    assert repr(a.compute()) == repr(b.compute())    # repr: NaN entries compare too
    assert a.iou_sum.tobytes() == b.iou_sum.tobytes()
