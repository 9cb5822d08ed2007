"""Readers of standard segmentation benchmark layouts and of plain image/label folders.

Every reader returns a :class:`Dataset`: a class list (bundled class-name
file) and samples sorted by a stable key (the image path relative to the
dataset root), each loading an RGB image and a :class:`Target`. Label PNGs
are decoded with each benchmark's own convention into class ids in
``[0, C)`` with :data:`IGNORE` for pixels that are not evaluated:

=================  ========================  ==========================================
kind               classes (file)            label decoding
=================  ========================  ==========================================
ade150             ade150                    0 ignored, v -> v-1
ade847             ade847                    16-bit TIFF: 65535 ignored; raw
pascal_context59   pascal_context59          0 (background) and 255 ignored, v -> v-1
pascal_context459  pascal_context459         16-bit TIFF: 65535 ignored; raw
voc21              voc21                     255 (boundary) ignored
voc20              voc20                     0 (background) and 255 ignored, v -> v-1
coco_stuff171      coco_stuff171             *_labelTrainIds.png: 255 ignored; raw
                                             stuffthingmaps (COCO id - 1): LUT, unused ids
                                             and 255 ignored
cityscapes         cityscapes19              gtFine labelIds -> trainIds, others ignored
coco_panoptic      coco_panoptic             id = R + 256 G + 256^2 B, segments_info
                                             from the JSON; categories in id order
folder             --classes                 --ignore-index, --reduce-zero-label
=================  ========================  ==========================================
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..core.class_names import ClassList, load_class_file
from .metrics import IGNORE, semantic_from_panoptic

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class DatasetError(ValueError):
    """A dataset layout or file is missing or unreadable; the message says which and how to fix."""


@dataclass
class Target:
    """Ground truth of one image. ``segments``: panoptic id -> (class id, iscrowd)."""

    semantic: np.ndarray
    panoptic: Optional[np.ndarray] = None
    segments: Optional[Dict[int, Tuple[int, bool]]] = None


@dataclass
class Sample:
    key: str                                  # stable id, used for sharding and resuming
    load_image: Callable[[], np.ndarray]      # HxWx3 uint8 RGB
    load_target: Callable[[], Target]


@dataclass
class Dataset:
    name: str
    classes: ClassList
    samples: List[Sample] = field(default_factory=list)
    panoptic: bool = False                    # targets carry panoptic ground truth

    def __len__(self) -> int:
        return len(self.samples)


# --- file reading -----------------------------------------------------------------------------
def read_rgb(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"cannot read image {path} (missing, unreadable or not an image)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_label_png(path: Path) -> np.ndarray:
    """A label PNG as stored: palette PNGs give their indices (PIL), 16-bit PNGs their values.

    OpenCV would expand palette PNGs (PASCAL VOC) to colours, so PIL reads labels.
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode in ("RGB", "RGBA"):
                arr = np.asarray(im.convert("RGB"))
            else:
                arr = np.asarray(im)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read label image {path}: {exc}") from exc
    return arr


def _gray_label(path: Path) -> np.ndarray:
    arr = read_label_png(path)
    if arr.ndim != 2:
        raise DatasetError(f"label image {path} has shape {arr.shape}; a single-channel class-id "
                           "PNG was expected (is this a colour visualisation?)")
    return arr.astype(np.int64)


def decode_labels(raw: np.ndarray, *, ignore_index: Optional[int] = 255,
                  reduce_zero_label: bool = False, lut: Optional[np.ndarray] = None) -> np.ndarray:
    """Raw label values -> class ids with IGNORE. ``lut`` maps raw values (index) to ids."""
    raw = raw.astype(np.int64)
    if lut is not None:
        if raw.max(initial=0) >= len(lut) or raw.min(initial=0) < 0:
            raise DatasetError(f"label values {int(raw.min())}..{int(raw.max())} exceed the "
                               f"mapping table of {len(lut)} entries")
        return lut[raw]
    out = raw.copy()
    ignored = np.zeros(raw.shape, bool) if ignore_index is None else raw == ignore_index
    if reduce_zero_label:
        ignored |= raw == 0
        out -= 1
    out[ignored] = IGNORE
    return out


