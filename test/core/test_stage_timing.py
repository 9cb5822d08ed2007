"""In-forward stage marks reach the hook of their own call only (ovseg_ros/core/stage_timing.py)."""
from __future__ import annotations

import threading

from ovseg_ros.core.stage_timing import mark, stage_timer


def test_marks_reach_only_the_hook_of_their_own_call():
    seen = {"a": [], "b": []}
    both_inside = threading.Barrier(2)

    def run(name: str) -> None:
        with stage_timer(seen[name].append):
            both_inside.wait(timeout=10)   # both hooks are set at the same time
            mark(name)
            both_inside.wait(timeout=10)
        mark(f"{name} after")             # outside: no hook

    threads = [threading.Thread(target=run, args=(n,)) for n in seen]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert seen == {"a": ["a"], "b": ["b"]}


def test_no_hook_marks_nothing_and_nesting_restores():
    outer, inner = [], []
    mark("nobody listens")
    with stage_timer(outer.append):
        with stage_timer(None):        # e.g. a compiled or captured call
            mark("hidden")
        with stage_timer(inner.append):
            mark("inner")
        mark("outer")
    assert outer == ["outer"] and inner == ["inner"]
