"""The bags this project writes carry each topic's offered QoS (offered_qos_profiles), as
rosbag2 records them, so `ros2 bag play` offers them again (a latched `vocabulary` is
replayed transient-local). Read back with rosbags and, for MCAP, with the independent
`mcap` reader (the channel metadata rosbag2's MCAP plugin reads)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INF = {"sec": 9223372036, "nsec": 854775807}


def _metadata_topics(bag: Path) -> dict:
    """topic -> offered_qos_profiles as metadata.yaml holds them (version 9: a list)."""
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == 9
    return {t["topic_metadata"]["name"]: t["topic_metadata"]["offered_qos_profiles"]
            for t in meta["topics_with_message_count"]}


def _rosbags_qos(bag: Path) -> dict:
    from rosbags.rosbag2 import Reader

    with Reader(bag) as reader:
        return {c.topic: list(c.ext.offered_qos_profiles) for c in reader.connections}


def _mcap_qos(bag: Path) -> dict:
    """topic -> offered_qos_profiles parsed from the MCAP channel metadata (a YAML string)."""
    reader_mod = pytest.importorskip("mcap.reader")
    out = {}
    for f in bag.glob("*.mcap"):
        with open(f, "rb") as fh:
            summary = reader_mod.make_reader(fh).get_summary()
        for ch in summary.channels.values():
            out[ch.topic] = yaml.safe_load(ch.metadata["offered_qos_profiles"])
    return out


def _as_dict(q) -> dict:
    """A rosbags Qos in rosbag2's version-9 form."""
    return {"history": q.history.name.lower(), "depth": q.depth,
            "reliability": q.reliability.name.lower(), "durability": q.durability.name.lower(),
            "deadline": {"sec": q.deadline.sec, "nsec": q.deadline.nsec},
            "lifespan": {"sec": q.lifespan.sec, "nsec": q.lifespan.nsec},
            "liveliness": q.liveliness.name.lower(),
            "liveliness_lease_duration": {"sec": q.liveliness_lease_duration.sec,
                                          "nsec": q.liveliness_lease_duration.nsec},
            "avoid_ros_namespace_conventions": q.avoid_ros_namespace_conventions}


def test_qos_profiles_are_what_rosbag2_records():
    from ovseg_ros.eval.bags import BagError, latched_qos, make_qos, output_qos

    assert _as_dict(latched_qos()) == {
        "history": "keep_last", "depth": 1, "reliability": "reliable",
        "durability": "transient_local", "deadline": INF, "lifespan": INF,
        "liveliness": "automatic", "liveliness_lease_duration": INF,
        "avoid_ros_namespace_conventions": False}
    assert _as_dict(output_qos())["durability"] == "volatile"
    assert _as_dict(make_qos("best_effort", depth=1))["reliability"] == "best_effort"
    with pytest.raises(BagError, match="reliability"):
        make_qos("sometimes")


def test_qos_from_rclpy_profile_matches_the_node_publishers():
    pytest.importorskip("rclpy")
    from rclpy.duration import Duration
    from rclpy.qos import LivelinessPolicy

    from ovseg_ros.eval.bags import latched_qos, qos_from_profile
    from ovseg_ros.ros.qos import latched_qos as node_latched

    prof = node_latched()
    inf = Duration(nanoseconds=9_223_372_036_854_775_807)   # what the graph reports
    prof.deadline = prof.lifespan = prof.liveliness_lease_duration = inf
    prof.liveliness = LivelinessPolicy.AUTOMATIC
    assert qos_from_profile(prof) == latched_qos()