def _semantic_sample(key: str, image: Path, label: Path,
                     decode: Callable[[np.ndarray], np.ndarray]) -> Sample:
    return Sample(key=key, load_image=lambda: read_rgb(image),
                  load_target=lambda: Target(semantic=decode(_gray_label(label))))


def _need_dir(path: Path, what: str, hint: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{what} directory {path} not found; {hint}")
    return path


def _list_images(folder: Path) -> List[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _pair_by_stem(images: Sequence[Path], label_dir: Path, label_name: Callable[[Path], str],
                  root: Path) -> List[Tuple[str, Path, Path]]:
    pairs, missing = [], []
    for img in images:
        lab = label_dir / label_name(img)
        if not lab.is_file():
            missing.append(lab)
            continue
        pairs.append((str(img.relative_to(root)), img, lab))
    if missing:
        raise DatasetError(f"{len(missing)} of {len(images)} images have no label file, e.g. "
                           f"{missing[0]}; check the dataset root and split")
    if not pairs:
        raise DatasetError(f"no images found under {root}")
    return pairs


def _split_ids(list_file: Path) -> List[str]:
    try:
        return [l.strip() for l in list_file.read_text().splitlines() if l.strip()]
    except OSError as exc:
        raise DatasetError(f"cannot read split list {list_file}: {exc.strerror}") from exc


# --- benchmark layouts -------------------------------------------------------------------------
def ade150(root: Path, split: str = "validation") -> Dataset:
    """ADEChallengeData2016: images/<split>/*.jpg, annotations/<split>/*.png."""
    img_dir = _need_dir(root / "images" / split, "ADE20K image",
                        "pass --root .../ADEChallengeData2016 (holding images/ and annotations/)")
    lab_dir = _need_dir(root / "annotations" / split, "ADE20K annotation",
                        "pass --root .../ADEChallengeData2016")
    pairs = _pair_by_stem(_list_images(img_dir), lab_dir, lambda p: p.stem + ".png", root)
    dec = lambda raw: decode_labels(raw, ignore_index=None, reduce_zero_label=True)
    return Dataset("ade150", load_class_file("ade150"),
                   [_semantic_sample(k, i, l, dec) for k, i, l in pairs])


def _tif_ignored_65535(root: Path, img_dir: Path, lab_dir: Path, name: str) -> Dataset:
    """Images *.jpg with 16-bit TIFF labels of the same stem: class ids as stored, 65535
    ignored (the layout that FC-CLIP's and OVSeg's dataset preparation scripts write).
    Values beyond the class list are refused when read (a mixed-up class list)."""
    classes = load_class_file(name)
    pairs = _pair_by_stem(_list_images(img_dir), lab_dir, lambda p: p.stem + ".tif", root)

    def dec(raw: np.ndarray) -> np.ndarray:
        out = decode_labels(raw, ignore_index=65535)
        bad = (out != IGNORE) & (out >= len(classes))
        if bad.any():
            raise DatasetError(f"{name} label values up to {int(out[bad].max())} exceed its "
                               f"{len(classes)} classes (is this the right layout?)")
        return out
    return Dataset(name, classes, [_semantic_sample(k, i, l, dec) for k, i, l in pairs])


def ade847(root: Path, split: str = "validation") -> Dataset:
    """ADE20K-full (847 classes): ADE20K_2021_17_01/images_detectron2/<split>/*.jpg and
    annotations_detectron2/<split>/*.tif (uint16, 65535 ignored)."""
    hint = "pass --root .../ADE20K_2021_17_01 (holding images_detectron2/ and " \
           "annotations_detectron2/, as written by FC-CLIP's prepare_ade20k_full_sem_seg.py)"
    img_dir = _need_dir(root / "images_detectron2" / split, "ADE20K-full image", hint)
    lab_dir = _need_dir(root / "annotations_detectron2" / split, "ADE20K-full annotation", hint)
    return _tif_ignored_65535(root, img_dir, lab_dir, "ade847")


def pascal_context459(root: Path, split: str = "validation") -> Dataset:
    """PASCAL Context full (459 classes): pascal_ctx_d2/images/<split>/*.jpg and
    annotations_ctx459/<split>/*.tif (uint16, 65535 ignored)."""
    hint = "pass --root .../pascal_ctx_d2 (holding images/ and annotations_ctx459/, as " \
           "written by FC-CLIP's prepare_pascal_ctx_full_sem_seg.py)"
    img_dir = _need_dir(root / "images" / split, "PASCAL Context image", hint)
    lab_dir = _need_dir(root / "annotations_ctx459" / split, "PASCAL Context-459 annotation",
                        hint)
    return _tif_ignored_65535(root, img_dir, lab_dir, "pascal_context459")


def _voc_like(root: Path, split: str, label_sub: str, list_sub: str, name: str,
              reduce_zero: bool, class_file: str) -> Dataset:
    ids = _split_ids(root / "ImageSets" / list_sub / f"{split}.txt")
    img_dir = _need_dir(root / "JPEGImages", "JPEGImages", "pass --root .../VOCdevkit/VOC20xx")
    lab_dir = _need_dir(root / label_sub, label_sub, "pass --root .../VOCdevkit/VOC20xx")
    images = [img_dir / f"{i}.jpg" for i in ids]
    absent = [p for p in images if not p.is_file()]
    if absent:
        raise DatasetError(f"{len(absent)} images of split {split!r} are missing, e.g. {absent[0]}")
    pairs = _pair_by_stem(images, lab_dir, lambda p: p.stem + ".png", root)
    dec = lambda raw: decode_labels(raw, ignore_index=255, reduce_zero_label=reduce_zero)
    return Dataset(name, load_class_file(class_file),
                   [_semantic_sample(k, i, l, dec) for k, i, l in pairs])


def voc21(root: Path, split: str = "val") -> Dataset:
    return _voc_like(root, split, "SegmentationClass", "Segmentation", "voc21", False, "voc21")


def voc20(root: Path, split: str = "val") -> Dataset:
    return _voc_like(root, split, "SegmentationClass", "Segmentation", "voc20", True, "voc20")


def pascal_context59(root: Path, split: str = "val") -> Dataset:
    """mmseg layout: VOC2010/JPEGImages, SegmentationClassContext, ImageSets/SegmentationContext."""
    return _voc_like(root, split, "SegmentationClassContext", "SegmentationContext",
                     "pascal_context59", True, "pascal_context59")


#: COCO category ids that COCO-Stuff uses (80 things with gaps in 1..90, 91 stuff 92..182)
COCO_UNUSED_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83, 91)
COCO_STUFF_IDS = tuple(i for i in range(1, 183) if i not in COCO_UNUSED_IDS)


def coco_stuff_lut() -> np.ndarray:
    """Raw stuffthingmaps value (COCO id - 1) -> contiguous 171-class id; others IGNORE."""
    lut = np.full(256, IGNORE, np.int64)
    for idx, cid in enumerate(COCO_STUFF_IDS):
        lut[cid - 1] = idx
    return lut


def coco_stuff171(root: Path, split: str = "val2017") -> Dataset:
    """images/<split>/*.jpg with annotations/<split>/<stem>_labelTrainIds.png (mmseg) or
    <stem>.png (raw stuffthingmaps, COCO id - 1)."""
    img_dir = _need_dir(root / "images" / split, "COCO-Stuff image",
                        "pass --root .../coco_stuff164k (holding images/ and annotations/)")
    lab_dir = _need_dir(root / "annotations" / split, "COCO-Stuff annotation",
                        "pass --root .../coco_stuff164k")
    images = _list_images(img_dir)
    train_ids = images and (lab_dir / f"{images[0].stem}_labelTrainIds.png").is_file()
    if train_ids:
        name = lambda p: f"{p.stem}_labelTrainIds.png"
        dec = lambda raw: decode_labels(raw, ignore_index=255)
    else:
        name = lambda p: p.stem + ".png"
        lut = coco_stuff_lut()
        dec = lambda raw: decode_labels(raw, lut=lut)
    pairs = _pair_by_stem(images, lab_dir, name, root)
    return Dataset("coco_stuff171", load_class_file("coco_stuff171"),
                   [_semantic_sample(k, i, l, dec) for k, i, l in pairs])


#: Cityscapes labelId -> trainId for the 19 evaluated classes
CITYSCAPES_LABEL_TO_TRAIN = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
                             23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17,
                             33: 18}


