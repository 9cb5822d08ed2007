"""What the ``ovseg-eval`` subcommands share: the engine and run options, the shard and count
checks, the evaluation of a source (``bag`` and ``dataset``) and its one-line summary.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Iterable, Optional, Tuple

from ...core.class_names import ClassList
from ..engine_args import CliError, engine_config, load_engine_from
from ..runner import EvalItem, finish, open_state, run_evaluation, state_path
from ..state import StateError


def parse_shard(text: str) -> Tuple[int, int]:
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise CliError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise CliError(f"--shard {text}: need 0 <= i < n")
    return i, n


def check_counts(args) -> None:
    """--limit 0 used to run and report "nothing was evaluated" (or write an empty bag)."""
    if getattr(args, "limit", None) is not None and args.limit < 1:
        raise CliError(f"--limit must be >= 1 (items to process), got {args.limit}")
    if getattr(args, "save_every", 1) < 1:
        raise CliError(f"--save-every must be >= 1, got {args.save_every}")
    if getattr(args, "samples", 0) < 0:
        raise CliError(f"--samples must be >= 0, got {args.samples}")


def load_engine(args, classes: Optional[ClassList], ctx=None):
    """The segmenter from --config/--set, with the evaluated classes as its vocabulary."""
    return load_engine_from(engine_config(args.config, args.set, ctx), classes)


def evaluate(args, classes: ClassList, items: Iterable[EvalItem], source: dict, panoptic: bool,
              total: Optional[int], stats: Optional[dict] = None) -> int:
    from .. import distributed as D

    ctx = D.context_from_env()
    shard = parse_shard(args.shard)
    out = Path(args.out)
    if ctx is not None:
        if shard != (0, 1):
            raise CliError("--shard and torchrun both split the items; under torchrun rank r of "
                           "w evaluates shard r/w: leave --shard out")
        shard = ctx.shard
        stale = D.other_world_states(out, ctx.world)
        if stale:
            raise StateError(f"{out} holds the state of a run split {stale[0].stem.split('of')[-1]}"
                             f" ways ({stale[0].name}), not {ctx.world}: resume it with as many "
                             "ranks, or choose another --out directory")
    # torchrun --max-restarts starts the ranks again after a failure: they continue the
    # states this same job wrote (TORCHELASTIC_RESTART_COUNT counts the restarts)
    if ctx is not None and D.restart_count() > 0:
        args.resume = True
    # an existing state without --resume is refused now rather than after loading the model
    if state_path(out, shard).exists() and not args.resume:
        raise StateError(f"{state_path(out, shard)} exists from an earlier run; pass --resume to "
                         "continue it or choose another --out directory")
    cfg = engine_config(args.config, args.set, ctx)
    if ctx is not None:
        D.init(ctx, cfg["device"])
    try:
        seg = load_engine_from(cfg, classes)
        # JSON-safe copy (saved in the state header); num_classes is the class list's business
        info = json.loads(json.dumps(seg.describe(), default=str))
        info.pop("num_classes", None)
        main_rank = ctx is None or ctx.is_main
        state = open_state(out, classes, seg.vocabulary.is_thing, source, shard, panoptic,
                           args.resume, engine=info)
        state = run_evaluation(seg, items, state, out, total=total, limit=args.limit,
                               save_every=args.save_every,
                               num_samples=args.samples if main_rank else 0,
                               progress=not args.quiet and main_rank)
        if stats and shard[0] == 0:   # shard 0 reports what the whole source lacked
            state.extra.update({k: v for k, v in stats.items() if k.startswith("unmatched")})
        if ctx is not None:
            merged = D.reduce_states(state, ctx, cfg["device"])
            if merged is None:      # rank 0 writes the results
                return 0
            state = merged
        if not state.done:
            detail = (f" (bag: {stats.get('images', 0)} images, {stats.get('labels', 0)} labels, "
                      "none with the same header stamp as an image)") if stats else ""
            what = f"shard {shard[0]}/{shard[1]} has no items" if ctx is None else \
                f"none of the {ctx.world} ranks had items"
            raise CliError(f"nothing was evaluated: {what}{detail}")
        res = finish(state, out, report=not args.no_report)
        print_summary(res, out)
        return 0
    finally:
        if ctx is not None:
            D.close()


def print_summary(res: dict, out: Path) -> None:
    sem = res.get("semantic")
    parts = [f"{res['num_images']} images"]
    if sem:
        parts.append(f"mIoU {100 * sem['mIoU']:.2f}  mAcc {100 * sem['mAcc']:.2f}  "
                     f"pAcc {100 * sem['pAcc']:.2f}")
    pan = res.get("panoptic")
    if pan:
        parts.append(f"PQ {100 * pan['All']['PQ']:.2f} (things {100 * pan['Things']['PQ']:.2f}, "
                     f"stuff {100 * pan['Stuff']['PQ']:.2f})")
    if not res["finished"]:
        parts.append("PARTIAL")
    if (res.get("engine") or {}).get("random_weights"):   # as the report says
        parts.append("RANDOM WEIGHTS (numbers meaningless)")
    print(" | ".join(parts) + f"  -> {out}")


def add_engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="engine config (YAML; same keys as the node's parameters)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set device=cuda")


def add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output directory (state, results, report)")
    p.add_argument("--shard", default="0/1",
                   help="evaluate shard i of n (items p with p %% n == i)")
    p.add_argument("--limit", type=int, help="stop after this many items (quick runs)")
    p.add_argument("--resume", action="store_true", help="continue the saved state in --out")
    p.add_argument("--save-every", type=int, default=25, help="save the state every N items")
    p.add_argument("--samples", type=int, default=4, help="sample overlays kept for the report")
    p.add_argument("--no-report", action="store_true", help="results.json only")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
