"""``ovseg-eval make-bag``: an image folder (+ label folder) written as a bag.
"""
from __future__ import annotations

from pathlib import Path

from ..datasets import DatasetError
from ..engine_args import CliError


def run(args) -> int:
    """Image folder (+ label folder) -> bag, so folders can be replayed and evaluated as bags."""
    from ..bags import write_image_bag
    from ..datasets import _list_images, read_label_png, read_rgb

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


def add_parser(sub) -> None:
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
    p.set_defaults(func=run)