def cityscapes_lut() -> np.ndarray:
    lut = np.full(256, IGNORE, np.int64)
    for label_id, train_id in CITYSCAPES_LABEL_TO_TRAIN.items():
        lut[label_id] = train_id
    return lut


def cityscapes(root: Path, split: str = "val") -> Dataset:
    """leftImg8bit/<split>/<city>/*_leftImg8bit.png with
    gtFine/<split>/<city>/*_gtFine_labelIds.png."""
    img_dir = _need_dir(root / "leftImg8bit" / split, "Cityscapes leftImg8bit",
                        "pass --root .../cityscapes (holding leftImg8bit/ and gtFine/)")
    _need_dir(root / "gtFine" / split, "Cityscapes gtFine", "pass --root .../cityscapes")
    images = sorted(img_dir.rglob("*_leftImg8bit.png"))
    lut = cityscapes_lut()
    samples, missing = [], []
    for img in images:
        base = img.name[: -len("_leftImg8bit.png")]
        lab = root / "gtFine" / split / img.parent.name / f"{base}_gtFine_labelIds.png"
        if not lab.is_file():
            missing.append(lab)
            continue
        samples.append(_semantic_sample(str(img.relative_to(root)), img, lab,
                                        lambda raw: decode_labels(raw, lut=lut)))
    if missing:
        raise DatasetError(f"{len(missing)} Cityscapes images have no gtFine labelIds file, e.g. "
                           f"{missing[0]}")
    if not samples:
        raise DatasetError(f"no *_leftImg8bit.png images under {img_dir}")
    return Dataset("cityscapes", load_class_file("cityscapes19"), samples)


