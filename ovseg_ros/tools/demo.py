"""End-to-end demo: the node on the sample bag, outputs recorded (``make demo``).

    python scripts/make_sample_bag.py
    python -m ovseg_ros.tools.demo --out out/demo [--max-frames N] [--config FILE]

What it does, with real processes over DDS:
  1. starts ``python -m ovseg_ros.node`` as a separate process (namespace /demo),
  2. plays the sample bag into it (rosbags reader + rclpy publishers: every
     Image topic -> /demo/image, CompressedImage -> /demo/image/compressed,
     CameraInfo -> /demo/camera_info), with flow control so no frame is lost,
  3. halfway through, changes the vocabulary with the set_vocabulary service,
  4. records every output topic into an MCAP bag (rosbags writer), writes the
     overlays as PNGs and a summary (frames, fps, latency, vocabulary),
  5. then plays the SYNTHETIC RGB-D bag (data/sample/rgbd_bag: /rgbd/image_raw,
     /rgbd/depth, /rgbd/camera_info) into the same node (depth_enabled) with its
     vocabulary (wall, floor, box), records points, segments_3d and markers too, and
     writes a top-down plot of the labelled cloud (x vs z, coloured by class,
     ``rgbd_topdown.png``) and the 3D segment table into the summary.

Weights: without --config it uses the small pretrained preset
(config/jetson_small.yaml on the available device). With network, the weights it
lacks are downloaded once (``ovseg-weights fetch``, with progress bars) into the
huggingface_hub cache; offline, that step says at once what is missing. The node
then loads only weights on disk (HF_HUB_OFFLINE=1). If they are not there it
says so and runs the tiny RANDOM-weight preset (config/demo_tiny.yaml) instead:
the console, the summary and every overlay image then say RANDOM WEIGHTS.
``--weights-dir BUNDLE`` runs the preset of an unpacked weights bundle
(docs/weights.md), never touching the network.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

from ..core.outputs import outputs_for

ROOT = Path(__file__).resolve().parent.parent.parent
NAMESPACE = "/demo"
# node topic (relative to the namespace) -> message type: the camera's outputs
# (core/outputs.py, with the 3D ones of the RGB-D phase; no embeddings) and the node's own
OUTPUT_TOPICS = {o.topic: o.msg_type for o in outputs_for(depth=True, embeddings=False)}
OUTPUT_TOPICS.update({"vocabulary": "ovseg_ros/msg/Vocabulary",
                      "/diagnostics": "diagnostic_msgs/msg/DiagnosticArray"})
SECOND_VOCABULARY = ["person", "cat", "cup,mug", "rocket", "motorcycle", "sky", "grass", "floor"]
RANDOM_BANNER = ("RANDOM WEIGHTS: no pretrained weights on disk, running the tiny random-weight "
                 "preset (config/demo_tiny.yaml); labels are meaningless")


def _log(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def _find_msg_dir() -> Path:
    """The .msg files, for registering ovseg_ros types with the rosbags typestore."""
    here = ROOT / "msg"
    if here.is_dir():
        return here
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("ovseg_ros")) / "msg"


def make_typestore():
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    types = {}
    for f in sorted(_find_msg_dir().glob("*.msg")):
        types.update(get_types_from_msg(f.read_text(), f"ovseg_ros/msg/{f.stem}"))
    ts.register(types)
    return ts


def _key(header) -> tuple:
    return (header.stamp.sec, header.stamp.nanosec, header.frame_id)


def draw_legend(rgb, segments):
    """Class colour swatches and names of the classes present, bottom left."""
    import cv2
    import numpy as np

    from ovseg_ros.core.palette import class_color

    classes = sorted({(s.class_id, s.class_name) for s in segments.segments})
    if not classes:
        return rgb
    img = np.ascontiguousarray(rgb).copy()
    h, w = img.shape[:2]
    scale = max(0.4, min(w, h) / 900.0)
    line = int(28 * scale) + 6
    width = max(cv2.getTextSize(f"{cid}: {name}", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0]
                for cid, name in classes) + line + 16
    top = max(0, h - line * len(classes) - 8)
    cv2.rectangle(img, (0, top), (min(w, width), h), (0, 0, 0), -1)
    for i, (cid, name) in enumerate(classes):
        y = top + 4 + i * line
        cv2.rectangle(img, (6, y + 2), (6 + line - 6, y + line - 4), class_color(cid), -1)
        cv2.putText(img, f"{cid}: {name}", (line + 6, y + line - 8), cv2.FONT_HERSHEY_SIMPLEX,
                    scale, (255, 255, 255), 1, cv2.LINE_AA)
    return img


# --- the node process ------------------------------------------------------------------
class NodeProcess:
    def __init__(self, config: Path, log_path: Path, env: Dict[str, str], extra: List[str]):
        self.log_path = log_path
        self._log = open(log_path, "w")
        cmd = [sys.executable, "-m", "ovseg_ros.node", "--ros-args", "--params-file", str(config),
               "-r", f"__ns:={NAMESPACE}"] + extra
        self.proc = subprocess.Popen(cmd, cwd=str(ROOT), env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, n: int = 15) -> str:
        self._log.flush()
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# --- player + recorder ---------------------------------------------------------------------
class DemoClient:
    """rclpy node in this process: publishes bag frames, records the node's outputs."""

    def __init__(self, out: Path, writer, typestore, context):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy)
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        from ovseg_ros.ros.qos import latched_qos, output_qos
        from ovseg_ros.srv import SetVocabulary

        self.out = out
        self.node = rclpy.create_node("ovseg_demo_player", namespace=NAMESPACE, context=context)
        self.lock = threading.Lock()
        reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10,
                              reliability=ReliabilityPolicy.RELIABLE,
                              durability=DurabilityPolicy.VOLATILE)
        self.pub = {"image": self.node.create_publisher(Image, "image", reliable),
                    "compressed": self.node.create_publisher(CompressedImage, "image/compressed",
                                                             reliable),
                    "info": self.node.create_publisher(CameraInfo, "camera_info", reliable),
                    "depth": self.node.create_publisher(Image, "depth", reliable)}
        self.writer, self.ts = writer, typestore
        self.conns = {}
        self.counts: Dict[str, int] = {t: 0 for t in OUTPUT_TOPICS}
        self.sent_at: Dict[tuple, float] = {}
        self.latencies: List[float] = []
        self.output_times: List[float] = []
        self.vocabularies: List[dict] = []
        self.diagnostics: Dict[str, str] = {}
        self.pngs: List[str] = []
        self._halves: Dict[tuple, dict] = {}
        self.last_3d: Dict[str, object] = {}      # the newest points / segments_3d message
        self._subs = []
        msg_classes = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CameraInfo": CameraInfo}
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import PointCloud2
        from visualization_msgs.msg import MarkerArray

        from ovseg_ros.msg import Segments, Segments3D, Vocabulary

        msg_classes.update({"ovseg_ros/msg/Segments": Segments,
                            "ovseg_ros/msg/Vocabulary": Vocabulary,
                            "diagnostic_msgs/msg/DiagnosticArray": DiagnosticArray,
                            "sensor_msgs/msg/PointCloud2": PointCloud2,
                            "ovseg_ros/msg/Segments3D": Segments3D,
                            "visualization_msgs/msg/MarkerArray": MarkerArray})
        self.msg_classes = msg_classes
        for topic, msgtype in OUTPUT_TOPICS.items():
            # the bag connection is added at the topic's first message, with the QoS its
            # publishers offer (recorded like rosbag2 does, so `ros2 bag play` replays the
            # latched vocabulary latched)
            qos = latched_qos() if topic == "vocabulary" else (10 if topic == "/diagnostics"
                                                                else output_qos(depth=50))
            self._subs.append(self.node.create_subscription(
                msg_classes[msgtype], topic, lambda data, t=topic: self._on_output(t, data), qos,
                raw=True))
        self.vocab_client = self.node.create_client(SetVocabulary, "set_vocabulary")
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        self._spin = threading.Thread(target=self._spin_loop, daemon=True)
        self._running = True
        self._spin.start()

    def _spin_loop(self) -> None:
        while self._running:
            self.executor.spin_once(timeout_sec=0.05)

    def _on_output(self, topic: str, data: bytes) -> None:
        from rclpy.serialization import deserialize_message

        now = time.monotonic()
        with self.lock:
            if topic not in self.conns:
                self.conns[topic] = self._add_connection(topic)
            self.writer.write(self.conns[topic], time.time_ns(), data)
            self.counts[topic] += 1
        cls = self.msg_classes[OUTPUT_TOPICS[topic]]
        if topic == "semantic":
            msg = deserialize_message(data, cls)
            key = (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id)
            with self.lock:
                t_sent = self.sent_at.get(key)
                if t_sent is not None:
                    self.latencies.append(now - t_sent)
                self.output_times.append(now)
        elif topic == "colored":
            msg = deserialize_message(data, cls)
            self._pair(_key(msg.header), colored=msg)
        elif topic == "segments":
            msg = deserialize_message(data, cls)
            self._pair(_key(msg.header), segments=msg)
        elif topic in ("points", "segments_3d"):
            msg = deserialize_message(data, cls)
            with self.lock:
                self.last_3d[topic] = msg
        elif topic == "vocabulary":
            msg = deserialize_message(data, cls)
            with self.lock:
                self.vocabularies.append({"version": msg.version, "engine": msg.engine,
                                          "random_weights": msg.random_weights,
                                          "classes": [c.name for c in msg.classes]})
        elif topic == "/diagnostics":
            msg = deserialize_message(data, cls)
            for st in msg.status:
                if st.name.startswith("ovseg_node"):
                    with self.lock:
                        self.diagnostics = {kv.key: kv.value for kv in st.values}
                        self.diagnostics["_message"] = st.message

    def _add_connection(self, topic: str):
        """The bag connection of an output topic, carrying the QoS profiles its publishers
        offer (from the ROS graph, as ``ros2 bag record`` does)."""
        from ovseg_ros.eval.bags import latched_qos as bag_latched, make_qos, output_qos
        from ovseg_ros.eval.bags import qos_from_profile

        full = topic if topic.startswith("/") else f"{NAMESPACE}/{topic}"
        offers = [qos_from_profile(info.qos_profile)
                  for info in self.node.get_publishers_info_by_topic(full)]
        if not offers:
            # a message arrived, so a publisher exists; the graph cache can lag behind it
            declared = {"vocabulary": bag_latched(), "/diagnostics": make_qos(depth=10)}
            offers = [declared.get(topic) or output_qos()]
            _log(f"no publisher of {full} in the ROS graph yet; recording the node's "
                 f"declared QoS for it")
        return self.writer.add_connection(full, OUTPUT_TOPICS[topic], typestore=self.ts,
                                          offered_qos_profiles=offers)

    def _pair(self, key, colored=None, segments=None) -> None:
        """Write an overlay PNG once both the colour image and the segments of a frame are in
        (the segments name the classes for the legend)."""
        with self.lock:
            entry = self._halves.setdefault(key, {})
            if colored is not None:
                entry["colored"] = colored
            if segments is not None:
                entry["segments"] = segments
            if len(entry) < 2:
                return
            del self._halves[key]
        self._write_png(entry["colored"], entry["segments"])

    def flush_pngs(self) -> None:
        with self.lock:
            left, self._halves = self._halves, {}
        for entry in left.values():
            if "colored" in entry:
                self._write_png(entry["colored"], None)

    def _write_png(self, msg, segments) -> None:
        import cv2

        from ovseg_ros.ros.image_conv import image_to_array

        rgb = image_to_array(msg)
        if segments is not None:
            rgb = draw_legend(rgb, segments)
        with self.lock:
            idx = len(self.pngs)
            name = f"overlay_{idx:03d}_{msg.header.frame_id or 'frame'}.png"
            self.pngs.append(name)
        cv2.imwrite(str(self.out / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def processed(self) -> int:
        with self.lock:
            return self.counts["semantic"]

    def wait_ready(self, node: NodeProcess, timeout: float) -> Optional[str]:
        """None when the node is up (vocabulary latched, image subscribed), else why not."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not node.alive():
                return f"the node exited (code {node.proc.returncode}):\n{node.tail()}"
            with self.lock:
                have_vocab = bool(self.vocabularies)
            if have_vocab and self.pub["image"].get_subscription_count() > 0:
                time.sleep(0.5)   # let the remaining output subscriptions match too
                return None
            time.sleep(0.1)
        return f"the node did not become ready within {timeout:.0f} s:\n{node.tail()}"

    def set_vocabulary(self, classes: List[str], timeout: float = 120.0) -> dict:
        from ovseg_ros.srv import SetVocabulary

        if not self.vocab_client.wait_for_service(timeout_sec=10.0):
            return {"success": False, "message": "set_vocabulary service not available"}
        fut = self.vocab_client.call_async(SetVocabulary.Request(classes=classes))
        end = time.monotonic() + timeout
        while not fut.done() and time.monotonic() < end:
            time.sleep(0.05)
        if not fut.done():
            return {"success": False, "message": f"no answer within {timeout:.0f} s"}
        r = fut.result()
        return {"success": r.success, "message": r.message, "version": r.version,
                "classes": {c.id: c.name for c in r.classes}}

    def close(self) -> None:
        self._running = False
        self._spin.join(timeout=2.0)
        self.executor.shutdown()
        self.node.destroy_node()


def read_bag_frames(bag: Path, max_frames: int, topics: Optional[Dict[str, str]] = None):
    """(kind, serialized bytes, msgtype) in bag order; camera_info (and depth) before the
    image of the same stamp so the node has the matching calibration (and depth partner)
    when the image arrives. ``topics``: topic -> kind (image, compressed, info, depth);
    None: every topic, its kind from its type."""
    from rosbags.rosbag2 import Reader

    kinds = {"sensor_msgs/msg/Image": "image", "sensor_msgs/msg/CompressedImage": "compressed",
             "sensor_msgs/msg/CameraInfo": "info"}
    items = []
    with Reader(bag) as reader:
        conns = [c for c in reader.connections
                 if (c.topic in topics if topics is not None else c.msgtype in kinds)]
        for conn, t, raw in reader.messages(connections=conns):
            kind = topics[conn.topic] if topics is not None else kinds[conn.msgtype]
            items.append((t, 0 if kind in ("info", "depth") else 1, kind, bytes(raw)))
    items.sort(key=lambda x: (x[0], x[1]))
    frames, n = [], 0
    for t, _, kind, raw in items:
        if kind not in ("info", "depth"):
            if max_frames and n >= max_frames:
                break
            n += 1
        frames.append((t, kind, raw))
    return frames


def play(client: DemoClient, node: NodeProcess, frames, ahead: int, rate: float,
         timeout: float, vocab_at: int, results: dict) -> int:
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    cls = {"image": Image, "compressed": CompressedImage, "info": CameraInfo, "depth": Image}
    base = client.processed()        # outputs of an earlier phase
    sent = 0
    t_bag0, t_wall0 = frames[0][0] if frames else 0, time.monotonic()
    for t, kind, raw in frames:
        if rate > 0:   # not faster than the bag's own timing (scaled)
            delay = (t - t_bag0) / 1e9 / rate - (time.monotonic() - t_wall0)
            if delay > 0:
                time.sleep(delay)
        if kind in ("info", "depth"):     # before the image of their stamp
            client.pub[kind].publish(deserialize_message(raw, cls[kind]))
            continue
        if sent == vocab_at:
            _log(f"calling set_vocabulary {SECOND_VOCABULARY}")
            results["set_vocabulary"] = client.set_vocabulary(SECOND_VOCABULARY)
            _log(f"  -> success={results['set_vocabulary']['success']}: "
                 f"{results['set_vocabulary']['message']}")
        # flow control: at most `ahead` frames in flight, so nothing is dropped
        end = time.monotonic() + timeout
        while sent - (client.processed() - base) >= ahead:
            if not node.alive() or time.monotonic() > end:
                return sent
            time.sleep(0.01)
        msg = deserialize_message(raw, cls[kind])
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id)
        with client.lock:
            client.sent_at[key] = time.monotonic()
        client.pub[kind].publish(msg)
        sent += 1
    end = time.monotonic() + timeout
    while client.processed() - base < sent and node.alive() and time.monotonic() < end:
        time.sleep(0.05)
    return sent


#: the RGB-D sample bag's topics (scripts/make_sample_bag.py) -> what the player makes of them
RGBD_TOPICS = {"/rgbd/image_raw": "image", "/rgbd/depth": "depth", "/rgbd/camera_info": "info"}


def rgbd_phase(args, client: DemoClient, node: NodeProcess, out: Path) -> Optional[dict]:
    """Play the SYNTHETIC RGB-D bag into the node (its vocabulary: the scene's classes) and
    summarise the 3D outputs: counts, a top-down plot of the last labelled cloud and its 3D
    segment table. None when there is no RGB-D bag."""
    from ovseg_ros.testing import rgbd_scene

    bag = Path(args.rgbd_bag)
    if args.rgbd_frames < 0 or not (bag / "metadata.yaml").exists():
        _log(f"no RGB-D phase ({'skipped' if args.rgbd_frames < 0 else f'no bag at {bag}'})")
        return None
    frames = read_bag_frames(bag, args.rgbd_frames or args.max_frames, RGBD_TOPICS)
    classes = list(rgbd_scene.CLASSES)
    _log(f"RGB-D phase: {bag} with the vocabulary {classes}")
    vocab = client.set_vocabulary(classes)
    with client.lock:
        before = dict(client.counts)
    sent = play(client, node, frames, args.ahead, args.rate, args.frame_timeout, vocab_at=-1,
                results={})
    # the 3D messages of the last frame follow its semantic; the cloud (9.8 MB at 640x480)
    # arrives last of them
    end = time.monotonic() + 20.0
    while time.monotonic() < end and node.alive():
        with client.lock:
            if all(client.counts[t] - before[t] >= sent
                   for t in ("points", "segments_3d", "markers")):
                break
        time.sleep(0.05)
    with client.lock:
        counts = {t: client.counts[t] - before[t] for t in ("semantic", "points", "segments_3d",
                                                            "markers")}
        points, segs = client.last_3d.get("points"), client.last_3d.get("segments_3d")
    table = [{"id": s.id, "class": s.class_name,
              "centroid": [round(v, 3) for v in (s.centroid.x, s.centroid.y, s.centroid.z)],
              "size": [round(v, 3) for v in (s.size.x, s.size.y, s.size.z)],
              "valid_points": s.valid_points} for s in (segs.segments if segs else [])]
    plot = None
    if points is not None:
        plot = "rgbd_topdown.png"
        plot_topdown(points, segs, out / plot)
    return {"bag": str(bag), "frames_sent": sent, "outputs": counts,
            "set_vocabulary": vocab.get("success"), "segments_3d": table, "plot": plot,
            "truth": str(bag.parent / (bag.name + "_truth.json"))}


def plot_topdown(points, segments_3d, path: Path) -> None:
    """Top-down view of a labelled cloud (x right, z forward), points in their class colour,
    the 3D segment centroids marked with their ids."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ovseg_ros.core.palette import class_color
    from ovseg_ros.core.types import UNLABELED
    from ovseg_ros.eval.bags_3d import cloud_from_msg

    cloud = cloud_from_msg(points).reshape(-1)
    cloud = cloud[np.isfinite(cloud["z"])][::4]          # every 4th point is plenty
    labels = cloud["label"].astype(int)
    colours = np.array([(128, 128, 128) if lab == UNLABELED else class_color(lab)
                        for lab in labels], float).reshape(-1, 3) / 255.0
    fig, ax = plt.subplots(figsize=(7, 6), dpi=100)
    ax.scatter(cloud["x"], cloud["z"], c=colours, s=1, linewidths=0)
    names = {}
    for s in (segments_3d.segments if segments_3d is not None else []):
        names[s.class_id] = s.class_name
        ax.plot(s.centroid.x, s.centroid.z, "k+", ms=10)
        ax.annotate(f"{s.id}: {s.class_name}", (s.centroid.x, s.centroid.z), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    for cid, name in sorted(names.items()):
        ax.scatter([], [], color=np.array(class_color(cid)) / 255.0, label=f"{cid}: {name}")
    if names:
        ax.legend(loc="upper right", fontsize=8)
    ax.set_xlabel("x (m, right)")
    ax.set_ylabel("z (m, forward)")
    ax.set_title("labelled cloud, top-down (colour optical frame)")
    ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def pick_config(args, env) -> tuple:
    """(config path, extra node args, label, random?) — see the module docstring."""
    if args.weights_dir:
        from ovseg_ros.weights import is_bundle

        bundle = Path(args.weights_dir).expanduser().resolve()
        if not is_bundle(str(bundle)):
            raise SystemExit(f"[demo] --weights-dir {bundle} is not an unpacked weights bundle "
                             "(make one with ovseg-weights pack / unpack)")
        # the node finds the bundle manifest in weights_dir and never tries the network
        return (bundle / "config.yaml", ["-p", f"weights_dir:={bundle}"],
                f"weights bundle {bundle}", None)
    if args.config:
        return Path(args.config), [], f"user config {args.config}", None
    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    extra = [] if cuda else ["-p", "device:=cpu", "-p", "precision:=fp32"]
    return (ROOT / "config" / "jetson_small.yaml", extra,
            "small pretrained preset config/jetson_small.yaml (CLIP ViT-B/16 + DINO ViT-S/8, "
            f"one 224 px window, {'cuda' if cuda else 'cpu'})", False)


def fetch_preset_weights(config: Path) -> bool:
    """With network, download what the pretrained preset lacks (progress bars; later runs
    find it in the huggingface_hub cache); offline, say what is missing, at once. True when
    every file is on disk."""
    from ovseg_ros.config import make_config
    from ovseg_ros.weights.fetch import fetch

    missing = fetch(make_config(config), say=_log)
    if missing:
        _log("the pretrained preset's weights are not on disk (see above)")
    return not missing


def summarize(args, client: DemoClient, sent: int, wall: float, preset: str, random_w: bool,
              results: dict, out_bag: Path, domain: str) -> dict:
    import statistics

    lat = sorted(client.latencies)
    times = client.output_times
    fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    vocab = client.vocabularies
    summary = {
        "weights": "RANDOM WEIGHTS" if random_w else "pretrained",
        "preset": preset,
        "bag": str(args.bag),
        "frames_sent": sent,
        "frames_processed": client.processed(),
        "outputs_per_topic": dict(client.counts),
        "wall_s": round(wall, 2),
        "fps": round(fps, 2),
        "latency_ms": {"mean": round(1000 * statistics.mean(lat), 1) if lat else None,
                       "p50": round(1000 * lat[len(lat) // 2], 1) if lat else None,
                       "max": round(1000 * lat[-1], 1) if lat else None},
        "node_diagnostics": client.diagnostics,
        "vocabulary_initial": vocab[0]["classes"] if vocab else None,
        "vocabulary_final": vocab[-1]["classes"] if vocab else None,
        "set_vocabulary": results.get("set_vocabulary"),
        "output_bag": str(out_bag),
        "overlays": client.pngs,
        "ros_domain_id": domain,
    }
    return summary


def write_summary(out: Path, s: dict) -> None:
    (out / "summary.json").write_text(json.dumps(s, indent=2))
    lines = ["# ovseg_ros demo", ""]
    if s["weights"] == "RANDOM WEIGHTS":
        lines += [f"**{RANDOM_BANNER}**", ""]
    lines += [f"- weights: **{s['weights']}**", f"- preset: {s['preset']}",
              f"- input bag: `{s['bag']}`",
              f"- frames sent / processed: {s['frames_sent']} / {s['frames_processed']}",
              f"- throughput: {s['fps']} frames/s over {s['wall_s']} s wall time "
              "(flow-controlled playback, so this is the node's processing rate)",
              f"- latency publish -> semantic received: mean {s['latency_ms']['mean']} ms, "
              f"p50 {s['latency_ms']['p50']} ms, max {s['latency_ms']['max']} ms",
              f"- node diagnostics: fps {s['node_diagnostics'].get('fps')}, inference "
              f"{s['node_diagnostics'].get('inference_ms')} ms, dropped "
              f"{s['node_diagnostics'].get('frames_dropped')}, engine "
              f"{s['node_diagnostics'].get('engine')} on {s['node_diagnostics'].get('device')}",
              f"- initial vocabulary: {s['vocabulary_initial']}",
              f"- vocabulary after set_vocabulary: {s['vocabulary_final']}",
              f"- output bag: `{s['output_bag']}`",
              f"- overlays: {len(s['overlays'])} PNGs in this folder",
              "", "Outputs per topic (the sample bag; the RGB-D phase's are below):", ""]
    lines += [f"- `{t}`: {n}" for t, n in s["outputs_per_topic"].items()]
    lines += rgbd_summary_lines(s.get("rgbd"))
    (out / "summary.md").write_text("\n".join(lines) + "\n")


def rgbd_summary_lines(r: Optional[dict]) -> List[str]:
    """The RGB-D phase's part of summary.md: counts, the plot and the 3D segment table."""
    if not r:
        return []
    o = r["outputs"]
    lines = ["", "## 3D outputs (SYNTHETIC RGB-D bag)", "",
             f"- input bag: `{r['bag']}` ({r['frames_sent']} frames, registered 16UC1 depth); "
             f"ground truth: `{r['truth']}`",
             f"- outputs: semantic {o['semantic']}, points {o['points']}, segments_3d "
             f"{o['segments_3d']}, markers {o['markers']}"]
    if r["plot"]:
        lines += ["", f"![top-down view of the labelled cloud]({r['plot']})"]
    lines += ["", "3D segments of the last frame (colour optical frame, metres):", "",
              "| id | class | centroid x, y, z | size x, y, z | valid points |",
              "|---:|---|---|---|---:|"]
    lines += [f"| {t['id']} | {t['class']} | {', '.join(f'{v:.3f}' for v in t['centroid'])} | "
              f"{', '.join(f'{v:.3f}' for v in t['size'])} | {t['valid_points']} |"
              for t in r["segments_3d"]]
    return lines


def run(args) -> int:
    import rclpy
    from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin, Writer

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("overlay_*.png"):
        old.unlink()
    bag = Path(args.bag)
    if not (bag / "metadata.yaml").exists():
        _log(f"no sample bag at {bag}; run: python scripts/make_sample_bag.py")
        return 2
    env = dict(os.environ)
    domain = env.get("ROS_DOMAIN_ID") or str(random.randint(1, 100))
    env["ROS_DOMAIN_ID"] = domain
    # Fast DDS drops best-effort frames above ~512 KiB with its defaults: the node and this
    # player/recorder get config/fastdds_camera.xml, as the launch file does, unless the
    # environment already chooses (docs/node.md, "Large frames")
    from ovseg_ros.launch_logic import dds_environment

    dds_env, dds_note = dds_environment("", ROOT, Path.cwd(), os.environ)
    env.update(dds_env)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    os.environ["ROS_DOMAIN_ID"] = domain
    os.environ.update(dds_env)
    _log(f"ROS_DOMAIN_ID={domain}; namespace {NAMESPACE}; input bag {bag}; {dds_note}")

    out_bag = out / "output_bag"
    if out_bag.exists():
        import shutil

        shutil.rmtree(out_bag)
    ts = make_typestore()
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=int(domain))
    writer = Writer(out_bag, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)  # labels compress well
    writer.open()
    client = DemoClient(out, writer, ts, ctx)
    node_args = ["-p", "process_every_frame:=true", "-p", "image_reliability:=reliable",
                 "-p", "image_depth:=10", "-p", "subscribe_compressed:=true",
                 "-p", "depth_enabled:=true"]
    config, extra, preset, random_w = pick_config(args, env)
    node = None
    try:
        if random_w is False and fetch_preset_weights(config):
            _log(f"trying {preset} with weights already on disk (HF_HUB_OFFLINE=1)")
            node = NodeProcess(config, out / "node.log", dict(env, HF_HUB_OFFLINE="1"),
                               node_args + extra)
            why = client.wait_ready(node, args.load_timeout)
            if why is not None:
                node.stop()
                _log("pretrained weights are not available:\n    " + why.replace("\n", "\n    "))
                node = None
        if node is None:
            if random_w is False:
                config, preset = (ROOT / "config" / "demo_tiny.yaml",
                                  "tiny random-weight preset config/demo_tiny.yaml "
                                  "(ovseg-tiny-ViT CLIP + ovseg_tiny_vit_patch8, 112 px windows)")
                _log("=" * 78)
                _log(RANDOM_BANNER)
                _log("=" * 78)
            node = NodeProcess(config, out / "node.log", env,
                               node_args + (extra if random_w is None else []))
            why = client.wait_ready(node, args.load_timeout)
            if why is not None:
                _log("the node did not start: " + why)
                return 1
        with client.lock:
            random_w = bool(client.vocabularies and client.vocabularies[-1]["random_weights"])
        _log(f"node ready: {preset}; weights: {'RANDOM' if random_w else 'pretrained'}")
        frames = read_bag_frames(bag, args.max_frames)
        n_images = sum(1 for f in frames if f[1] != "info")
        _log(f"playing {n_images} frames")
        results: dict = {}
        t0 = time.monotonic()
        sent = play(client, node, frames, args.ahead, args.rate, args.frame_timeout,
                    vocab_at=n_images // 2 if n_images > 1 else -1, results=results)
        wall = time.monotonic() - t0
        time.sleep(1.5 * 1.0)   # one more diagnostics period, for the final figures
        client.flush_pngs()
        summary = summarize(args, client, sent, wall, preset, random_w, results, out_bag,
                            domain)
        ok = node.alive() and summary["frames_processed"] >= sent > 0
        rgbd = rgbd_phase(args, client, node, out)
        if rgbd is not None:
            summary["rgbd"] = rgbd
            # the colour path never waits for depth: a colour frame whose depth message is
            # still in flight gets its 2D outputs only, so on a loaded machine a frame may
            # miss its 3D ones; the phase needs 3D outputs, not every frame's
            ok = ok and node.alive() and rgbd["frames_sent"] > 0 and \
                rgbd["outputs"]["points"] >= 1 and rgbd["outputs"]["semantic"] >= 1
    finally:
        if node is not None:
            node.stop()
        client.close()
        writer.close()
        rclpy.shutdown(context=ctx)
    write_summary(out, summary)
    _log(f"processed {summary['frames_processed']}/{sent} frames, {summary['fps']} fps, latency "
         f"mean {summary['latency_ms']['mean']} ms; outputs in {out}")
    if random_w:
        _log("NOTE: " + RANDOM_BANNER)
    return 0 if ok else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Run ovseg_node on the sample bag and record its "
                                 "outputs (bag, overlay PNGs, summary).")
    ap.add_argument("--out", default=str(ROOT / "out" / "demo"), help="output folder")
    ap.add_argument("--bag", default=str(ROOT / "data" / "sample" / "sample_bag"),
                    help="input rosbag2 (made by scripts/make_sample_bag.py)")
    ap.add_argument("--weights-dir", default="", help="an unpacked weights bundle "
                    "(ovseg-weights unpack): run its preset, offline")
    ap.add_argument("--config", default="", help="node params file; default: pretrained small "
                    "preset if its weights are on disk, else the tiny random-weight preset")
    ap.add_argument("--max-frames", type=int, default=0, help="stop after N images (0 = all)")
    ap.add_argument("--ahead", type=int, default=2, help="frames in flight (flow control)")
    ap.add_argument("--rate", type=float, default=1.0, help="playback speed vs. the bag's "
                    "timing (0 = as fast as the node allows)")
    ap.add_argument("--load-timeout", type=float, default=240.0,
                    help="seconds to wait for the node to load its model")
    ap.add_argument("--frame-timeout", type=float, default=120.0,
                    help="seconds to wait for one frame's output")
    ap.add_argument("--rgbd-bag", default=str(ROOT / "data" / "sample" / "rgbd_bag"),
                    help="the SYNTHETIC RGB-D bag played after the sample bag (3D outputs)")
    ap.add_argument("--rgbd-frames", type=int, default=0, help="RGB-D frames to play "
                    "(0 = --max-frames, or all; -1 = skip the RGB-D phase)")
    return run(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
