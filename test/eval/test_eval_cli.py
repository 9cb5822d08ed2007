"""ovseg-eval end to end with the tiny ProxyCLIP: bag evaluation, shards + merge, resume,
bag -> bag, dataset folders, and the errors users hit (missing topics, wrong encodings,
class files that do not fit the labels, unreadable files)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ovseg_ros.eval import bags as B
from ovseg_ros.eval.cli import main
from ovseg_ros.eval.metrics import SemanticSegmentationMetric
from ovseg_ros.eval.state import EvalState

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "test" / "configs" / "tiny_proxyclip.yaml")
CLASSES = "person\nsky\nfloor\n"


def _frame(i):
    """A 48x64 scene of three blocks (shifted per frame) and its 3-class label map."""
    img = np.zeros((48, 64, 3), np.uint8)
    lab = np.zeros((48, 64), np.uint16)
    x = 20 + 4 * i
    img[:, :x] = (200, 40, 40)
    img[:24, x:] = (30, 180, 60)
    lab[:24, x:] = 1
    img[24:, x:] = (40, 60, 220)
    lab[24:, x:] = 2
    lab[0, :] = 65535                     # an unlabelled row (ignored)
    return 10**9 + i * 10**8, img, lab


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("eval")
    B.write_image_bag(d / "in", [_frame(i) for i in range(5)])
    (d / "classes.txt").write_text(CLASSES)
    return d


def _engine(work):
    return ["--config", TINY, "--set", f"text_cache_dir={work / 'text'}"]


def _bag_eval(work, out, *extra):
    return main(["bag", *_engine(work), "--bag", str(work / "in"),
                 "--image-topic", "/camera/image", "--label-topic", "/camera/labels",
                 "--classes", str(work / "classes.txt"), "--out", str(out), "--quiet", *extra])


@pytest.fixture(scope="module")
def single(work):
    out = work / "single"
    assert _bag_eval(work, out) == 0
    return out


def test_bag_evaluation_end_to_end(work, single):
    res = json.loads((single / "results.json").read_text())
    assert res["finished"] and res["num_images"] == 5
    for f in ("report.md", "report.html", "per_class_iou.png", "confusion.png",
              "samples/sample_00.png"):
        assert (single / f).is_file(), f
    assert "| person |" in (single / "report.md").read_text()
    # regression: the HTML report showed the random-weights warning as literal **markdown**
    page = (single / "report.html").read_text()
    assert "<strong>random weights: the numbers are meaningless</strong>" in page
    assert "**" not in page
    # the numbers are those of the engine's own predictions on the bag's frames
    from ovseg_ros import load_segmenter

    seg = load_segmenter(TINY, text_cache_dir=str(work / "text"))
    seg.set_vocabulary(["person", "sky", "floor"])
    ref = SemanticSegmentationMetric(3)
    for i in range(5):
        _, img, lab = _frame(i)
        gt = lab.astype(np.int64)
        gt[lab == 65535] = -1
        ref.update(seg.predict(img).semantic, gt)
    expect = ref.compute()
    assert res["semantic"]["mIoU"] == pytest.approx(expect["mIoU"])
    assert res["semantic"]["gt_pixels"] == expect["gt_pixels"]
    assert sum(expect["gt_pixels"]) == 5 * 47 * 64        # the unlabelled row is ignored


def test_shards_merge_equal_single_run(work, single):
    for i in range(2):
        assert _bag_eval(work, work / f"shard{i}", "--shard", f"{i}/2", "--no-report") == 0
        assert (work / f"shard{i}" / f"results_shard{i}of2.json").is_file()
        assert not (work / f"shard{i}" / "results.json").exists()
    states = [str(work / f"shard{i}" / f"state_shard{i}of2.npz") for i in range(2)]
    assert main(["merge", *states, "--out", str(work / "merged")]) == 0
    merged = json.loads((work / "merged" / "results.json").read_text())
    one = json.loads((single / "results.json").read_text())
    assert merged["semantic"] == one["semantic"] and merged["finished"]
    a = EvalState.load(work / "merged" / "state_merged.npz")
    b = EvalState.load(single / "state_shard0of1.npz")
    assert np.array_equal(a.semantic_metric.confusion.numpy(), b.semantic_metric.confusion.numpy())
    assert sorted(a.done) == sorted(b.done)
    # a shard merged twice is refused
    assert main(["merge", states[0], states[0], "--out", str(work / "bad")]) == 2
    assert not (work / "bad" / "results.json").exists()


def test_limit_then_resume_equals_single_run(work, single):
    out = work / "resumed"
    assert _bag_eval(work, out, "--limit", "2") == 0
    part = json.loads((out / "results_partial.json").read_text())
    assert part["num_images"] == 2 and not part["finished"]
    assert not (out / "results.json").exists()
    assert "NO (partial run" in (out / "report.md").read_text()
    assert _bag_eval(work, out) == 2            # state exists: --resume is required
    assert _bag_eval(work, out, "--resume") == 0
    res = json.loads((out / "results.json").read_text())
    one = json.loads((single / "results.json").read_text())
    assert res["finished"] and res["semantic"] == one["semantic"]
    # regression: the stale partial results of the --limit run must not survive completion
    assert not (out / "results_partial.json").exists()


def test_bag_to_bag(work):
    out = work / "labelled"
    assert main(["infer-bag", *_engine(work), "--bag", str(work / "in"), "--image-topic",
                 "/camera/image", "--classes", str(work / "classes.txt"), "--out", str(out),
                 "--storage", "mcap", "--quiet"]) == 0
    assert not (work / "labelled.partial").exists()
    from ovseg_ros import load_segmenter

    seg = load_segmenter(TINY, text_cache_dir=str(work / "text"))
    seg.set_vocabulary(["person", "sky", "floor"])
    reader = B.open_reader(out)
    topics = {c.topic: (c.msgtype, c.msgcount) for c in reader.connections}
    img = "sensor_msgs/msg/Image"
    assert topics == {
        "/camera/image": (img, 5), "/camera/labels": (img, 5), "/ovseg/semantic": (img, 5),
        "/ovseg/panoptic": (img, 5), "/ovseg/colored": (img, 5), "/ovseg/confidence": (img, 5),
        "/ovseg/segments": ("ovseg_ros/msg/Segments", 5),
        "/ovseg/vocabulary": ("ovseg_ros/msg/Vocabulary", 1)}
    store = B.make_typestore()
    stamps = {}
    for conn, t, raw in reader.messages():
        msg = store.deserialize_cdr(raw, conn.msgtype)
        stamps.setdefault(conn.topic, []).append((t, B.stamp_ns(msg.header)))
        if conn.topic == "/ovseg/semantic":
            i = [B.stamp_ns(msg.header) == _frame(k)[0] for k in range(5)].index(True)
            pred = seg.predict(_frame(i)[1])
            assert msg.encoding == "16UC1"
            assert np.array_equal(B.image_to_numpy(msg), pred.semantic)
        elif conn.topic == "/ovseg/panoptic":
            assert msg.encoding == "32SC1"
        elif conn.topic == "/ovseg/colored":
            assert msg.encoding == "rgb8"
        elif conn.topic == "/ovseg/confidence":
            assert msg.encoding == "32FC1"
            i = [B.stamp_ns(msg.header) == _frame(k)[0] for k in range(5)].index(True)
            assert np.array_equal(B.image_to_numpy(msg), seg.predict(_frame(i)[1]).confidence)
        elif conn.topic == "/ovseg/segments":
            assert len(msg.segments) >= 1 and msg.segments[0].class_name in ("person", "sky",
                                                                              "floor")
        elif conn.topic == "/ovseg/vocabulary":
            assert [c.name for c in msg.classes] == ["person", "sky", "floor"]
            assert msg.random_weights
    reader.close()
    inputs = stamps["/camera/image"]
    assert all(t == s for t, s in inputs)         # written with receive time = stamp
    for topic in ("/ovseg/semantic", "/ovseg/panoptic", "/ovseg/colored", "/ovseg/confidence",
                  "/ovseg/segments"):
        assert stamps[topic] == inputs, topic     # same bag times and header stamps
    assert stamps["/ovseg/vocabulary"] == inputs[:1]
    # deterministic: a second run (sqlite3 this time) writes the same labels
    again = work / "labelled_again"
    assert main(["infer-bag", *_engine(work), "--bag", str(work / "in"), "--image-topic",
                 "/camera/image", "--classes", str(work / "classes.txt"), "--out", str(again),
                 "--storage", "sqlite3", "--quiet"]) == 0
    assert B.bag_storage(again) == "sqlite3"

    def label_bytes(path):
        r = B.open_reader(path)
        try:
            return [bytes(raw) for c, _, raw in r.messages()
                    if c.topic in ("/ovseg/semantic", "/ovseg/panoptic", "/ovseg/segments")]
        finally:
            r.close()
    assert label_bytes(out) == label_bytes(again)
    # the output exists now: refused without --overwrite
    assert main(["infer-bag", *_engine(work), "--bag", str(work / "in"), "--image-topic",
                 "/camera/image", "--out", str(out), "--quiet"]) == 2


def test_custom_message_hashes_match_rosidl():
    """The bag's custom types carry the same RIHS01 hashes as the rosidl build (replayable)."""
    share = ROOT / "build" / "interfaces" / "install" / "share" / "ovseg_ros" / "msg"
    if not (share / "Segments.json").is_file():
        pytest.skip("interfaces not built (make interfaces)")
    store = B.make_typestore()
    for name in ("Segments", "Segment", "Vocabulary", "ClassInfo"):
        desc = json.loads((share / f"{name}.json").read_text())
        assert desc["type_hashes"][0]["hash_string"] == store.hash_rihs01(f"ovseg_ros/msg/{name}")


