"""``ovseg-eval infer-bags``: bag -> bag over many bags with a bounded number of workers (or
torchrun ranks).
"""
from __future__ import annotations

from pathlib import Path

from ..engine_args import CliError, classes_arg, engine_config
from .common import add_engine_args


def run(args) -> int:
    from .. import distributed as D
    from .. import multi_bag as MB

    if args.classes:
        classes_arg(args.classes, None, "")
    bags = MB.expand_bags(args.bags)
    if args.workers < 1:
        raise CliError(f"--workers must be >= 1, got {args.workers}")
    out_dir = Path(args.out_dir)
    jobs = MB.plan(bags, out_dir, args.image_topic, args.prefix, args.overwrite)
    engine_config(args.config, args.set)          # config errors before any worker starts
    engine_args = {"config": args.config, "set": list(args.set), "classes": args.classes,
                   "image_topic": args.image_topic, "prefix": args.prefix,
                   "storage": args.storage, "overwrite": args.overwrite, "limit": args.limit}
    # complete outputs of an earlier run are kept (no engine is built for them)
    kept = [MB.kept_record(j) for j in jobs if j.out.exists() and not args.overwrite]
    todo = [j for j in jobs if args.overwrite or not j.out.exists()]
    ctx = D.context_from_env()
    if not todo:
        records = []
    elif ctx is None:
        records = MB.run_jobs(todo, engine_args, args.workers)
    else:
        try:
            records = MB.run_rank(todo, engine_args, ctx)
        finally:
            D.close()
        if records is None:
            return 0
    if ctx is not None and not ctx.is_main:
        return 0
    records = sorted(records + kept, key=lambda r: r["index"])
    summary = MB.write_summary(records, out_dir)
    MB.print_summary(summary, out_dir)
    return 0 if summary["complete"] else 1


def add_parser(sub) -> None:
    p = sub.add_parser("infer-bags", help="bag -> bag over many bags with a bounded number of "
                       "workers (or torchrun ranks)")
    add_engine_args(p)
    p.add_argument("--bags", nargs="+", required=True,
                   help="bag directories, folders holding bags, or .txt lists of bag paths")
    p.add_argument("--image-topic", required=True)
    p.add_argument("--out-dir", required=True, help="output folder: <out-dir>/<bag name>")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes (each loads the engine once); under torchrun the "
                        "ranks are the workers")
    p.add_argument("--classes", help="vocabulary from a class-name file (default: the config's)")
    p.add_argument("--prefix", default="/ovseg", help="namespace of the output topics")
    p.add_argument("--storage", choices=("sqlite3", "mcap"),
                   help="storage of the output bags (default: that of each input)")
    p.add_argument("--overwrite", action="store_true",
                   help="redo bags whose output exists (default: keep them)")
    p.add_argument("--limit", type=int, help="stop after this many images per bag")
    p.set_defaults(func=run)
