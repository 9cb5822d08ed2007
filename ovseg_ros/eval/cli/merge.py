"""``ovseg-eval merge``: add the saved states of shards into one result.
"""
from __future__ import annotations

from pathlib import Path

from ..runner import finish
from ..state import EvalState
from .common import print_summary


def run(args) -> int:
    paths = [Path(p) for p in args.states]
    states = [EvalState.load(p) for p in paths]
    merged = EvalState.merge(states, [str(p) for p in paths])
    out = Path(args.out)
    merged.save(out / "state_merged.npz")
    res = finish(merged, out, report=not args.no_report)
    print_summary(res, out)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("merge", help="add the saved states of shards into one result")
    p.add_argument("states", nargs="+", help="state_shard*.npz files")
    p.add_argument("--out", required=True)
    p.add_argument("--no-report", action="store_true")
    p.set_defaults(func=run)
