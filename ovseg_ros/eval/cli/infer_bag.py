"""``ovseg-eval infer-bag``: bag -> bag, a new bag with the predicted topics (and the 3D outputs
where the bag has depth).
"""
from __future__ import annotations

from pathlib import Path

from ..bags import COMPRESSED_TYPE, IMAGE_TYPE
from ..engine_args import classes_arg, engine_config
from ..preflight import check_output_bag, check_prefix_free, require_topics
from .common import add_engine_args, load_engine


def run(args) -> int:
    from ..bag_infer import OUTPUT_TOPICS, infer_bag

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


def add_parser(sub) -> None:
    p = sub.add_parser("infer-bag", help="write a new bag with the predicted label topics")
    add_engine_args(p)
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
    p.set_defaults(func=run)
