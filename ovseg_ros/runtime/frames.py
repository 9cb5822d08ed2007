"""Hand-over of frames from the subscription callbacks to the inference worker.

Latest-frame mode (the default, for live cameras): one slot; a new frame
replaces an unprocessed one, which is counted as dropped. Memory stays flat
and the output is never older than one inference. Queue mode
(``process_every_frame``, for bag playback): a bounded FIFO; when it is full
the oldest frame is dropped and counted, so memory is bounded either way.
ROS-free so it is unit-tested without DDS.
"""
from __future__ import annotations

import collections
import threading
from typing import Any, Optional


class FrameBuffer:
    def __init__(self, capacity: int = 1):
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = int(capacity)
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.received = 0
        self.dropped = 0

    def put(self, item: Any) -> bool:
        """Store a frame; returns False when an older frame had to be dropped for it."""
        with self._cond:
            self.received += 1
            dropped = False
            while len(self._items) >= self.capacity:
                self._items.popleft()
                self.dropped += 1
                dropped = True
            self._items.append(item)
            self._cond.notify()
            return not dropped

    def get(self, timeout: Optional[float] = None) -> Optional[Any]:
        """The next frame, or None after ``timeout`` seconds or once closed."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if self._closed or not self._items:
                return None
            return self._items.popleft()

    def clear(self) -> int:
        with self._cond:
            n = len(self._items)
            self._items.clear()
            return n

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
