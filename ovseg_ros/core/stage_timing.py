"""Per-stage timing inside an image model's forward, without writing to the module.

The engine wraps one call in ``stage_timer(timer)``; the model calls ``mark(stage)``
after each stage. The hook lives in a context variable, so it belongs to the call
(its thread), never to the shared module: two threads predicting at once each time
their own call, and a traced or exported forward (no ``stage_timer`` around it, or
``stage_timer(None)``) marks nothing.
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Callable, Iterator, Optional

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


__all__ = ["mark", "stage_timer", "StageHook"]
