"""``ovseg-eval bag``: evaluate an engine on a rosbag2 with image and ground-truth topics (class ids
and/or panoptic segment ids).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

from ..bag_sources import SEGMENTS_TYPE, BagTopics, bag_targets, check_encodings, iter_synced
from ..bags import COMPRESSED_TYPE, IMAGE_TYPE, frame_rgb
from ..engine_args import CliError, classes_arg
from ..metrics import IGNORE
from ..preflight import first_messages, open_checked, require_topics
from ..runner import EvalItem
from .common import add_engine_args, add_run_args, evaluate


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


def run(args) -> int:
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
    return evaluate(args, classes, bag_items(args, stats, topics), source,
                     bool(args.panoptic_topic), counts[args.image_topic], stats)


def add_parser(sub) -> None:
    p = sub.add_parser("bag", help="evaluate on a rosbag2 with image and label topics")
    add_engine_args(p)
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
    add_run_args(p)
    p.set_defaults(func=run)
