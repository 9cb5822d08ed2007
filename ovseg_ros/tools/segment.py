"""``ovseg-segment``: segment images, folders or videos into label PNGs and overlays.

    ovseg-segment --config cfg.yaml --vocab person "sofa,couch" floor -- img.jpg photos/ clip.mp4
    ovseg-segment --config cfg.yaml --classes ade150 --panoptic --out out/seg photos/

For each image (or video frame) ``<name>``, under ``--out``:

    <name>_semantic.png   16-bit PNG of class ids (65535 = unlabelled)
    <name>_overlay.png    colour overlay (stable colour per class id; RANDOM WEIGHTS banner
                          when the weights are random)
    <name>_panoptic.png   with --panoptic: COCO panoptic PNG (id = R + 256 G + 256^2 B)

plus ``panoptic.json`` (COCO panoptic style: categories = the vocabulary,
annotations with segments_info) with --panoptic, and ``vocabulary.json``.
With ``--depth FILE`` (one image input; the depth registered to it: a 16-bit PNG in mm,
or .npy / .tiff in float metres or uint16 mm) and its intrinsics (``--fx --fy --cx --cy``
or ``--camera-info`` YAML), also

    <name>_cloud.ply         the labelled cloud's valid points (binary PLY: x y z, red green
                             blue, label = class id, instance = panoptic segment id)
    <name>_segments_3d.json  the segments located in 3D (centroid, size, depth range)

    ovseg-segment --config cfg.yaml --vocab chair table -- rgb.png --depth depth.png \
        --fx 615 --fy 615 --cx 320 --cy 240

Video frames are named ``<video stem>/frame_<index>``; ``--every N`` keeps
every N-th frame. Files are written under temporary names and renamed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..core.types import UNLABELED

PROG = "ovseg-segment"
#: what the PNGs and the panoptic JSON are made of (keys of core/outputs.py)
SEGMENT_OUTPUTS = frozenset({"semantic", "panoptic", "segments", "colored"})
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


class SegmentCliError(ValueError):
    """An input or argument cannot be used; the message says which."""


def iter_inputs(paths: Sequence[str], every: int = 1) -> Iterator[Tuple[str, np.ndarray]]:
    """(output name, RGB frame) for every image, image in a folder, or video frame."""
    import cv2

    for raw in paths:
        p = Path(raw).expanduser()
        if not p.exists():
            raise SegmentCliError(f"input {p} does not exist")
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise SegmentCliError(f"folder {p} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            for f in files:
                yield str(f.relative_to(p).with_suffix("")), _read(f)
        elif p.suffix.lower() in VIDEO_SUFFIXES:
            cap = cv2.VideoCapture(str(p))
            if not cap.isOpened():
                raise SegmentCliError(f"cannot open video {p} (unreadable or codec missing)")
            idx = 0
            try:
                while True:
                    ok, bgr = cap.read()
                    if not ok:
                        break
                    if idx % every == 0:
                        yield f"{p.stem}/frame_{idx:06d}", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                    idx += 1
            finally:
                cap.release()
            if idx == 0:
                raise SegmentCliError(f"video {p} has no readable frames")
        elif p.suffix.lower() in IMAGE_SUFFIXES:
            yield p.stem, _read(p)
        else:
            raise SegmentCliError(f"input {p}: unknown file type {p.suffix!r}; images "
                                  f"{IMAGE_SUFFIXES} or videos {VIDEO_SUFFIXES} are accepted")


def _read(path: Path) -> np.ndarray:
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SegmentCliError(f"cannot read image {path} (unreadable or not an image)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _write_png(path: Path, arr: np.ndarray) -> None:
    """Write via a temporary name so a crash never leaves a truncated PNG under the real name."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    if arr.ndim == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(tmp), arr):
        raise SegmentCliError(f"cannot write {path}")
    os.replace(tmp, path)


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def segment_all(seg, inputs: Sequence[str], out: Path, *, panoptic: bool = False,
                every: int = 1, alpha: float = 0.5, progress: bool = True,
                depth: Optional[dict] = None) -> dict:
    """``depth``: ``tools/depth_files.load_depth`` arguments (path and intrinsics) for the
    single image input, or None."""
    from tqdm import tqdm

    from ..core.camera_outputs import CameraOutputs
    from ..eval.datasets import panoptic_id_to_rgb
    from .depth_files import load_depth, write_ply

    vocab = seg.vocabulary
    categories = [{"id": i, "name": syns[0], "synonyms": list(syns), "isthing": int(t)}
                  for i, (syns, t) in enumerate(zip(vocab.synonyms, vocab.is_thing))]
    annotations = []
    n = 0
    seen: set = set()
    # one output path for the run, as the node has one per camera
    outputs = CameraOutputs("segment", overlay_alpha=alpha)
    for name, rgb in tqdm(iter_inputs(inputs, every), disable=not progress, unit="img",
                          desc="segment"):
        if name in seen:   # e.g. a/photo.jpg and b/photo.jpg: the second would overwrite the first
            raise SegmentCliError(f"two inputs give the output name {name!r}; segment them "
                                  "with separate --out directories (or pass their parent folder)")
        seen.add(name)
        pred = seg.predict(rgb)
        dframe = load_depth(colour_size=rgb.shape[:2], **depth) if depth else None
        # the node's output path (core/camera_outputs.py): same label rule, overlay, banner
        wanted = SEGMENT_OUTPUTS | ({"points", "segments_3d"} if dframe is not None else set())
        prod = outputs.process(pred, rgb, name, wanted=wanted, depth=dframe)
        if dframe is not None:
            write_ply(out / f"{name}_cloud.ply", prod.cloud)
            _write_json(out / f"{name}_segments_3d.json",
                        {"frame": "camera optical (x right, y down, z forward), metres",
                         "intrinsics": dframe.intrinsics.__dict__,
                         "depth": dframe.stats.as_dict(), "segments": prod.segments_3d})
        _write_png(out / f"{name}_semantic.png", prod.semantic)
        _write_png(out / f"{name}_overlay.png", prod.colored)
        if panoptic:
            _write_png(out / f"{name}_panoptic.png", panoptic_id_to_rgb(prod.panoptic))
            annotations.append({
                "image_id": name, "file_name": f"{name}_panoptic.png",
                "height": int(rgb.shape[0]), "width": int(rgb.shape[1]),
                "segments_info": [{"id": d["id"], "category_id": d["class_id"],
                                   "isthing": int(d["is_thing"]), "score": d["score"],
                                   "area": d["area"], "bbox": d["bbox"], "iscrowd": 0}
                                  for d in prod.segments]})
        n += 1
    _write_json(out / "vocabulary.json", {"categories": categories,
                                          "unlabeled": UNLABELED,
                                          "random_weights": bool(seg.random_weights)})
    if panoptic:
        _write_json(out / "panoptic.json", {"categories": categories,
                                            "annotations": annotations})
    return {"images": n, "out": str(out), "random_weights": bool(seg.random_weights)}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    ap.add_argument("inputs", nargs="+", help="image files, folders of images, video files")
    ap.add_argument("--config", help="engine config (YAML)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config key (repeatable)")
    voc = ap.add_mutually_exclusive_group()
    voc.add_argument("--vocab", nargs="+", help="classes ('sofa,couch' = synonyms of one class); "
                     "one bundled list name (ade847, ...) stands for that list")
    voc.add_argument("--classes",
                     help="class-name file or bundled list (ade150, coco_panoptic ...)")
    ap.add_argument("--out", default="out/segment", help="output directory")
    ap.add_argument("--panoptic", action="store_true", help="also write COCO panoptic PNG + JSON")
    ap.add_argument("--every", type=int, default=1, help="video: keep every N-th frame")
    ap.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    ap.add_argument("--quiet", action="store_true")
    d = ap.add_argument_group("depth (one image input): labelled cloud (PLY) and 3D segments")
    d.add_argument("--depth", help="registered depth: 16-bit PNG (mm), .npy or .tiff "
                   "(float metres or uint16 mm)")
    for k in ("fx", "fy", "cx", "cy"):
        d.add_argument(f"--{k}", type=float, help="intrinsics of the (rectified) image, pixels")
    d.add_argument("--camera-info", help="camera_info YAML (camera_calibration format)")
    d.add_argument("--depth-rectified", action="store_true",
                   help="the images are rectified although the camera_info has distortion")
    return ap


