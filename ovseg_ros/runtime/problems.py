"""Bad-input and error bookkeeping of the node, with rate-limited logging (ROS-free)."""
from __future__ import annotations

import threading
import time
from typing import Callable, Dict, Optional, Tuple


class ProblemLog:
    """Bad-input and error bookkeeping with rate-limited logging.

    Each problem kind (``encoding``, ``size``, ``compressed``, ...) logs at
    most once per ``period`` seconds; the next line says how many similar
    problems were suppressed meanwhile. The last problem and the counts feed
    the diagnostics.
    """

    def __init__(self, log: Callable[[str], None], period: float = 5.0):
        self._log = log
        self.period = period
        self._lock = threading.Lock()
        self._last_logged: Dict[str, float] = {}
        self._suppressed: Dict[str, int] = {}
        self.counts: Dict[str, int] = {}
        self.last: Optional[Tuple[float, str, str]] = None   # (monotonic time, kind, text)

    def report(self, kind: str, text: str) -> bool:
        """Record a problem; returns True when it was logged (not throttled)."""
        now = time.monotonic()
        with self._lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
            self.last = (now, kind, text)
            last = self._last_logged.get(kind)
            if last is not None and now - last < self.period:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
                return False
            n = self._suppressed.pop(kind, 0)
            self._last_logged[kind] = now
        suffix = f" ({n} similar problems suppressed in the last {self.period:.0f} s)" if n else ""
        self._log(f"{text}{suffix}")
        return True

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def count_prefix(self, prefix: str) -> int:
        with self._lock:
            return sum(n for k, n in self.counts.items() if k.startswith(prefix))

    def recent(self, within: float) -> Optional[Tuple[str, str]]:
        with self._lock:
            if self.last and time.monotonic() - self.last[0] <= within:
                return self.last[1], self.last[2]
        return None
