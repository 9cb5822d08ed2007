"""``ovseg-eval``: evaluate an engine on rosbags or benchmark datasets, merge shards, bag -> bag.

    ovseg-eval bag      --config cfg.yaml --bag BAG --image-topic /cam/image \\
                        --label-topic /cam/labels --classes ade150 --out out/eval
    ovseg-eval dataset  --config cfg.yaml --kind ade150 --root data/ADEChallengeData2016 \\
                        --out out/ade --shard 0/4 [--limit 50] [--resume]
    ovseg-eval merge    out/ade/state_shard*of4.npz --out out/ade
    ovseg-eval infer-bag --config cfg.yaml --bag BAG --image-topic /cam/image --out BAG_OUT
    ovseg-eval infer-bags --config cfg.yaml --bags DIR --image-topic /cam/image \\
                        --out-dir OUT [--workers 2]
    ovseg-eval make-bag --images DIR [--labels DIR] --out BAG
    ovseg-eval tracking (--synthetic | --bag BAG --image-topic T --panoptic-topic P \
                        --segments-topic S) (--oracle [--noise split] | --config cfg.yaml) \
                        --out out/tracking

Under torchrun (``torchrun --nproc-per-node N -m ovseg_ros.eval dataset ...``)
every rank evaluates shard RANK/WORLD_SIZE and rank 0 writes the report of
the exactly reduced states (see ovseg_ros/eval/distributed.py).

Cheap checks (paths, bag metadata, topics, class files, existing states)
run before the engine is built.

Errors (missing topics, wrong encodings, class files that do not fit the
labels, unreadable files) are printed as one line naming the problem, and
the exit status is 2. Results are written under temporary names and renamed
only when complete.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterable, List, Optional, Tuple


from ..core.class_names import ClassList
from .engine_args import (CliError, classes_arg, engine_config, load_engine_from,  # noqa: F401
                          parse_overrides)
from .bag_sources import SEGMENTS_TYPE, BagTopics, bag_targets, check_encodings, iter_synced
from .bags import BagError, COMPRESSED_TYPE, IMAGE_TYPE, frame_rgb
from .datasets import DatasetError, folder, open_dataset, LAYOUTS
from .metrics import IGNORE, LabelError
from .preflight import (check_output_bag, check_prefix_free, first_messages, open_checked,
                        require_topics)
from .runner import EvalItem, dataset_items, finish, open_state, run_evaluation, state_path
from .state import EvalState, StateError

PROG = "ovseg-eval"


# --- shared helpers -----------------------------------------------------------------------------
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


# --- sources ------------------------------------------------------------------------------------
def bag_items(args, stats: dict, topics: BagTopics) -> Iterable[EvalItem]:
    reader = open_checked(Path(args.bag))
    try:
        for pos, (frame, got) in enumerate(iter_synced(reader, topics, stats)):
            check_encodings(got, topics)
            ign = ignore_value(args, got["label"].encoding) if "label" in got else None
            yield EvalItem(pos, frame.key, lambda frame=frame: frame_rgb(frame),
                           lambda frame=frame, got=got, ign=ign: bag_targets(frame, got, ign))
    finally:
        reader.close()


def ignore_value(args, encoding: str) -> Optional[int]:
    if args.ignore_label is not None:
        return None if args.ignore_label == "none" else int(args.ignore_label)
    return {"16UC1": 65535, "mono16": 65535, "mono8": 255, "8UC1": 255}.get(encoding, IGNORE)


# --- commands -------------------------------------------------------------------------------------
def _evaluate(args, classes: ClassList, items: Iterable[EvalItem], source: dict, panoptic: bool,
              total: Optional[int], stats: Optional[dict] = None) -> int:
    from . import distributed as D

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
        _print_summary(res, out)
        return 0
    finally:
        if ctx is not None:
            D.close()


def cmd_bag(args) -> int:
    classes = classes_arg(args.classes, None, "bag evaluation")
    if not (args.label_topic or args.panoptic_topic):
        raise CliError("bag evaluation needs --label-topic (class ids) and/or --panoptic-topic "
                       "with --segments-topic")
    if bool(args.panoptic_topic) != bool(args.segments_topic):
        raise CliError("--panoptic-topic and --segments-topic go together (segment ids, and "
                       f"{SEGMENTS_TYPE} messages giving each id's class)")
    topics = BagTopics(args.image_topic, args.label_topic, args.panoptic_topic,
                       args.segments_topic)
    named = [args.image_topic] + list(topics.roles().values())
    if len(set(named)) != len(named):
        raise CliError("--image-topic, --label-topic, --panoptic-topic and --segments-topic "
                       "must be different topics")
    if args.ignore_label is not None and args.ignore_label != "none":
        try:
            int(args.ignore_label)
        except ValueError:
            raise CliError(f"--ignore-label must be an integer or 'none', got "
                           f"{args.ignore_label!r}") from None
    stats: dict = {}
    source = {"kind": "bag", "bag": Path(args.bag).name, "image_topic": args.image_topic,
              "label_topic": args.label_topic, "ignore_label": args.ignore_label}
    if args.panoptic_topic:
        source.update(panoptic_topic=args.panoptic_topic, segments_topic=args.segments_topic)
    # bag, metadata and topics are checked before the engine is built
    counts = require_topics(Path(args.bag), [
        ("image", args.image_topic, (IMAGE_TYPE, COMPRESSED_TYPE)),
        ("label", args.label_topic, (IMAGE_TYPE,)),
        ("panoptic", args.panoptic_topic, (IMAGE_TYPE,)),
        ("segments", args.segments_topic, (SEGMENTS_TYPE,))])
    # the first ground-truth messages show wrong encodings before the engine is built
    check_encodings(first_messages(Path(args.bag), topics.roles()), topics)
    return _evaluate(args, classes, bag_items(args, stats, topics), source,
                     bool(args.panoptic_topic), counts[args.image_topic], stats)


def cmd_dataset(args) -> int:
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
    return _evaluate(args, ds.classes, dataset_items(ds), source, ds.panoptic, len(ds))


def cmd_merge(args) -> int:
    paths = [Path(p) for p in args.states]
    states = [EvalState.load(p) for p in paths]
    merged = EvalState.merge(states, [str(p) for p in paths])
    out = Path(args.out)
    merged.save(out / "state_merged.npz")
    res = finish(merged, out, report=not args.no_report)
    _print_summary(res, out)
    return 0


def cmd_infer_bag(args) -> int:
    from .bag_infer import infer_bag

    from .bag_infer import OUTPUT_TOPICS

    classes = classes_arg(args.classes, None, "") if args.classes else None
    # cheap checks first: a topic typo must not wait for (or read as) a model loading error
    require_topics(Path(args.bag), [("image", args.image_topic, (IMAGE_TYPE, COMPRESSED_TYPE))])
    check_output_bag(Path(args.bag), Path(args.out), args.overwrite)
    check_prefix_free(Path(args.bag), args.prefix, OUTPUT_TOPICS)
    engine_config(args.config, args.set)
    seg = load_engine(args, classes)
    info = infer_bag(seg, Path(args.bag), Path(args.out), args.image_topic, prefix=args.prefix,
                     storage=args.storage, overwrite=args.overwrite, limit=args.limit,
                     progress=not args.quiet, depth_topic=args.depth_topic,
                     camera_info_topic=args.camera_info_topic, depth_slop=args.depth_slop,
                     cloud_stride=args.cloud_stride)
    print(f"wrote {info['output']}: {info['frames']} frames; topics: "
          + ", ".join(f"{t} ({n})" for t, n in info["topics"].items()))
    if "depth" in info:
        print("depth: " + ", ".join(f"{k} {v}" for k, v in info["depth"].items()
                                    if k != "refused_first"))
    return 0


def cmd_infer_bags(args) -> int:
    from . import distributed as D
    from . import multi_bag as MB

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


def cmd_make_bag(args) -> int:
    """Image folder (+ label folder) -> bag, so folders can be replayed and evaluated as bags."""
    from .bags import write_image_bag
    from .datasets import _list_images, read_label_png, read_rgb

    images_dir = Path(args.images)
    if not images_dir.is_dir():
        raise CliError(f"--images {images_dir} is not a directory")
    images = _list_images(images_dir)
    if not images:
        raise CliError(f"no images under {images_dir}")
    if args.rate <= 0:
        raise CliError("--rate must be > 0")
    period = int(round(1e9 / args.rate))

    def frames():
        for i, img in enumerate(images):
            labels = None
            if args.labels:
                lab = Path(args.labels) / img.relative_to(images_dir).with_suffix(".png")
                if not lab.is_file():
                    raise DatasetError(f"image {img} has no label file {lab}")
                labels = read_label_png(lab)
                if labels.ndim != 2:
                    raise DatasetError(f"label {lab} is not a single-channel class-id PNG")
                # the folder's ignore value becomes 16UC1's "unlabelled" (65535), which
                # `ovseg-eval bag` ignores by default; a kept 255 would be read as class 255
                ignored = labels == args.ignore_index if args.ignore_index >= 0 else None
                labels = labels.astype("uint16")
                if ignored is not None:
                    labels[ignored] = 65535
            yield args.start_ns + i * period, read_rgb(img), labels

    path = write_image_bag(Path(args.out), frames(), args.image_topic,
                           args.label_topic if args.labels else None, storage=args.storage,
                           frame_id=args.frame_id)
    print(f"wrote {path}: {len(images)} images")
    return 0


def cmd_tracking(args) -> int:
    """MOTA / IDF1 / ID switches of the tracker (eval/tracking_eval.py)."""
    from ..core.tracking import TrackerSettings
    from .tracking_eval import (bag_frames, evaluate_tracking, oracle_predictor,
                                synthetic_frames, write_report)
    from .tracking_metrics import format_summary
    from .tracking_sequence import CLASSES, IS_THING

    if args.synthetic == bool(args.bag):
        raise CliError("give either --synthetic or --bag")
    if args.oracle == bool(args.config):
        raise CliError("give either --oracle (ground-truth masks) or --config (an engine)")
    if args.noise != "none" and not args.oracle:
        raise CliError("--noise applies to --oracle masks only")
    if args.synthetic:
        names, flags = list(CLASSES), list(IS_THING)
        frames = synthetic_frames(args.frames)
        source = f"synthetic sequence, {args.frames} frames"
    else:
        if not (args.image_topic and args.panoptic_topic and args.segments_topic):
            raise CliError("--bag needs --image-topic, --panoptic-topic and --segments-topic")
        classes = classes_arg(args.classes, None, "a tracking bag")
        names = list(classes.names)
        flags = list(classes.is_thing) if classes.is_thing else [True] * len(names)
        occl = None
        if args.occlusions:
            occl = {int(k): v for k, v in json.loads(Path(args.occlusions).read_text()).items()}
        frames = bag_frames(Path(args.bag), args.image_topic, args.panoptic_topic,
                            args.segments_topic, occl)
        source = f"bag {args.bag}"
    cfg = engine_config(args.config, args.set)
    settings = TrackerSettings.from_config(cfg)
    if args.oracle:
        predict = oracle_predictor(names, flags, args.noise, seed=args.seed)
        what = f"ground-truth masks, noise {args.noise}"
    else:
        seg = load_engine_from(cfg, None)
        seg.set_vocabulary(names, flags)
        what = f"engine {cfg['engine']}"

        def predict(frame):
            return seg.predict(frame.rgb)

    def stuff(c: int) -> bool:
        return not flags[c] if 0 <= c < len(flags) else False

    summary = evaluate_tracking(frames, predict, settings, stuff)
    title = f"Tracking: {source}, {what}"
    report = write_report(Path(args.out), summary, title, settings)
    print(format_summary(summary, title))
    print(f"-> {report}")
    return 0


def _print_summary(res: dict, out: Path) -> None:
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


# --- argument parsing ----------------------------------------------------------------------------
def _engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="engine config (YAML; same keys as the node's parameters)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set device=cuda")


def _run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output directory (state, results, report)")
    p.add_argument("--shard", default="0/1",
                   help="evaluate shard i of n (items p with p %% n == i)")
    p.add_argument("--limit", type=int, help="stop after this many items (quick runs)")
    p.add_argument("--resume", action="store_true", help="continue the saved state in --out")
    p.add_argument("--save-every", type=int, default=25, help="save the state every N items")
    p.add_argument("--samples", type=int, default=4, help="sample overlays kept for the report")
    p.add_argument("--no-report", action="store_true", help="results.json only")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("bag", help="evaluate on a rosbag2 with image and label topics")
    _engine_args(p)
    p.add_argument("--bag", required=True, help="rosbag2 directory (sqlite3 or mcap)")
    p.add_argument("--image-topic", required=True)
    p.add_argument("--label-topic",
                   help="ground-truth class ids (16UC1, mono16, mono8 or 32SC1), paired with "
                        "images by header stamp")
    p.add_argument("--panoptic-topic",
                   help="ground-truth panoptic segment ids (32SC1, 0 = void; or rgb8 in the COCO "
                        "encoding R + 256 G + 256^2 B) for PQ / SQ / RQ")
    p.add_argument("--segments-topic",
                   help=f"with --panoptic-topic: {SEGMENTS_TYPE} giving each segment id's class")
    p.add_argument("--classes", required=True, help="class-name file or bundled list "
                   "(line i = class id i)")
    p.add_argument("--ignore-label", help="label value not evaluated (default: 65535 for "
                   "16UC1/mono16, 255 for mono8, -1 for 32SC1; 'none' = evaluate all)")
    _run_args(p)
    p.set_defaults(func=cmd_bag)

    p = sub.add_parser("dataset", help="evaluate on a benchmark layout or image/label folders")
    _engine_args(p)
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
    _run_args(p)
    p.set_defaults(func=cmd_dataset)

    p = sub.add_parser("merge", help="add the saved states of shards into one result")
    p.add_argument("states", nargs="+", help="state_shard*.npz files")
    p.add_argument("--out", required=True)
    p.add_argument("--no-report", action="store_true")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("infer-bag", help="write a new bag with the predicted label topics")
    _engine_args(p)
    p.add_argument("--bag", required=True)
    p.add_argument("--image-topic", required=True)
    p.add_argument("--out", required=True, help="output bag directory")
    p.add_argument("--classes", help="vocabulary from a class-name file (default: the config's)")
    p.add_argument("--prefix", default="/ovseg", help="namespace of the output topics")
    p.add_argument("--storage", choices=("sqlite3", "mcap"),
                   help="storage of the output bag (default: that of the input)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--limit", type=int, help="stop after this many images")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--depth-topic", help="registered depth of the image topic (default: "
                   "<ns>/depth beside <ns>/<image> when the bag has it); adds points, "
                   "segments_3d and markers")
    p.add_argument("--camera-info-topic", help="its camera_info (default: <ns>/camera_info)")
    p.add_argument("--depth-slop", type=float, default=0.02,
                   help="largest depth-to-colour stamp difference paired, seconds")
    p.add_argument("--cloud-stride", type=int, default=1,
                   help="keep every n-th row and column of the organised cloud")
    p.set_defaults(func=cmd_infer_bag)

    p = sub.add_parser("infer-bags", help="bag -> bag over many bags with a bounded number of "
                       "workers (or torchrun ranks)")
    _engine_args(p)
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
    p.set_defaults(func=cmd_infer_bags)

    p = sub.add_parser("make-bag", help="write a bag from an image folder (+ 16UC1 labels)")
    p.add_argument("--images", required=True)
    p.add_argument("--labels", help="label PNG folder (same relative stems), written as 16UC1")
    p.add_argument("--out", required=True, help="output bag directory")
    p.add_argument("--image-topic", default="/camera/image")
    p.add_argument("--label-topic", default="/camera/labels")
    p.add_argument("--frame-id", default="camera")
    p.add_argument("--rate", type=float, default=10.0, help="frames per second of the stamps")
    p.add_argument("--start-ns", type=int, default=10**9, help="stamp of the first frame (ns)")
    p.add_argument("--ignore-index", type=int, default=255,
                   help="label value written as 65535 (unlabelled, ignored by 'ovseg-eval bag'); "
                        "-1 = keep all values")
    p.add_argument("--storage", choices=("sqlite3", "mcap"), default="sqlite3")
    p.set_defaults(func=cmd_make_bag)

    p = sub.add_parser("tracking", help="MOTA, IDF1 and ID switches of the tracker on a sequence "
                                        "with ground-truth instance ids")
    _engine_args(p)
    p.add_argument("--synthetic", action="store_true",
                   help="the synthetic crossing/occlusion sequence (in memory)")
    p.add_argument("--frames", type=int, default=60, help="frames of --synthetic")
    p.add_argument("--bag", help="rosbag2 with instance ids that persist across frames")
    p.add_argument("--image-topic")
    p.add_argument("--panoptic-topic", help="32SC1 instance ids (0 = none)")
    p.add_argument("--segments-topic", help=f"{SEGMENTS_TYPE}: each instance id's class")
    p.add_argument("--classes", help="class list of the bag (file or bundled name)")
    p.add_argument("--occlusions", help="JSON {frame index: [occluded ids]} (the sample bag's "
                                        "side file): switches there are reported apart")
    p.add_argument("--oracle", action="store_true",
                   help="track the ground-truth masks (the tracker alone, no engine)")
    p.add_argument("--noise", default="none",
                   choices=("none", "erode", "dilate", "split", "merge"),
                   help="detector-like noise on the --oracle masks")
    p.add_argument("--seed", type=int, default=0, help="seed of the --oracle ids and noise")
    p.add_argument("--out", required=True, help="output directory (results.json, report.md)")
    p.set_defaults(func=cmd_tracking)
    return ap


def user_errors() -> tuple:
    from ..config import ConfigError
    from ..core.vocabulary import VocabularyError
    from ..segmenter import InputError

    from .tracking_metrics import TrackingEvalError

    errs = [CliError, BagError, DatasetError, LabelError, StateError, ConfigError,
            VocabularyError, InputError, FileNotFoundError, TrackingEvalError]
    try:
        from ..weights import WeightsError
        errs.append(WeightsError)
    except ImportError:
        pass
    return tuple(errs)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_counts(args)
        return args.func(args)
    except user_errors() as exc:
        # one line, whatever the underlying library put in its message
        text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"{PROG}: error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; the saved state allows --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