def rgb_to_panoptic_id(rgb: np.ndarray) -> np.ndarray:
    """COCO panoptic PNG colour -> segment id = R + 256 G + 256^2 B."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def panoptic_id_to_rgb(ids: np.ndarray) -> np.ndarray:
    ids = ids.astype(np.int64)
    return np.stack([ids % 256, (ids // 256) % 256, (ids // 65536) % 256], -1).astype(np.uint8)


def coco_panoptic(root: Path, split: str = "val2017") -> Dataset:
    """annotations/panoptic_<split>.json + annotations/panoptic_<split>/*.png + <split>/*.jpg."""
    ann_file = root / "annotations" / f"panoptic_{split}.json"
    png_dir = _need_dir(root / "annotations" / f"panoptic_{split}", "COCO panoptic PNG",
                        "unzip panoptic_annotations_trainval2017 into <root>/annotations")
    img_dir = _need_dir(root / split, "COCO image",
                        f"pass --root holding {split}/ and annotations/")
    try:
        data = json.loads(ann_file.read_text())
    except OSError as exc:
        raise DatasetError(f"cannot read {ann_file}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{ann_file} is not valid JSON: {exc}") from exc
    for key in ("categories", "annotations", "images"):
        if key not in data:
            raise DatasetError(f"{ann_file} has no {key!r}: not a COCO panoptic annotation file")
    cats = sorted(data["categories"], key=lambda c: c["id"])
    contiguous = {c["id"]: i for i, c in enumerate(cats)}
    classes = load_class_file("coco_panoptic")
    if len(cats) != len(classes):
        raise DatasetError(f"{ann_file} has {len(cats)} categories but the coco_panoptic class "
                           f"list has {len(classes)}")
    file_of = {im["id"]: im["file_name"] for im in data["images"]}
    samples = []
    for ann in sorted(data["annotations"], key=lambda a: a["file_name"]):
        img = img_dir / file_of[ann["image_id"]]
        png = png_dir / ann["file_name"]
        try:
            segs = {int(s["id"]): (contiguous[s["category_id"]], bool(s.get("iscrowd", 0)))
                    for s in ann["segments_info"]}
        except KeyError as exc:
            raise DatasetError(f"{ann_file}: annotation {ann['file_name']} names unknown "
                               f"category {exc}") from exc

        def load_target(png=png, segs=segs) -> Target:
            rgb = read_label_png(png)
            if rgb.ndim != 3:
                raise DatasetError(f"panoptic PNG {png} must be RGB (id = R + 256 G + 256^2 B)")
            pan = rgb_to_panoptic_id(rgb)
            return Target(semantic=semantic_from_panoptic(pan, segs), panoptic=pan, segments=segs)

        samples.append(Sample(key=str(img.relative_to(root)),
                              load_image=lambda img=img: read_rgb(img), load_target=load_target))
    if not samples:
        raise DatasetError(f"{ann_file} lists no annotations")
    return Dataset("coco_panoptic", classes, samples, panoptic=True)


def folder(images: Path, labels: Path, classes: ClassList, *, ignore_index: Optional[int] = 255,
           reduce_zero_label: bool = False, label_suffix: str = ".png") -> Dataset:
    """Any image folder with a label folder: <labels>/<relative stem><label_suffix>."""
    _need_dir(images, "image", "pass --images DIR")
    _need_dir(labels, "label", "pass --labels DIR")
    imgs = _list_images(images)
    pairs, missing = [], []
    for img in imgs:
        lab = labels / img.relative_to(images).with_suffix("").as_posix()
        lab = lab.with_name(lab.name + label_suffix)
        (pairs if lab.is_file() else missing).append((str(img.relative_to(images)), img, lab))
    if missing:
        raise DatasetError(f"{len(missing)} of {len(imgs)} images have no label file, e.g. "
                           f"{missing[0][2]}")
    if not pairs:
        raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {images}")
    dec = lambda raw: decode_labels(raw, ignore_index=ignore_index,
                                    reduce_zero_label=reduce_zero_label)
    return Dataset("folder", classes, [_semantic_sample(k, i, l, dec) for k, i, l in pairs])


LAYOUTS = {"ade150": ade150, "ade847": ade847, "pascal_context59": pascal_context59,
           "pascal_context459": pascal_context459, "voc20": voc20,
           "voc21": voc21, "coco_stuff171": coco_stuff171, "cityscapes": cityscapes,
           "coco_panoptic": coco_panoptic}


def open_dataset(kind: str, root: Path, split: Optional[str] = None) -> Dataset:
    if kind not in LAYOUTS:
        raise DatasetError(f"unknown dataset kind {kind!r}; choose one of {sorted(LAYOUTS)} "
                           "or 'folder'")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} is not a directory")
    fn = LAYOUTS[kind]
    return fn(root) if split is None else fn(root, split)


__all__ = ["Dataset", "DatasetError", "Sample", "Target", "open_dataset", "folder", "LAYOUTS",
           "decode_labels", "read_rgb", "read_label_png", "rgb_to_panoptic_id",
           "panoptic_id_to_rgb", "coco_stuff_lut", "cityscapes_lut", "COCO_STUFF_IDS",
           "CITYSCAPES_LABEL_TO_TRAIN"]
