"""The agreement figures the reference comparisons report (ovseg_ros/testing/comparison.py),
on hand-made score maps whose answers are known."""
from __future__ import annotations

import numpy as np
import torch

from ovseg_ros.testing.comparison import agreement, failures, photos, with_threads


def _scores():
    """3 classes on a 2 x 2 image: a clear win, a near tie the 2-thread run flips, and two
    clear wins; normalised shares (sum 1)."""
    r1 = torch.tensor([[[0.8, 0.501], [0.1, 0.1]],
                       [[0.1, 0.499], [0.8, 0.1]],
                       [[0.1, 0.000], [0.1, 0.8]]])
    r2 = r1.clone()
    r2[:, 0, 1] = torch.tensor([0.4985, 0.5015, 0.0])       # the tie flips under 2 threads
    return r1, r2


def test_raw_margin_and_floor_on_a_near_tie():
    r1, r2 = _scores()
    ref = r1.argmax(0).numpy()                                 # [[0, 0], [1, 2]]
    same = agreement(ref, r1, r2)
    assert same["raw"] == 1.0 and same["margin"] == 1.0
    assert same["floor"] == 0.75                               # the reference flips the tie
    assert abs(same["reference_score_noise"] - 0.0025) < 1e-6
    assert same["classes_present"] == 3
    tie = ref.copy()
    tie[0, 1] = 1                                              # the other side of the tie
    row = agreement(tie, r1, r2)
    assert row["raw"] == 0.75 and row["margin"] == 1.0         # within the reference's noise
    wrong = ref.copy()
    wrong[1, 1] = 0                                            # a clear win missed
    row = agreement(wrong, r1, r2)
    assert row["raw"] == 0.75 and row["margin"] == 0.75


def test_failures_apply_the_floor_and_the_margin():
    rows = {"a": {"raw": 0.9990, "margin": 1.0, "floor": 1.0},
            "b": {"raw": 0.9950, "margin": 1.0, "floor": 0.9960},   # below its floor
            "c": {"raw": 0.9950, "margin": 1.0, "floor": 0.9940},   # at least its floor
            "d": {"raw": 1.0, "margin": 0.9999, "floor": 1.0}}      # margin short of 100 %
    bad = failures(rows)
    assert [b.split(":")[0] for b in bad] == ["b", "d"]


def test_photos_and_threads():
    got = photos()
    assert {k: v.shape for k, v in got.items()} == {
        "coffee 400x600": (400, 600, 3), "astronaut 512x512": (512, 512, 3),
        "chelsea 300x451": (300, 451, 3), "portrait 512x256": (512, 256, 3)}
    assert all(v.dtype == np.uint8 for v in got.values())
    before = torch.get_num_threads()
    assert with_threads(1, torch.get_num_threads) == 1
    assert torch.get_num_threads() == before
