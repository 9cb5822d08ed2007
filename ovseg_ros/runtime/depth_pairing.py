"""Pair depth images with colour frames by header stamp, without ROS.

A driver that aligns depth to colour (RealSense ``aligned_depth_to_color``) gives both
the same stamp: the pair is exact. Otherwise the depth frame nearest to the colour
stamp within ``depth_slop`` seconds is taken. The colour path is never held back: a
colour frame is matched against the depth frames that have already arrived, and one
without a partner goes on without 3D (counted, with the reason in ``last_miss``).

Memory is bounded: at most ``max_pending`` depth frames are kept (the newest), and
depth older than the newest colour frame minus the slop is dropped, since no later
colour frame can pair with it. A depth stream at 5x the colour rate thus keeps a few
frames; a depth stream that stops leaves colour frames unpaired ("newest depth is
N s older than the colour frame"), never stalled.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Deque, Optional, Tuple


@dataclass
class PairingCounts:
    paired_exact: int = 0
    paired_nearest: int = 0
    unpaired_colour: int = 0        # colour frames that went on without depth
    dropped_depth: int = 0          # depth frames never paired (too old, or over max_pending)

    @property
    def paired(self) -> int:
        return self.paired_exact + self.paired_nearest

    def as_dict(self) -> dict:
        return {"paired": self.paired, **self.__dict__}


class DepthPairing:
    """Depth frames in (``add_depth``), colour stamps matched (``match``)."""

    def __init__(self, depth_slop: float = 0.02, max_pending: int = 30):
        if depth_slop < 0:
            raise ValueError(f"depth_slop must be >= 0 seconds, got {depth_slop}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.slop_ns = int(round(depth_slop * 1e9))
        self.max_pending = int(max_pending)
        self._depth: Deque[Tuple[int, Any]] = deque()
        self.counts = PairingCounts()
        self.last_miss: Optional[str] = None

    def __len__(self) -> int:
        return len(self._depth)

    def add_depth(self, stamp_ns: int, item: Any) -> None:
        """Keep a depth frame (any object) under its header stamp."""
        self._depth.append((int(stamp_ns), item))
        while len(self._depth) > self.max_pending:
            self._depth.popleft()
            self.counts.dropped_depth += 1

    def match(self, colour_stamp_ns: int) -> Optional[Any]:
        """The depth frame paired with this colour stamp, or None (never waits). A paired
        depth frame and every older one are removed: stamps only move forward."""
        t = int(colour_stamp_ns)
        best, best_dt = None, None
        for i, (s, _) in enumerate(self._depth):
            dt = abs(s - t)
            if best_dt is None or dt < best_dt:
                best, best_dt = i, dt
        if best is not None and best_dt <= self.slop_ns:
            for _ in range(best):
                self._depth.popleft()
                self.counts.dropped_depth += 1
            _, item = self._depth.popleft()
            if best_dt == 0:
                self.counts.paired_exact += 1
            else:
                self.counts.paired_nearest += 1
            return item
        self.counts.unpaired_colour += 1
        if not self._depth:
            self.last_miss = "no depth image received (is the depth topic publishing?)"
        else:
            newest = self._depth[-1][0]
            self.last_miss = (f"nearest depth is {best_dt / 1e9:.3f} s from the colour frame, "
                              f"above depth_slop={self.slop_ns / 1e9:g} s (newest depth is "
                              f"{(t - newest) / 1e9:+.3f} s older than the colour frame)")
        # depth older than this colour frame minus the slop can never pair again
        while self._depth and self._depth[0][0] < t - self.slop_ns:
            self._depth.popleft()
            self.counts.dropped_depth += 1
        return None


__all__ = ["DepthPairing", "PairingCounts"]
