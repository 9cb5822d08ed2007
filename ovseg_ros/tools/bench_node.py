"""``ovseg-bench --node-overhead``: the node's per-frame work apart from the model.

What the node does to a frame besides ``Segmenter.predict``, with its own
functions, timed per stage:

    decode     sensor_msgs/Image -> HxWx3 RGB (``ros/image_conv.image_to_rgb``: checks
               and the colour conversion of bgr8 etc.)
    products   ``core/products.build_products``: 16UC1 semantic, 32SC1 panoptic,
               confidence, segments with areas and boxes, colour overlay + banner
    messages   ``ros/messages.product_messages``: the sensor_msgs/Image and Segments
    publish    ``publish`` of those messages on rclpy publishers, with a subscriber
               in another process (the serialisation and the DDS write, as with RViz
               listening)

Like the node, only subscribed outputs are built and published; the bench runs
with every output subscribed (``ros2 bag record -a``) and with the label image
and segments only (a downstream consumer, no viewer).

The prediction is synthetic (a label map of ``--node-classes`` classes in
irregular regions, with panoptic segments), sized like the camera, so the
figures do not depend on any model. Runs in the ROS layer (rclpy).
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Sequence

import numpy as np

from ..core.outputs import keys_for

#: the node's per-frame image and segment outputs (core/outputs.py; camera_info is a copy)
TOPICS = keys_for(camera_info=False)


def synthetic_prediction(h: int, w: int, num_classes: int, regions: int = 24, seed: int = 0):
    """A Prediction with ``regions`` irregular regions (nearest of random seeds), each a
    class of the vocabulary and one panoptic segment."""
    from ..core.panoptic_heuristic import semantic_to_panoptic
    from ..core.types import Prediction

    rng = np.random.default_rng(seed)
    seeds = rng.uniform(0, 1, (regions, 2)) * (h, w)
    ys, xs = np.mgrid[0:h:4, 0:w:4]
    d = (ys[..., None] - seeds[:, 0]) ** 2 + (xs[..., None] - seeds[:, 1]) ** 2
    coarse = d.argmin(-1)
    region = np.repeat(np.repeat(coarse, 4, 0), 4, 1)[:h, :w]
    classes = rng.integers(0, num_classes, regions)
    semantic = classes[region].astype(np.int32)
    confidence = rng.uniform(0.2, 1.0, (h, w)).astype(np.float32)
    is_thing = tuple(bool(i % 2) for i in range(num_classes))
    panoptic, segments = semantic_to_panoptic(semantic, confidence, is_thing, 16)
    names = tuple(f"class {i}, synonym {i}" for i in range(num_classes))
    return Prediction(semantic=semantic, panoptic=panoptic, segments=segments, vocabulary=names,
                      vocabulary_version=1, random_weights=True, engine="synthetic",
                      confidence=confidence)


def _subscriber_main(prefix: str, topics: Sequence[str]) -> int:
    """The listening side, in its own process: subscribe to ``topics``."""
    import rclpy
    from sensor_msgs.msg import Image

    from ovseg_ros.msg import Segments

    rclpy.init()
    node = rclpy.create_node("ovseg_bench_listener")
    for t in topics:
        # raw: the listener takes the serialised bytes (as a C++ viewer's cheap
        # deserialisation would), so its own Python work does not load the shared cores
        node.create_subscription(Segments if t == "segments" else Image, f"{prefix}/{t}",
                                 lambda _m: None, 10, raw=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, Exception):
        pass
    return 0


def apply_dds_profile() -> str:
    """Select the Fast DDS profile the launch file selects (config/fastdds_camera.xml, unless
    the environment chooses one), for this process and the listener; returns the decision."""
    from pathlib import Path

    from ..launch_logic import dds_environment

    root = Path(__file__).resolve().parents[2]
    share = None
    try:
        from ament_index_python.packages import get_package_share_directory

        share = Path(get_package_share_directory("ovseg_ros"))
    except Exception:               # not installed as a ROS package: the source tree
        share = root if (root / "config" / "fastdds_camera.xml").is_file() else None
    try:
        env, note = dds_environment("", share, Path.cwd(), os.environ)
    except ValueError as exc:       # the profile file is missing: measure with the defaults
        return f"no Fast DDS profile ({exc})"
    os.environ.update(env)
    return note


def measure(sizes: Sequence[str], iters: int = 50, num_classes: int = 150,
            encoding: str = "bgr8", subscribed: Sequence[str] = TOPICS) -> List[Dict]:
    """Median milliseconds per stage for each WxH size (rows of the table), with a listener
    process subscribed to ``subscribed``. Like the node, outputs without a subscriber are
    neither built nor published."""
    import rclpy
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from ..core.products import build_products
    from ovseg_ros.msg import Segments
    from ..ros.image_conv import image_to_rgb, rgb_to_image
    from ..ros.messages import product_messages

    dds_note = apply_dds_profile()
    prefix = f"/ovseg_bench_{os.getpid()}"
    rclpy.init()
    node = rclpy.create_node("ovseg_bench_node_overhead")
    pubs = {t: node.create_publisher(Segments if t == "segments" else Image, f"{prefix}/{t}", 10)
            for t in TOPICS}
    proc = None
    rows = []
    try:
        proc = subprocess.Popen([sys.executable, "-m", "ovseg_ros.tools.bench_node",
                                 "--listen", prefix, ",".join(subscribed)])
        deadline = time.monotonic() + 60
        while any(pubs[t].get_subscription_count() < 1 for t in subscribed):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the listener process did not subscribe within 60 s")
            time.sleep(0.1)
        for size in sizes:
            w, h = (int(v) for v in size.lower().split("x"))
            rng = np.random.default_rng(1)
            rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            msg = rgb_to_image(rgb, encoding)
            pred = synthetic_prediction(h, w, num_classes)
            stages: Dict[str, List[float]] = {k: [] for k in
                                              ("decode", "products", "messages", "publish")}
            for i in range(iters + 3):
                t0 = time.perf_counter()
                frame = image_to_rgb(msg, max_pixels=w * h)
                t1 = time.perf_counter()
                # the node's rule (node/worker.py _publish_outputs): subscribed outputs only
                wanted = {t for t in TOPICS if pubs[t].get_subscription_count() > 0}
                prod = build_products(pred, frame, pred.vocabulary, overlay_alpha=0.5,
                                      random_weights=True, wanted=wanted)
                t2 = time.perf_counter()
                msgs = product_messages(prod, Header(frame_id="camera"), wanted)
                t3 = time.perf_counter()
                for key, m in msgs.items():
                    pubs[key].publish(m)
                t4 = time.perf_counter()
                if i >= 3:                      # three warm-up frames
                    for k, a, b in (("decode", t0, t1), ("products", t1, t2),
                                    ("messages", t2, t3), ("publish", t3, t4)):
                        stages[k].append((b - a) * 1e3)
            med = {k: statistics.median(v) for k, v in stages.items()}
            totals = [sum(v[i] for v in stages.values()) for i in range(iters)]
            rows.append({"size": size, "encoding": encoding, "classes": num_classes,
                         "segments": len(pred.segments), "iters": iters,
                         **{f"{k}_ms": v for k, v in med.items()},
                         "total_ms": statistics.median(totals),
                         "total_p95_ms": sorted(totals)[int(0.95 * (len(totals) - 1))],
                         "subscribed": ",".join(sorted(wanted)), "dds": dds_note})
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        node.destroy_node()
        rclpy.shutdown()
    return rows


def table(rows: List[Dict]) -> str:
    lines = ["| input | subscribed outputs | encoding | classes | segments | decode ms | "
             "products ms | messages ms | publish ms | total ms (p50) | total ms (p95) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['size']} | {r['subscribed']} | {r['encoding']} | {r['classes']} | "
                     f"{r['segments']} | "
                     f"{r['decode_ms']:.2f} | {r['products_ms']:.2f} | {r['messages_ms']:.2f} | "
                     f"{r['publish_ms']:.2f} | {r['total_ms']:.2f} | {r['total_p95_ms']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--listen":
        raise SystemExit(_subscriber_main(sys.argv[2], sys.argv[3].split(",")))
    raise SystemExit("run `ovseg-bench --node-overhead`")
