"""``ovseg-eval dataset``: evaluate an engine on a benchmark layout or on image/label folders.
"""
from __future__ import annotations

from pathlib import Path

from ...core.class_names import ClassList
from ..datasets import LAYOUTS, folder, open_dataset
from ..engine_args import CliError, classes_arg
from ..runner import dataset_items
from .common import add_engine_args, add_run_args, evaluate


def run(args) -> int:
    if args.kind == "folder":
        if not (args.images and args.labels):
            raise CliError("--kind folder needs --images DIR and --labels DIR")
        classes = classes_arg(args.classes, None, "--kind folder")
        ds = folder(Path(args.images), Path(args.labels), classes,
                    ignore_index=None if args.ignore_index < 0 else args.ignore_index,
                    reduce_zero_label=args.reduce_zero_label)
        source = {"kind": "folder", "images": Path(args.images).name,
                  "labels": Path(args.labels).name, "ignore_index": args.ignore_index,
                  "reduce_zero_label": args.reduce_zero_label}
    else:
        if not args.root:
            raise CliError(f"--kind {args.kind} needs --root DIR")
        ds = open_dataset(args.kind, Path(args.root), args.split)
        if args.classes:   # other names (synonyms, prompts) for the same classes
            classes = classes_arg(args.classes, None, "")
            if len(classes) != len(ds.classes):
                raise CliError(f"--classes {args.classes} has {len(classes)} classes but "
                               f"{args.kind} has {len(ds.classes)}")
            ds.classes = ClassList(classes.names, classes.is_thing or ds.classes.is_thing)
        source = {"kind": args.kind, "root": Path(args.root).name, "split": args.split}
    return evaluate(args, ds.classes, dataset_items(ds), source, ds.panoptic, len(ds))


def add_parser(sub) -> None:
    p = sub.add_parser("dataset", help="evaluate on a benchmark layout or image/label folders")
    add_engine_args(p)
    p.add_argument("--kind", required=True, choices=sorted(LAYOUTS) + ["folder"])
    p.add_argument("--root", help="dataset root (see docs/evaluation.md for each layout)")
    p.add_argument("--split", help="split name (defaults per kind: validation, val, val2017)")
    p.add_argument("--classes", help="class-name file (folder: required; others: replaces "
                   "the bundled names, same number of classes)")
    p.add_argument("--images", help="folder: image directory")
    p.add_argument("--labels", help="folder: label PNG directory (same relative stems)")
    p.add_argument("--ignore-index", type=int, default=255, help="folder: ignored label value "
                   "(-1 = none)")
    p.add_argument("--reduce-zero-label", action="store_true",
                   help="folder: 0 is ignored and v -> v-1 (ADE20K convention)")
    add_run_args(p)
    p.set_defaults(func=run)
