"""Per-stage timing inside an image model's forward, without writing to the module.

The engine wraps one call in ``stage_timer(timer)``; the model calls ``mark(stage)``
after each stage. The hook lives in a context variable, so it belongs to the call
(its thread), never to the shared module: two threads predicting at once each time
their own call, and a traced or exported forward (no ``stage_timer`` around it, or
``stage_timer(None)``) marks nothing.

``StageTimer`` is the hook every engine passes: it adds up the wall time of each stage.
"""
from __future__ import annotations

import contextlib
import time
from contextvars import ContextVar
from typing import Callable, Dict, Iterator, Optional

StageHook = Callable[[str], None]
_HOOK: ContextVar[Optional[StageHook]] = ContextVar("ovseg_stage_hook", default=None)


def mark(stage: str) -> None:
    """``stage`` has just finished (no-op outside a ``stage_timer``)."""
    hook = _HOOK.get()
    if hook is not None:
        hook(stage)


@contextlib.contextmanager
def stage_timer(hook: Optional[StageHook]) -> Iterator[None]:
    """``hook(stage)`` for every ``mark`` in this context (None: marks are ignored)."""
    token = _HOOK.set(hook)
    try:
        yield
    finally:
        _HOOK.reset(token)


class StageTimer:
    """Collects per-stage wall times (``timer(stage)`` ends a stage); synchronises CUDA on
    a CUDA ``device`` so a stage's time is its own, not the kernels it queued."""

    def __init__(self, device) -> None:
        self.cuda = getattr(device, "type", str(device)) == "cuda"
        self.times: Dict[str, float] = {}
        self.last = 0.0

    def start(self) -> None:
        self._sync()
        self.last = time.perf_counter()

    def __call__(self, name: str) -> None:
        self._sync()
        now = time.perf_counter()
        self.times[name] = self.times.get(name, 0.0) + now - self.last
        self.last = now

    def _sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()


__all__ = ["mark", "stage_timer", "StageHook", "StageTimer"]
