"""`ovseg-eval infer-bags`: many bags with two worker processes; each output is complete or
absent, a failing bag does not stop the others, a summary lists every bag, and a rerun keeps
the complete outputs."""
import json
from pathlib import Path

import numpy as np

from ovseg_ros.eval import bags as B
from ovseg_ros.eval.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "test" / "configs" / "tiny_proxyclip.yaml")


def _frames(n, shift):
    out = []
    for i in range(n):
        img = np.zeros((24, 32, 3), np.uint8)
        img[:, : 8 + shift + i] = (200, 40, 40)
        img[:, 8 + shift + i:] = (40, 60, 220)
        out.append((10**9 + i * 10**8, img, None))
    return out


def _label_bytes(path):
    r = B.open_reader(path)
    try:
        return [bytes(raw) for c, _, raw in r.messages()
                if c.topic in ("/ovseg/semantic", "/ovseg/panoptic", "/ovseg/segments")]
    finally:
        r.close()


def test_many_bags_with_two_workers(tmp_path, capsys):
    bags = tmp_path / "bags"
    bags.mkdir()
    for k in range(3):
        B.write_image_bag(bags / f"run{k}", _frames(2, 3 * k), label_topic=None)
    # a bag whose image topic holds 16-bit images: inference fails on it, the others go on
    B.write_image_bag(bags / "run9_mono16", [(10**9, np.zeros((4, 4, 3), np.uint8), None)],
                      label_topic=None)
    mono = bags / "run9_mono16"
    import shutil
    shutil.rmtree(mono)
    from rosbags.rosbag2 import Writer

    store = B.make_typestore(with_ovseg=False)
    w = Writer(mono, version=9)
    w.open()
    c = w.add_connection("/camera/image", B.IMAGE_TYPE, typestore=store)
    hdr = store.types["std_msgs/msg/Header"](
        stamp=store.types["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="c")
    w.write(c, 10**9, store.serialize_cdr(
        B.numpy_to_image(store, np.zeros((4, 4), np.uint16), "16UC1", hdr), B.IMAGE_TYPE))
    w.close()
    out = tmp_path / "out"
    (out / "run1.partial").mkdir(parents=True)       # leftover of an interrupted earlier run
    argv = ["infer-bags", "--config", TINY, "--set", f"text_cache_dir={tmp_path / 'text'}",
            "--bags", str(bags), "--image-topic", "/camera/image", "--out-dir", str(out),
            "--classes", "voc21"]
    assert main([*argv, "--workers", "2"]) == 1           # one bag failed
    summary = json.loads((out / "summary.json").read_text())
    status = {Path(r["bag"]).name: r["status"] for r in summary["records"]}
    assert status == {"run0": "ok", "run1": "ok", "run2": "ok", "run9_mono16": "failed"}
    assert not summary["complete"] and summary["counts"] == {"ok": 3, "failed": 1}
    failed = [r for r in summary["records"] if r["status"] == "failed"][0]
    assert "not a colour image" in failed["error"]
    assert not (out / "run9_mono16").exists() and not (out / "run9_mono16.partial").exists()
    assert not (out / "run1.partial").exists()
    for k in range(3):
        r = B.open_reader(out / f"run{k}")
        topics = {c.topic: c.msgcount for c in r.connections}
        r.close()
        assert topics["/ovseg/semantic"] == 2 and topics["/camera/image"] == 2
    said = capsys.readouterr().out
    assert "4 bags: 1 failed, 3 ok" in said
    # a second run keeps the complete outputs (no engine for them) and redoes only the failure;
    # the same bag in one process gives the same labels as in a worker process
    first = _label_bytes(out / "run2")
    shutil.rmtree(mono)
    B.write_image_bag(mono, _frames(1, 0), label_topic=None)
    assert main([*argv, "--workers", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    status = {Path(r["bag"]).name: r["status"] for r in summary["records"]}
    assert status == {"run0": "exists", "run1": "exists", "run2": "exists",
                      "run9_mono16": "ok"} and summary["complete"]
    shutil.rmtree(out / "run2")
    assert main([*argv]) == 0
    assert _label_bytes(out / "run2") == first
