"""Benchmark layouts: label decoding conventions on tiny synthetic copies of each layout."""
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from ovseg_ros.core.class_names import load_class_file
from ovseg_ros.core.vocabulary import parse_vocabulary
from ovseg_ros.eval import datasets as D
from ovseg_ros.eval.metrics import IGNORE


def _jpg(path, h=6, w=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 128, np.uint8))


def _png(path, arr, palette=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr)
    if palette:   # PASCAL VOC style indexed PNG: OpenCV would read colours, not indices
        im = im.convert("P")
        im.putpalette([(i * 37) % 256 for i in range(768)])
    im.save(path)


@pytest.mark.parametrize("name,count", [("ade150", 150), ("pascal_context59", 59),
                                        ("voc20", 20), ("voc21", 21), ("cityscapes19", 19),
                                        ("coco_stuff171", 171), ("coco_panoptic", 133),
                                        ("ade847", 847), ("pascal_context459", 459)])
def test_bundled_class_files_parse_as_vocabularies(name, count):
    cl = load_class_file(name)
    assert len(cl) == count
    names, syns, _ = parse_vocabulary(cl.names, cl.is_thing, max_classes=1024)
    assert all(s for s in syns)


def test_bundled_class_file_facts():
    assert load_class_file("ade150").names[12].startswith("person")
    assert load_class_file("voc21").names[0].startswith("background")
    city = load_class_file("cityscapes19")
    assert city.names[11].startswith("person") and city.is_thing[11] and not city.is_thing[0]
    stuff = load_class_file("coco_stuff171")
    assert stuff.is_thing == tuple([True] * 80 + [False] * 91)
    assert stuff.names[80].startswith("banner") and stuff.names[-1] == "wood"


def test_ade150_reduce_zero_label(tmp_path):
    _jpg(tmp_path / "images/validation/ADE_val_1.jpg")
    lab = np.zeros((6, 8), np.uint8)
    lab[0, :4] = 1
    lab[1, :] = 150
    _png(tmp_path / "annotations/validation/ADE_val_1.png", lab)
    ds = D.open_dataset("ade150", tmp_path)
    assert len(ds) == 1 and ds.samples[0].key == "images/validation/ADE_val_1.jpg"
    sem = ds.samples[0].load_target().semantic
    assert sem[0, 0] == 0 and sem[1, 0] == 149 and sem[5, 5] == IGNORE
    assert ds.samples[0].load_image().shape == (6, 8, 3)


@pytest.mark.parametrize("kind,expect_bg,expect_5", [("voc21", 0, 5), ("voc20", IGNORE, 4)])
def test_voc_palette_png_and_255(tmp_path, kind, expect_bg, expect_5):
    root = tmp_path / "VOC2012"
    (root / "ImageSets/Segmentation").mkdir(parents=True)
    (root / "ImageSets/Segmentation/val.txt").write_text("2007_000033\n")
    _jpg(root / "JPEGImages/2007_000033.jpg")
    lab = np.zeros((6, 8), np.uint8)
    lab[2] = 5
    lab[3] = 255
    _png(root / "SegmentationClass/2007_000033.png", lab, palette=True)
    sem = D.open_dataset(kind, root).samples[0].load_target().semantic
    assert sem[0, 0] == expect_bg and sem[2, 0] == expect_5 and sem[3, 0] == IGNORE


def test_pascal_context59(tmp_path):
    root = tmp_path / "VOC2010"
    (root / "ImageSets/SegmentationContext").mkdir(parents=True)
    (root / "ImageSets/SegmentationContext/val.txt").write_text("2008_000002\n")
    _jpg(root / "JPEGImages/2008_000002.jpg")
    lab = np.zeros((6, 8), np.uint8)
    lab[1] = 59
    _png(root / "SegmentationClassContext/2008_000002.png", lab)
    sem = D.open_dataset("pascal_context59", root).samples[0].load_target().semantic
    assert sem[0, 0] == IGNORE and sem[1, 0] == 58


def test_coco_stuff_raw_and_train_ids(tmp_path):
    _jpg(tmp_path / "images/val2017/000000000139.jpg")
    lab = np.full((6, 8), 255, np.uint8)
    lab[0] = 0      # COCO id 1 (person) -> 0
    lab[1] = 91     # COCO id 92 (banner) -> 80
    lab[2] = 11     # COCO id 12: unused by COCO -> ignored
    lab[3] = 181    # COCO id 182 (wood) -> 170
    _png(tmp_path / "annotations/val2017/000000000139.png", lab)
    sem = D.open_dataset("coco_stuff171", tmp_path).samples[0].load_target().semantic
    assert sem[:, 0].tolist() == [0, 80, IGNORE, 170, IGNORE, IGNORE]
    assert len(D.COCO_STUFF_IDS) == 171
    # mmseg's converted *_labelTrainIds.png are used as they are
    _png(tmp_path / "annotations/val2017/000000000139_labelTrainIds.png",
         np.full((6, 8), 7, np.uint8))
    sem = D.open_dataset("coco_stuff171", tmp_path).samples[0].load_target().semantic
    assert (sem == 7).all()