def test_every_row_of_the_qos_table_is_the_same_for_the_node_and_a_bag():
    """One QoS table (runtime/qos_table.py): the rclpy profile the node uses and the
    profile a bag records are built from the same row."""
    pytest.importorskip("rclpy")
    from rclpy.duration import Duration
    from rclpy.qos import LivelinessPolicy

    from ovseg_ros.eval.bags import qos_from_profile, qos_from_spec
    from ovseg_ros.ros.qos import profile
    from ovseg_ros.runtime import qos_table

    rows = [qos_table.INPUT, qos_table.CAMERA_INFO, qos_table.OUTPUT, qos_table.LATCHED,
            qos_table.SERVICE, qos_table.input_spec("reliable", 3)]
    inf = Duration(nanoseconds=9_223_372_036_854_775_807)
    for row in rows:
        prof = profile(row)
        prof.deadline = prof.lifespan = prof.liveliness_lease_duration = inf
        prof.liveliness = LivelinessPolicy.AUTOMATIC
        recorded = _as_dict(qos_from_spec(row))
        assert _as_dict(qos_from_profile(prof)) == recorded, row
        assert (recorded["reliability"], recorded["durability"], recorded["history"]) == \
            (row.reliability, row.durability, row.history)
    with pytest.raises(ValueError, match="reliability must be one of"):
        qos_table.input_spec("sometimes")
    with pytest.raises(ValueError, match="depth must be >= 1, got 0"):
        qos_table.OUTPUT.with_depth(0)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_write_image_bag_records_qos(tmp_path, storage):
    from ovseg_ros.eval.bags import playback_image_qos, write_image_bag

    rgb = np.zeros((8, 8, 3), np.uint8)
    bag = write_image_bag(tmp_path / "b", [(1, rgb, np.zeros((8, 8), np.uint16))],
                          storage=storage)
    expected = [_as_dict(playback_image_qos())]
    assert _metadata_topics(bag) == {"/camera/image": expected, "/camera/labels": expected}
    assert {t: [_as_dict(q) for q in qs] for t, qs in _rosbags_qos(bag).items()} == \
        {"/camera/image": expected, "/camera/labels": expected}
    if storage == "mcap":
        assert _mcap_qos(bag) == {"/camera/image": expected, "/camera/labels": expected}


def test_latched_vocabulary_reads_back_transient_local(tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer

    from ovseg_ros.eval.bags import latched_qos, make_typestore

    store = make_typestore()
    bag = tmp_path / "v"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        w.add_connection("/ovseg/vocabulary", "ovseg_ros/msg/Vocabulary", typestore=store,
                         offered_qos_profiles=[latched_qos()])
    for qos in (_metadata_topics(bag), _mcap_qos(bag)):
        assert qos["/ovseg/vocabulary"][0]["durability"] == "transient_local"
    assert _rosbags_qos(bag)["/ovseg/vocabulary"] == [latched_qos()]


def test_sample_bags_record_reliable_qos(tmp_path):
    out = tmp_path / "sample_bag"
    r = subprocess.run([sys.executable, "scripts/make_sample_bag.py", "--out", str(out),
                        "--labelled-only"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    bag = tmp_path / "labelled_bag"
    for qos in (_metadata_topics(bag), _mcap_qos(bag)):
        assert set(qos) == {"/synthetic/image_raw", "/synthetic/labels"}
        assert all(q[0]["reliability"] == "reliable" and q[0]["durability"] == "volatile"
                   for q in qos.values())


def test_demo_recording_carries_the_node_qos(tmp_path):
    """The demo's recorder takes each output's QoS from the ROS graph (the node's
    publishers), as `ros2 bag record` does."""
    pytest.importorskip("rclpy")
    pytest.importorskip("ovseg_ros.msg")
    from node_harness import node_env, run_tool

    subprocess.run([sys.executable, "scripts/make_sample_bag.py"], cwd=ROOT, check=True,
                   timeout=300, capture_output=True)
    env = node_env()
    out = tmp_path / "demo"
    r = run_tool([sys.executable, "-m", "ovseg_ros.tools.demo", "--out", str(out),
                  "--max-frames", "2", "--rate", "0", "--config", "config/demo_tiny.yaml"],
                 cwd=ROOT, env=env, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    bag = out / "output_bag"
    for qos in (_metadata_topics(bag), _mcap_qos(bag)):
        # discovery carries no history/depth: like rosbag2 we record them as the graph
        # reports them (unknown, 0) and `ros2 bag play` substitutes its own history
        vocab = qos["/demo/vocabulary"]
        assert [(q["reliability"], q["durability"], q["history"], q["deadline"]) for q in
                vocab] == [("reliable", "transient_local", "unknown", INF)]
        assert [(q["reliability"], q["durability"]) for q in qos["/demo/semantic"]] == \
            [("reliable", "volatile")]
    assert _rosbags_qos(bag)["/demo/vocabulary"][0].durability.name == "TRANSIENT_LOCAL"
