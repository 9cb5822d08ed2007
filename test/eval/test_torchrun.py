"""`torchrun -m ovseg_ros.eval` on CPU (gloo) with the tiny random-weight ProxyCLIP.

The report of a torchrun run equals the single-process run bit for bit (mIoU states and PQ
sums), and equals `--shard` + `merge` of the same split; a rank with nothing to do is fine;
a rank killed mid-run leaves no complete report, and `--resume` completes the run.
"""
import errno
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from ovseg_ros.eval.cli import main
from ovseg_ros.eval.state import EvalState

from test_eval_bag_panoptic import write_panoptic_bag

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "test" / "configs" / "tiny_proxyclip.yaml")
TORCHRUN = ROOT / ".venv" / "bin" / "torchrun"
CLASSES = "person\tthing\nsky\tstuff\nfloor\tstuff\n"

pytestmark = pytest.mark.skipif(not TORCHRUN.is_file(), reason="torchrun not in .venv")


def _write_frames(images, labels, n, start=0):
    import cv2

    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    for i in range(start, n):
        img = np.zeros((32, 40, 3), np.uint8)
        lab = np.zeros((32, 40), np.uint8)
        x = 8 + 4 * i
        img[:, :x] = (200, 40, 40)
        img[:16, x:] = (30, 180, 60)
        lab[:16, x:] = 1
        img[16:, x:] = (40, 60, 220)
        lab[16:, x:] = 2
        lab[0] = 255
        if not (images / f"f{i}.png").exists():
            cv2.imwrite(str(images / f"f{i}.png"), img[..., ::-1])
        cv2.imwrite(str(labels / f"f{i}.png"), lab)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("torchrun")
    (d / "classes.txt").write_text(CLASSES)
    _write_frames(d / "imgs", d / "labs", 5)
    _write_frames(d / "imgs2", d / "labs2", 2)
    return d


@pytest.fixture(scope="module")
def single(work):
    """The single-process run on the 5 frames (it also fills the text cache the ranks read)."""
    assert main(_folder(work, "imgs", "labs", work / "single")) == 0
    return work / "single"


def _engine(work):
    return ["--config", TINY, "--set", f"text_cache_dir={work / 'text'}"]


def _folder(work, images, labels, out, *extra):
    return ["dataset", *_engine(work), "--kind", "folder", "--images", str(work / images),
            "--labels", str(work / labels), "--classes", str(work / "classes.txt"),
            "--out", str(out), "--quiet", *extra]


