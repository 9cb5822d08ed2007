"""``ovseg-eval tracking``: MOTA, IDF1 and ID switches of the tracker on a sequence with
ground-truth instance ids (synthetic or a bag).
"""
from __future__ import annotations

import json
from pathlib import Path

from ..bag_sources import SEGMENTS_TYPE
from ..engine_args import CliError, classes_arg, engine_config, load_engine_from
from .common import add_engine_args


def run(args) -> int:
    """MOTA / IDF1 / ID switches of the tracker (eval/tracking_eval.py)."""
    from ...core.tracking import TrackerSettings
    from ..tracking_eval import (bag_frames, evaluate_tracking, oracle_predictor,
                                synthetic_frames, write_report)
    from ..tracking_metrics import format_summary
    from ..tracking_sequence import CLASSES, IS_THING

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


def add_parser(sub) -> None:
    p = sub.add_parser("tracking", help="MOTA, IDF1 and ID switches of the tracker on a sequence "
                                        "with ground-truth instance ids")
    add_engine_args(p)
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
    p.set_defaults(func=run)
