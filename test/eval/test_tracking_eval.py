"""Tracking evaluation (eval/tracking_metrics.py, eval/tracking_eval.py, `ovseg-eval tracking`):
metrics checked against hand computations on the synthetic sequence, switch locations,
the target on ground-truth masks, the bag round trip and the CLI's errors."""
import json

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from ovseg_ros.core.tracking import TrackerSettings
from ovseg_ros.eval.cli import main
from ovseg_ros.eval.tracking_eval import (evaluate_tracking, oracle_predictor,
                                          synthetic_frames, write_sequence_bag)
from ovseg_ros.eval.tracking_metrics import TrackingEvaluator, mask_iou_matrix
from ovseg_ros.eval.tracking_sequence import CLASSES, FLOOR_ID, IS_THING, perturb

pytest.importorskip("motmetrics")


@pytest.fixture(scope="module")
def frames():
    return synthetic_frames(60)


def test_mask_iou_matrix_equals_brute_force():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 4, (20, 30))
    pred = rng.integers(0, 5, (20, 30)) * 7
    iou = mask_iou_matrix(gt, pred, [1, 2, 3], [7, 14, 21, 28])
    for i, g in enumerate([1, 2, 3]):
        for j, p in enumerate([7, 14, 21, 28]):
            a, b = gt == g, pred == p
            assert iou[i, j] == pytest.approx((a & b).sum() / (a | b).sum())


def _idf1_by_hand(gt_frames, hyp_frames):
    """IDF1 from its definition: the one-to-one identity matching maximising co-occurrence."""
    gts = sorted({g for f in gt_frames for g in f})
    hyps = sorted({h for f in hyp_frames for h in f})
    co = np.zeros((len(gts), len(hyps)))
    for gf, hf in zip(gt_frames, hyp_frames):
        for g, h in gf.items():       # gt id -> hyp id that has the same mask
            if h in hf:
                co[gts.index(g), hyps.index(h)] += 1
    r, c = linear_sum_assignment(-co)
    idtp = co[r, c].sum()
    n_gt = sum(len(f) for f in gt_frames)
    n_hyp = sum(len(f) for f in hyp_frames)
    return 2 * idtp / (n_gt + n_hyp)


def test_metrics_on_a_swap_match_hand_computation(frames):
    """Hypotheses = the ground truth with objects 1 and 2 swapping ids from frame 30 on."""
    ev = TrackingEvaluator(ignore_gt=[FLOOR_ID])
    gt_frames, hyp_frames = [], []
    for t, f in enumerate(frames):
        hyp = np.where((f.instances == FLOOR_ID) | (f.instances == 0), 0, f.instances + 100)
        if t >= 30:
            hyp = np.where(f.instances == 1, 102, np.where(f.instances == 2, 101, hyp))
        ev.add_frame(f.instances, hyp)
        ids = [i for i in np.unique(f.instances).tolist() if i and i != FLOOR_ID]
        mapping = {g: int(np.unique(hyp[f.instances == g])[0]) for g in ids}
        gt_frames.append(mapping)
        hyp_frames.append(set(mapping.values()))
    s = ev.summary()
    objects = sum(len(f) for f in gt_frames)
    assert s["num_objects"] == objects and s["num_switches"] == 2
    assert s["mota"] == pytest.approx(1 - 2 / objects)
    assert s["idf1"] == pytest.approx(_idf1_by_hand(gt_frames, hyp_frames))
    assert s["idf1"] < 1
    assert sorted((w["frame"], w["gt_id"], w["previous_id"], w["id"]) for w in s["switches"]) \
        == [(30, 1, 101, 102), (30, 2, 102, 101)]


def test_ground_truth_masks_meet_the_target(frames):
    """IDF1 >= 0.95 and no switch outside occlusions, the masks fed through the tracker."""
    s = evaluate_tracking(frames, oracle_predictor(CLASSES, IS_THING), TrackerSettings(),
                          lambda c: not IS_THING[c])
    assert s["idf1"] >= 0.95 and s["switches_outside_occlusion"] == []
    assert s["num_objects"] > 200 and any(f.occluded for f in frames), "occlusions happen"


def test_noise_lowers_the_scores(frames):
    clean = evaluate_tracking(frames, oracle_predictor(CLASSES, IS_THING), TrackerSettings(),
                              lambda c: not IS_THING[c])
    split = evaluate_tracking(frames, oracle_predictor(CLASSES, IS_THING, "split"),
                              TrackerSettings(), lambda c: not IS_THING[c])
    assert split["idf1"] < clean["idf1"] and split["num_false_positives"] > 0


def test_perturb_kinds(frames):
    f = frames[25]
    rng = np.random.default_rng(0)
    things = (f.instances > 0) & (f.instances != FLOOR_ID)
    eroded, _ = perturb(f.instances, f.classes, "erode", rng)
    dilated, _ = perturb(f.instances, f.classes, "dilate", rng)
    assert ((eroded > 0) & (eroded != FLOOR_ID)).sum() < things.sum()
    assert ((dilated > 0) & (dilated != FLOOR_ID)).sum() > things.sum()
    split, classes = perturb(f.instances, f.classes, "split", rng, prob=1.0)
    assert len(np.unique(split)) > len(np.unique(f.instances))
    assert all(i in classes for i in np.unique(split).tolist() if i)
    with pytest.raises(ValueError, match="noise must be one of"):
        perturb(f.instances, f.classes, "blur", rng)


def test_cli_synthetic_and_bag_agree(frames, tmp_path, capsys):
    bag = write_sequence_bag(tmp_path / "bag", frames[:20])
    classes = tmp_path / "classes.txt"
    classes.write_text("".join(f"{n}\t{'thing' if t else 'stuff'}\n"
                               for n, t in zip(CLASSES, IS_THING)))
    assert main(["tracking", "--synthetic", "--frames", "20", "--oracle",
                 "--out", str(tmp_path / "a")]) == 0
    assert main(["tracking", "--bag", str(bag), "--image-topic", "/synthetic_tracks/image_raw",
                 "--panoptic-topic", "/synthetic_tracks/instances",
                 "--segments-topic", "/synthetic_tracks/segments", "--classes", str(classes),
                 "--oracle", "--out", str(tmp_path / "b")]) == 0
    a = json.loads((tmp_path / "a" / "results.json").read_text())
    b = json.loads((tmp_path / "b" / "results.json").read_text())
    for key in ("mota", "idf1", "num_switches", "num_objects"):
        assert a[key] == b[key]
    assert a["num_objects"] > 50
    assert (tmp_path / "a" / "ids.png").stat().st_size > 0
    assert "MOTA" in (tmp_path / "a" / "report.md").read_text()


@pytest.mark.parametrize("argv,message", [
    (["--oracle"], "either --synthetic or --bag"),
    (["--synthetic"], "either --oracle"),
    (["--synthetic", "--config", "x.yaml", "--noise", "split"], "--noise applies to --oracle"),
    (["--bag", "b", "--oracle"], "--bag needs --image-topic"),
])
def test_cli_errors(argv, message, tmp_path, capsys):
    assert main(["tracking", *argv, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


def test_sample_script_writes_bag_classes_and_occlusions(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "scripts/make_tracking_sequence.py", "--out",
                          str(tmp_path), "--frames", "40"], cwd=root, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "tracking_bag" / "metadata.yaml").is_file()
    assert (tmp_path / "tracking_bag_classes.txt").read_text().splitlines()[-1] == "floor\tstuff"
    occl = json.loads((tmp_path / "tracking_bag_occlusions.json").read_text())
    assert 3 in set().union(*map(set, occl.values())), "the square's occlusion is listed"