def test_dataset_folder_quick_run(work, capsys):
    import cv2

    for i in range(3):
        _, img, lab = _frame(i)
        (work / "imgs").mkdir(exist_ok=True)
        (work / "labs").mkdir(exist_ok=True)
        cv2.imwrite(str(work / "imgs" / f"f{i}.png"), img[..., ::-1])
        cv2.imwrite(str(work / "labs" / f"f{i}.png"), np.where(lab == 65535, 255, lab)
                    .astype(np.uint8))
    out = work / "folder_eval"
    assert main(["dataset", *_engine(work), "--kind", "folder", "--images", str(work / "imgs"),
                 "--labels", str(work / "labs"), "--classes", str(work / "classes.txt"),
                 "--out", str(out), "--limit", "2", "--quiet"]) == 0
    res = json.loads((out / "results_partial.json").read_text())
    assert res["num_images"] == 2 and res["semantic"]["pixels"] == 2 * 47 * 64
    # regression: the summary line did not say the numbers come from random weights
    said = capsys.readouterr().out
    assert "PARTIAL" in said and "RANDOM WEIGHTS" in said


# --- errors ------------------------------------------------------------------------------------
class _Run:
    def __init__(self, returncode, stderr):
        self.returncode, self.stderr = returncode, stderr


@pytest.fixture
def _cli(capsys):
    """main() in this process (no new interpreter per case); returns code and stderr."""
    def run(*args):
        capsys.readouterr()
        code = main(list(args))
        return _Run(code, capsys.readouterr().err)
    return run