def _torchrun(nproc, args, marker=None, wait=True, wait_log=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", OVSEG_TEST_RUN=marker or "")
    cmd = [str(TORCHRUN), "--standalone", "--nproc-per-node", str(nproc), "-m",
           "ovseg_ros.eval", *args]
    if not wait:     # output to a file: a full pipe must not block the ranks
        log = open(wait_log, "w")
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _results(out):
    return json.loads((Path(out) / "results.json").read_text())


def _numbers_section(out):
    """report.md from the summary to the per-class table (the samples differ: rank 0 keeps
    samples of its own items)."""
    text = (Path(out) / "report.md").read_text()
    return text[text.index("## Summary"):text.index("## Plots")]


def _same_numbers(a, b):
    ra, rb = _results(a), _results(b)
    assert ra["num_images"] == rb["num_images"] and rb["finished"]
    assert ra["semantic"] == rb["semantic"]             # floats compared exactly
    assert ra.get("panoptic") == rb.get("panoptic")
    assert _numbers_section(a) == _numbers_section(b)


def test_dataset_two_ranks_equal_single_run_and_shards(work, single):
    r = _torchrun(2, _folder(work, "imgs", "labs", work / "tr2"))
    assert r.returncode == 0, r.stdout + r.stderr
    _same_numbers(single, work / "tr2")
    res = _results(work / "tr2")
    assert res["extra"]["ranks"] == 2 and res["extra"]["merged_from"] == [[0, 2], [1, 2]]
    # each rank kept the state `--shard r/2` writes; shards run separately + merge agree
    for i in range(2):
        assert main(_folder(work, "imgs", "labs", work / f"s{i}", "--shard", f"{i}/2",
                            "--no-report")) == 0
        a = EvalState.load(work / "tr2" / f"state_shard{i}of2.npz")
        b = EvalState.load(work / f"s{i}" / f"state_shard{i}of2.npz")
        assert a.done == b.done and len(a.done) == (3 if i == 0 else 2)
        assert np.array_equal(a.semantic_metric.confusion, b.semantic_metric.confusion)
    assert main(["merge", str(work / "s0" / "state_shard0of2.npz"),
                 str(work / "s1" / "state_shard1of2.npz"), "--out", str(work / "merged")]) == 0
    _same_numbers(work / "merged", work / "tr2")


def test_bag_with_pq_two_ranks_bit_for_bit(work, single):
    bag = write_panoptic_bag(work / "panbag", 3)
    args = ["bag", *_engine(work), "--bag", str(bag), "--image-topic", "/camera/image",
            "--panoptic-topic", "/camera/panoptic", "--segments-topic", "/camera/segments",
            "--classes", str(work / "classes.txt"), "--quiet"]
    assert main([*args, "--out", str(work / "bag1")]) == 0
    r = _torchrun(2, [*args, "--out", str(work / "bag2")])
    assert r.returncode == 0, r.stdout + r.stderr
    _same_numbers(work / "bag1", work / "bag2")
    assert sum(_results(work / "bag2")["panoptic"]["tp"]) > 0 or \
        sum(_results(work / "bag2")["panoptic"]["fp"]) > 0
    # the exact IoU sums themselves: rank states add up to the single run's state
    one = EvalState.load(work / "bag1" / "state_shard0of1.npz")
    parts = [EvalState.load(work / "bag2" / f"state_shard{i}of2.npz") for i in range(2)]
    assert (parts[0].panoptic_metric.iou_fixed + parts[1].panoptic_metric.iou_fixed).tolist() \
        == one.panoptic_metric.iou_fixed.tolist()


def test_three_ranks_two_frames(work, single):
    assert main(_folder(work, "imgs2", "labs2", work / "two1")) == 0
    r = _torchrun(3, _folder(work, "imgs2", "labs2", work / "two3"))
    assert r.returncode == 0, r.stdout + r.stderr
    _same_numbers(work / "two1", work / "two3")
    assert not (work / "two3" / "state_shard2of3.npz").exists()    # rank 2 had nothing to do
    assert _results(work / "two3")["extra"]["merged_from"] == [[0, 3], [1, 3], [2, 3]]


def _rank_pid(marker, rank):
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            env = (p / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"OVSEG_TEST_RUN={marker}".encode() in env and f"RANK={rank}".encode() in env:
            return int(p.name)
    return None


def test_killed_rank_leaves_no_complete_report_and_resume_completes(work, single):
    # the same 5 frames, but rank 1's second frame (f3) is a FIFO: reading it blocks until
    # the test opens the other end, so rank 1 is stopped mid-run at a known place
    images = work / "imgs_fifo"
    images.mkdir()
    for i in (0, 1, 2, 4):
        (images / f"f{i}.png").write_bytes((work / "imgs" / f"f{i}.png").read_bytes())
    fifo = images / "f3.png"
    os.mkfifo(fifo)
    out = work / "killed"
    marker = uuid.uuid4().hex
    log_path = work / "killed.log"
    proc = _torchrun(2, _folder(work, "imgs_fifo", "labs", out, "--save-every", "1"),
                     marker=marker, wait=False, wait_log=log_path)
    writer = None
    try:
        deadline = time.monotonic() + 300
        while writer is None:          # succeeds once a reader is inside open(): rank 1 at f3
            try:
                writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
                assert proc.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "rank 1 never reached the FIFO frame"
                time.sleep(0.2)
        pid = _rank_pid(marker, 1)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=300)
    finally:
        if writer is not None:
            os.close(writer)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, log_path.read_text()
    assert not (out / "results.json").exists()
    report = out / "report.md"
    assert not report.exists() or "complete: yes" not in report.read_text()
    st1 = EvalState.load(out / "state_shard1of2.npz")
    assert st1.done == ["f1.png"] and not st1.finished
    # the frame is readable again: --resume completes only what is missing
    fifo.unlink()
    (images / "f3.png").write_bytes((work / "imgs" / "f3.png").read_bytes())
    r = _torchrun(2, _folder(work, "imgs_fifo", "labs", out, "--resume"))
    assert r.returncode == 0, r.stdout + r.stderr
    _same_numbers(single, out)
    assert EvalState.load(out / "state_shard1of2.npz").done == ["f1.png", "f3.png"]


def test_infer_bags_over_two_ranks(work, single):
    from ovseg_ros.eval import bags as B

    bags = work / "many"
    bags.mkdir()
    for k in range(3):
        B.write_image_bag(bags / f"r{k}", [(10**9, np.full((16, 20, 3), 60 * k, np.uint8),
                                            None)], label_topic=None)
    r = _torchrun(2, ["infer-bags", *_engine(work), "--bags", str(bags), "--image-topic",
                      "/camera/image", "--classes", str(work / "classes.txt"), "--out-dir",
                      str(work / "many_out")])
    assert r.returncode == 0, r.stdout + r.stderr
    summary = json.loads((work / "many_out" / "summary.json").read_text())
    assert [(Path(x["bag"]).name, x["status"], x["frames"]) for x in summary["records"]] == \
        [("r0", "ok", 1), ("r1", "ok", 1), ("r2", "ok", 1)]
    assert all((work / "many_out" / f"r{k}" / "metadata.yaml").is_file() for k in range(3))
