"""Rolling throughput, latency and drop-rate figures for diagnostics (ROS-free)."""
from __future__ import annotations

import collections
import threading
import time
from typing import Dict, Mapping, Optional

#: the node's per-frame stages besides the model (node/worker.py), in the order they run:
#: wait = receipt to the worker taking the frame, decode = the image message to RGB,
#: outputs = the products and their messages (with a depth camera also the depth pairing
#: and decoding), publish = the publish calls
STAGES = ("wait", "decode", "outputs", "publish")


class RateStats:
    """Processed frames (time, latency, inference time, per-stage seconds) and drops of the
    last ``window`` seconds."""

    def __init__(self, window: float = 5.0):
        self.window = window
        # (t_done, latency, infer_time, stages)
        self._done: collections.deque = collections.deque()
        self._drops: collections.deque = collections.deque()  # t_drop
        self._lock = threading.Lock()
        self.processed = 0

    def record(self, latency: float, infer_time: float, now: Optional[float] = None,
               stages: Optional[Mapping[str, float]] = None) -> None:
        """One published frame; ``stages``: seconds per STAGES entry (where the latency
        went besides ``infer_time``)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self.processed += 1
            self._done.append((now, latency, infer_time, dict(stages or {})))
            self._trim(now)

    def record_drop(self, now: Optional[float] = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._drops.append(now)
            self._trim(now)

    def _trim(self, now: float) -> None:
        while self._done and now - self._done[0][0] > self.window:
            self._done.popleft()
        while self._drops and now - self._drops[0] > self.window:
            self._drops.popleft()

    def snapshot(self, now: Optional[float] = None) -> Dict[str, float]:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._trim(now)
            items = list(self._done)
            drop_rate = len(self._drops) / self.window
        if not items:
            return {"fps": 0.0, "latency_ms": 0.0, "latency_max_ms": 0.0, "inference_ms": 0.0,
                    "drop_rate": drop_rate}
        span = max(now - items[0][0], 1e-6) if len(items) > 1 else self.window
        fps = (len(items) - 1) / max(items[-1][0] - items[0][0], 1e-6) if len(items) > 1 \
            else 1.0 / span
        lat = [x[1] for x in items]
        inf = [x[2] for x in items]
        out = {"fps": fps, "latency_ms": 1000 * sum(lat) / len(lat),
               "latency_max_ms": 1000 * max(lat), "inference_ms": 1000 * sum(inf) / len(inf),
               "drop_rate": drop_rate}
        for stage in STAGES:   # mean ms of the frames that timed the stage
            vals = [x[3][stage] for x in items if stage in x[3]]
            if vals:
                out[f"stage_{stage}_ms"] = 1000 * sum(vals) / len(vals)
        return out