def test_module_entry_point_exit_code(work):
    r = subprocess.run([sys.executable, "-m", "ovseg_ros.eval.cli", "bag", "--bag",
                        str(work / "nothing"), "--image-topic", "/a", "--label-topic", "/b",
                        "--classes", "ade150", "--out", str(work / "x")],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("ovseg-eval: error: ")
    assert "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_cli_errors_are_clear_and_leave_no_results(work, _cli):
    base = ["bag", *_engine(work), "--bag", str(work / "in"), "--quiet"]
    out = work / "err"
    # missing topic: named, with the topics the bag does have; the engine is never built
    r = _cli(*base, "--image-topic", "/camera/imag", "--label-topic", "/camera/labels",
             "--classes", str(work / "classes.txt"), "--out", str(out))
    assert r.returncode == 2
    assert "image topic '/camera/imag' is not in the bag" in r.stderr
    assert "/camera/labels [sensor_msgs/msg/Image]" in r.stderr
    assert "Traceback" not in r.stderr
    # labels that are not class ids (rgb8 images as the label topic)
    B.write_image_bag(work / "rgb_labels", [(s, img, img) for s, img, _ in map(_frame, range(2))],
                      label_encoding="rgb8")
    r = _cli("bag", *_engine(work), "--bag", str(work / "rgb_labels"), "--image-topic",
             "/camera/image", "--label-topic", "/camera/labels", "--classes",
             str(work / "classes.txt"), "--out", str(out), "--quiet")
    assert r.returncode == 2 and "encoding 'rgb8' is not a class-id image" in r.stderr
    # labels whose stamps match no image
    B.write_image_bag(work / "no_pairs", [(s, img, None) for s, img, _ in map(_frame, range(2))])
    r = _cli("bag", *_engine(work), "--bag", str(work / "no_pairs"), "--image-topic",
             "/camera/image", "--label-topic", "/camera/labels", "--classes",
             str(work / "classes.txt"), "--out", str(out / "np"), "--quiet")
    assert r.returncode == 2 and "nothing was evaluated" in r.stderr
    assert "2 images, 0 labels" in r.stderr
    r = _cli(*base, "--image-topic", "/camera/image", "--label-topic", "/camera/image",
             "--classes", str(work / "classes.txt"), "--out", str(out))
    assert r.returncode == 2 and "must be different topics" in r.stderr
    # a class file with fewer classes than the labels use
    (work / "two.txt").write_text("person\nsky\n")
    r = _cli(*base, "--image-topic", "/camera/image", "--label-topic", "/camera/labels",
             "--classes", str(work / "two.txt"), "--out", str(out))
    assert r.returncode == 2
    assert "ground truth holds class ids [2] outside [0, 2)" in r.stderr
    assert "class-name file does not match" in r.stderr
    assert not (out / "results.json").exists() and not (out / "report.md").exists()
    # unreadable inputs
    r = _cli("bag", *_engine(work), "--bag", str(work / "nothing"), "--image-topic", "/a",
             "--label-topic", "/b", "--classes", str(work / "classes.txt"), "--out", str(out))
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = _cli(*base, "--image-topic", "/camera/image", "--label-topic", "/camera/labels",
             "--classes", str(work / "no_such_classes.txt"), "--out", str(out))
    assert r.returncode == 2 and "class-name file" in r.stderr and "not found" in r.stderr
    r = _cli("merge", str(work / "classes.txt"), "--out", str(out))
    assert r.returncode == 2 and "cannot read evaluation state" in r.stderr



def test_bad_counts_and_class_file_errors_are_named(work, capsys):
    """Regressions: --limit 0 ran and ended in 'nothing was evaluated' (infer-bag wrote an
    empty bag); a malformed class file's path was printed twice."""
    bag = ["bag", *_engine(work), "--bag", str(work / "in"), "--image-topic", "/camera/image",
           "--label-topic", "/camera/labels", "--quiet"]
    assert main([*bag, "--classes", str(work / "classes.txt"), "--out", str(work / "l0"),
                 "--limit", "0"]) == 2
    assert "--limit must be >= 1" in capsys.readouterr().err
    assert main(["infer-bag", *_engine(work), "--bag", str(work / "in"), "--image-topic",
                 "/camera/image", "--out", str(work / "l0bag"), "--limit", "0"]) == 2
    assert "--limit must be >= 1" in capsys.readouterr().err
    assert not (work / "l0").exists() and not (work / "l0bag").exists()
    bad = work / "half_flags.txt"
    bad.write_text("sky\tstuff\nperson\n")
    assert main([*bag, "--classes", str(bad), "--out", str(work / "hf")]) == 2
    err = capsys.readouterr().err
    assert "thing/stuff column given for some classes only" in err
    assert err.count(str(bad)) == 1

def test_coco_panoptic_dataset_gives_pq(work, tmp_path):
    """COCO panoptic JSON + PNG layout through the CLI: PQ / SQ / RQ for all, things, stuff."""
    import cv2

    from ovseg_ros.eval.datasets import panoptic_id_to_rgb

    cats = [{"id": i + 1, "name": f"c{i}", "isthing": int(i < 80)} for i in range(133)]
    anns, images = [], []
    for i in range(2):
        _, img, _ = _frame(i)
        ids = np.zeros((48, 64), np.int64)
        ids[:, :30] = 1000 + i          # a person (category 1 -> class 0)
        ids[:24, 30:] = 2000            # a stuff region (category 120 -> class 119)
        name = f"{i:012d}"
        (tmp_path / "val2017").mkdir(exist_ok=True)
        (tmp_path / "annotations/panoptic_val2017").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "val2017" / f"{name}.jpg"), img[..., ::-1])
        cv2.imwrite(str(tmp_path / "annotations/panoptic_val2017" / f"{name}.png"),
                    panoptic_id_to_rgb(ids)[..., ::-1])
        images.append({"id": i, "file_name": f"{name}.jpg"})
        anns.append({"image_id": i, "file_name": f"{name}.png",
                     "segments_info": [{"id": 1000 + i, "category_id": 1, "iscrowd": 0},
                                       {"id": 2000, "category_id": 120, "iscrowd": 0}]})
    (tmp_path / "annotations/panoptic_val2017.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats}))
    out = tmp_path / "out"
    assert main(["dataset", *_engine(work), "--kind", "coco_panoptic", "--root", str(tmp_path),
                 "--out", str(out), "--quiet"]) == 0
    res = json.loads((out / "results.json").read_text())
    pan = res["panoptic"]
    assert set(pan) >= {"All", "Things", "Stuff", "per_class_pq"}
    # both GT segments of image 0 and 1 are counted: each is a TP or an FN
    assert pan["tp"][0] + pan["fn"][0] == 2 and pan["tp"][119] + pan["fn"][119] == 2
    assert "| PQ All |" in (out / "report.md").read_text()