def _depth_args(args) -> Optional[dict]:
    """load_depth's arguments, checked before the engine loads."""
    intr = [args.fx, args.fy, args.cx, args.cy]
    if not args.depth:
        if any(v is not None for v in intr) or args.camera_info:
            raise SegmentCliError("--fx/--fy/--cx/--cy/--camera-info need --depth")
        return None
    one = len(args.inputs) == 1 and Path(args.inputs[0]).suffix.lower() in IMAGE_SUFFIXES
    if not one:
        raise SegmentCliError("--depth needs exactly one image input (the colour image the "
                              "depth is registered to)")
    if not Path(args.depth).expanduser().is_file():
        raise SegmentCliError(f"depth file {args.depth} does not exist")
    return {"path": Path(args.depth).expanduser(), "fx": args.fx, "fy": args.fy, "cx": args.cx,
            "cy": args.cy, "camera_info": Path(args.camera_info) if args.camera_info else None,
            "rectified": args.depth_rectified}


def main(argv: Optional[List[str]] = None) -> int:
    from ..config import ConfigError
    from ..core.class_names import load_class_file
    from ..core.vocabulary import VocabularyError
    from ..eval.cli import CliError, load_engine
    from ..segmenter import InputError

    args = build_parser().parse_args(argv)
    from ..core.depth import DepthError

    errors: list = [SegmentCliError, CliError, ConfigError, VocabularyError, InputError,
                    FileNotFoundError, DepthError]
    try:
        from ..weights import WeightsError
        errors.append(WeightsError)
    except ImportError:
        pass
    try:
        if args.every < 1:
            raise SegmentCliError("--every must be >= 1")
        if not 0.0 <= args.alpha <= 1.0:
            raise SegmentCliError("--alpha must be in [0, 1]")
        missing = [p for p in args.inputs if not Path(p).expanduser().exists()]
        if missing:   # before the engine loads: a typo should not cost a model load
            raise SegmentCliError(f"input {missing[0]} does not exist")
        try:
            classes = load_class_file(args.classes) if args.classes else None
        except ValueError as exc:    # a malformed line; the message names file and line
            raise SegmentCliError(str(exc)) from exc
        depth = _depth_args(args)
        seg = load_engine(args, classes)
        if args.vocab:
            seg.set_vocabulary(args.vocab)
        info = segment_all(seg, args.inputs, Path(args.out), panoptic=args.panoptic,
                           every=args.every, alpha=args.alpha, progress=not args.quiet,
                           depth=depth)
    except tuple(errors) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    print(f"segmented {info['images']} images -> {info['out']}"
          + ("  (RANDOM WEIGHTS: the labels are meaningless)" if info["random_weights"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
