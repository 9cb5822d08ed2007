"""Depth-to-colour pairing by stamp (runtime/depth_pairing.py)."""
import pytest

from ovseg_ros.runtime.depth_pairing import DepthPairing

MS = 1_000_000


def test_exact_stamps_pair_exactly():
    p = DepthPairing(depth_slop=0.0)
    for k in range(5):
        p.add_depth(k * 100 * MS, f"d{k}")
        assert p.match(k * 100 * MS) == f"d{k}"
    assert p.counts.paired_exact == 5 and p.counts.unpaired_colour == 0 and len(p) == 0


def test_depth_at_five_times_the_colour_rate_stays_bounded():
    p = DepthPairing(depth_slop=0.015, max_pending=8)
    d = 0
    for k in range(50):                     # colour at 10 Hz, depth at 50 Hz, 3 ms apart
        for _ in range(5):
            p.add_depth(d * 20 * MS + 3 * MS, d)
            d += 1
        t = k * 100 * MS + 80 * MS
        got = p.match(t)
        assert got is not None and abs((got * 20 + 3) * MS - t) <= 15 * MS
        assert len(p) <= 8
    assert p.counts.paired_nearest == 50 and p.counts.dropped_depth > 150


def test_a_depth_stream_that_stops_never_holds_colour_back():
    p = DepthPairing(depth_slop=0.02)
    p.add_depth(0, "d0")
    assert p.match(5 * MS) == "d0"
    p.add_depth(100 * MS, "d1")
    for k in range(2, 10):                  # depth stopped after 100 ms
        assert p.match(k * 100 * MS) is None
    assert p.counts.paired == 1 and p.counts.unpaired_colour == 8
    assert "no depth image received" in p.last_miss and len(p) == 0
    p.add_depth(1000 * MS, "d2")
    assert p.match(1100 * MS) is None and "above depth_slop=0.02 s" in p.last_miss


def test_bad_settings():
    with pytest.raises(ValueError, match="depth_slop"):
        DepthPairing(depth_slop=-1)
    with pytest.raises(ValueError, match="max_pending"):
        DepthPairing(max_pending=0)
