"""Hand-over of frames from the subscription callbacks to the inference worker.

One slot set per camera behind one condition variable. Latest-frame mode (the
default, for live cameras): capacity 1 per camera; a new frame replaces an
unprocessed one of the same camera, which is counted as that camera's drop.
Memory stays flat and no output is older than about one inference. Queue mode
(``process_every_frame``, for bag playback): a bounded FIFO per camera; when it
is full the oldest frame is dropped and counted.

The worker takes a *batch*: the oldest waiting frame of every camera that has
one, starting one camera further each time (round robin), so a camera is
never served twice before another waiting camera is served once: with a model
slower than the cameras every camera still gets outputs.
ROS-free so it is unit-tested without DDS.
"""
from __future__ import annotations

import collections
import threading
from typing import Any, Dict, Iterable, List, Optional, Tuple


class FrameQueues:
    def __init__(self, cameras: Iterable[str], capacity: int = 1):
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.cameras: Tuple[str, ...] = tuple(cameras)
        if not self.cameras:
            raise ValueError("at least one camera is needed")
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"camera names must be unique, got {list(self.cameras)}")
        self.capacity = int(capacity)
        self._items: Dict[str, collections.deque] = {c: collections.deque()
                                                     for c in self.cameras}
        self._cond = threading.Condition()
        self._closed = False
        self._start = 0                      # round-robin position of the next batch
        self.received: Dict[str, int] = {c: 0 for c in self.cameras}
        self.dropped: Dict[str, int] = {c: 0 for c in self.cameras}

    def put(self, camera: str, item: Any) -> bool:
        """Store a frame of ``camera``; False when an older frame of it was dropped for it."""
        with self._cond:
            q = self._items[camera]          # KeyError for an unknown camera: a bug
            self.received[camera] += 1
            dropped = False
            while len(q) >= self.capacity:
                q.popleft()
                self.dropped[camera] += 1
                dropped = True
            q.append(item)
            self._cond.notify()
            return not dropped

    def get_batch(self, timeout: Optional[float] = None) -> List[Tuple[str, Any]]:
        """[(camera, frame), ...]: the oldest frame of each camera that has one, in
        round-robin order; [] after ``timeout`` seconds or once closed."""
        with self._cond:
            if not self._closed and not any(self._items.values()):
                self._cond.wait(timeout)
            if self._closed:
                return []
            n = len(self.cameras)
            order = [self.cameras[(self._start + i) % n] for i in range(n)]
            batch = [(c, self._items[c].popleft()) for c in order if self._items[c]]
            if batch:
                self._start = (self._start + 1) % n
            return batch

    def clear(self) -> int:
        with self._cond:
            n = sum(len(q) for q in self._items.values())
            for q in self._items.values():
                q.clear()
            return n

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def waiting(self, camera: Optional[str] = None) -> int:
        with self._cond:
            if camera is not None:
                return len(self._items[camera])
            return sum(len(q) for q in self._items.values())

    @property
    def total_received(self) -> int:
        with self._cond:
            return sum(self.received.values())

    @property
    def total_dropped(self) -> int:
        with self._cond:
            return sum(self.dropped.values())