def test_cityscapes_label_ids_to_train_ids(tmp_path):
    _jpg(tmp_path / "leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png")
    lab = np.zeros((6, 8), np.uint8)
    lab[0], lab[1], lab[2], lab[3] = 7, 26, 33, 6   # road, car, bicycle, ground (not evaluated)
    _png(tmp_path / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelIds.png", lab)
    ds = D.open_dataset("cityscapes", tmp_path)
    sem = ds.samples[0].load_target().semantic
    assert sem[:5, 0].tolist() == [0, 13, 18, IGNORE, IGNORE]
    assert len(ds.classes) == 19


def test_coco_panoptic_json_png(tmp_path):
    cats = [{"id": i + 1, "name": f"c{i}", "isthing": int(i < 80)} for i in range(133)]
    ids = np.zeros((6, 8), np.int64)
    ids[:3] = 300             # R=44, G=1
    ids[3:, :4] = 5 + 256 * 256 * 2
    rgb = D.panoptic_id_to_rgb(ids)
    assert (D.rgb_to_panoptic_id(rgb) == ids).all()
    _png(tmp_path / "annotations/panoptic_val2017/000000000139.png", rgb)
    _jpg(tmp_path / "val2017/000000000139.jpg")
    ann = {"images": [{"id": 139, "file_name": "000000000139.jpg"}], "categories": cats,
           "annotations": [{"image_id": 139, "file_name": "000000000139.png",
                            "segments_info": [{"id": 300, "category_id": 1, "iscrowd": 0},
                                              {"id": 5 + 256 * 256 * 2, "category_id": 100,
                                               "iscrowd": 1}]}]}
    (tmp_path / "annotations/panoptic_val2017.json").write_text(json.dumps(ann))
    ds = D.open_dataset("coco_panoptic", tmp_path)
    assert ds.panoptic
    t = ds.samples[0].load_target()
    assert t.segments == {300: (0, False), 5 + 256 * 256 * 2: (99, True)}
    assert t.semantic[0, 0] == 0 and t.semantic[5, 0] == 99 and t.semantic[5, 7] == IGNORE
    assert (t.panoptic == ids).all()


def test_folder_dataset_and_errors(tmp_path):
    _jpg(tmp_path / "img/a.jpg")
    _jpg(tmp_path / "img/sub/b.png")
    _png(tmp_path / "lab/a.png", np.full((6, 8), 2, np.uint8))
    classes = load_class_file("voc21")
    with pytest.raises(D.DatasetError, match="no label file.*sub/b.png"):
        D.folder(tmp_path / "img", tmp_path / "lab", classes)
    _png(tmp_path / "lab/sub/b.png", np.zeros((6, 8), np.uint8))
    ds = D.folder(tmp_path / "img", tmp_path / "lab", classes, reduce_zero_label=True)
    assert [s.key for s in ds.samples] == ["a.jpg", "sub/b.png"]
    assert (ds.samples[0].load_target().semantic == 1).all()
    assert (ds.samples[1].load_target().semantic == IGNORE).all()
    # a colour label image is refused with a hint
    _png(tmp_path / "lab/a.png", np.zeros((6, 8, 3), np.uint8))
    with pytest.raises(D.DatasetError, match="single-channel"):
        ds.samples[0].load_target()
    (tmp_path / "lab/sub/b.png").write_bytes(b"not a png")
    with pytest.raises(D.DatasetError, match="cannot read label image"):
        ds.samples[1].load_target()


def test_missing_layout_is_explained(tmp_path):
    with pytest.raises(D.DatasetError, match="ADEChallengeData2016"):
        D.open_dataset("ade150", tmp_path)
    with pytest.raises(D.DatasetError, match="unknown dataset kind"):
        D.open_dataset("kitti", tmp_path)


@pytest.mark.parametrize("kind,img_sub,lab_sub,count", [
    ("ade847", "images_detectron2/validation", "annotations_detectron2/validation", 847),
    ("pascal_context459", "images/validation", "annotations_ctx459/validation", 459)])
def test_full_vocabulary_layouts_read_16bit_tiffs(tmp_path, kind, img_sub, lab_sub, count):
    """ADE-847 and PC-459 as FC-CLIP's preparation scripts write them: uint16 TIFF labels
    (PIL), ids as stored, 65535 ignored; ids past the class list are a clear error."""
    _jpg(tmp_path / img_sub / "a.jpg")
    lab = np.full((6, 8), 65535, np.uint16)
    lab[0, :3] = count - 1                     # the last class: beyond 8 bits for both
    lab[2, :] = 300
    (tmp_path / lab_sub).mkdir(parents=True)
    Image.fromarray(lab).save(tmp_path / lab_sub / "a.tif")
    ds = D.open_dataset(kind, tmp_path)
    assert len(ds.classes) == count and ds.name == kind
    sem = ds.samples[0].load_target().semantic
    assert sem[0, 0] == count - 1 and sem[2, 4] == 300 and sem[5, 5] == IGNORE
    assert ds.samples[0].key == f"{img_sub}/a.jpg"
    lab[1, 1] = count                           # one past the list
    Image.fromarray(lab).save(tmp_path / lab_sub / "a.tif")
    with pytest.raises(D.DatasetError, match=f"exceed its {count} classes"):
        D.open_dataset(kind, tmp_path).samples[0].load_target()
    with pytest.raises(D.DatasetError, match="prepare_"):     # a root without the layout
        D.open_dataset(kind, tmp_path / lab_sub)
