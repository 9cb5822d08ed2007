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

The 3D case (``measure_3d``) times what a camera with depth adds to a frame beyond its
2D outputs, with the node's functions:

    depth      a 16UC1 sensor_msgs/Image -> checked DepthFrame (``core/depth.py``)
    3d         ``core/products_3d.build_3d``: the organised labelled cloud and the 3D
               segment statistics
    messages   ``ros/messages_3d.messages_3d``: PointCloud2, Segments3D, MarkerArray
               (with the camera's MarkerPlanner)
    publish    their ``publish`` to a listener process subscribed to the three

and, apart from the total, the floor of the cloud's publication: rclpy's conversion and
CDR serialisation of the PointCloud2 alone (``serialize_message``) and one memcpy of its
bytes (the memory bandwidth).

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

from ...core.outputs import keys_for

#: the node's per-frame image and segment outputs (core/outputs.py; camera_info is a copy)
TOPICS = keys_for(camera_info=False)


def synthetic_prediction(h: int, w: int, num_classes: int, regions: int = 24, seed: int = 0):
    """A Prediction with ``regions`` irregular regions (nearest of random seeds), each a
    class of the vocabulary and one panoptic segment."""
    from ...core.panoptic_heuristic import semantic_to_panoptic
    from ...core.types import Prediction

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


def _msg_class(key: str):
    """The rclpy class of an output (its row of core/outputs.py)."""
    from ...node.camera import message_class
    from ...core.outputs import BY_KEY

    return message_class(BY_KEY[key].msg_type)


def _subscriber_main(prefix: str, topics: Sequence[str]) -> int:
    """The listening side, in its own process: subscribe to ``topics``."""
    import rclpy

    rclpy.init()
    node = rclpy.create_node("ovseg_bench_listener")
    for t in topics:
        # raw: the listener takes the serialised bytes (as a C++ viewer's cheap
        # deserialisation would), so its own Python work does not load the shared cores
        node.create_subscription(_msg_class(t), f"{prefix}/{t}", lambda _m: None, 10,
                                 raw=True)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, Exception):
        pass
    return 0


def apply_dds_profile() -> str:
    """Select the Fast DDS profile the launch file selects (config/fastdds_camera.xml, unless
    the environment chooses one), for this process and the listener; returns the decision."""
    from pathlib import Path

    from ...launch_logic import dds_environment

    root = Path(__file__).resolve().parents[3]
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
    from std_msgs.msg import Header

    from ...core.products import build_products
    from ...ros.image_conv import image_to_rgb, rgb_to_image
    from ...ros.messages import product_messages

    dds_note = apply_dds_profile()
    prefix = f"/ovseg_bench_{os.getpid()}"
    rclpy.init()
    node = rclpy.create_node("ovseg_bench_node_overhead")
    pubs = {t: node.create_publisher(_msg_class(t), f"{prefix}/{t}", 10) for t in TOPICS}
    proc = None
    rows = []
    try:
        proc = _listener(pubs, prefix, subscribed)
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
        _stop_listener(proc)
        node.destroy_node()
        rclpy.shutdown()
    return rows


def _listener(pubs: Dict, prefix: str, subscribed: Sequence[str]):
    """Start the listener process and wait until it subscribed to ``subscribed``."""
    proc = subprocess.Popen([sys.executable, "-m", "ovseg_ros.tools.bench.node",
                             "--listen", prefix, ",".join(subscribed)])
    deadline = time.monotonic() + 60
    while any(pubs[t].get_subscription_count() < 1 for t in subscribed):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError("the listener process did not subscribe within 60 s")
        time.sleep(0.1)
    return proc


def _stop_listener(proc) -> None:
    if proc is not None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def synthetic_depth_msg(h: int, w: int, header):
    """A 16UC1 depth Image (a tilted plane 1-4 m with noise, every pixel valid) and the
    colour camera_info it is registered to."""
    from sensor_msgs.msg import CameraInfo

    from ...ros.image_conv import array_to_image

    rng = np.random.default_rng(2)
    ramp = np.linspace(1000, 4000, w)[None, :] + np.linspace(0, 500, h)[:, None]
    mm = (ramp + rng.normal(0, 5, (h, w))).astype(np.uint16)
    f = 0.8 * w
    info = CameraInfo(header=header, width=w, height=h, distortion_model="plumb_bob")
    info.k = [f, 0.0, (w - 1) / 2, 0.0, f, (h - 1) / 2, 0.0, 0.0, 1.0]
    info.p = [f, 0.0, (w - 1) / 2, 0.0, 0.0, f, (h - 1) / 2, 0.0, 0.0, 0.0, 1.0, 0.0]
    info.d = [0.0] * 5
    return array_to_image(mm, "16UC1", header), info


def measure_3d(sizes: Sequence[str], iters: int = 50, regions: int = 20,
               num_classes: int = 150, strides: Sequence[int] = (1, 2)) -> List[Dict]:
    """Median milliseconds per 3D stage (beyond the 2D outputs) for each WxH size and cloud
    stride (``cloud_stride``), with a listener process subscribed to points, segments_3d
    and markers."""
    import rclpy
    from std_msgs.msg import Header

    from ...core.depth import depth_frame_from_msg
    from ...core.markers import MarkerPlanner
    from ...core.products import build_products
    from ...core.products_3d import build_3d
    from rclpy.serialization import serialize_message

    from ...ros.messages_3d import KEYS_3D, messages_3d

    dds_note = apply_dds_profile()
    prefix = f"/ovseg_bench3d_{os.getpid()}"
    rclpy.init()
    node = rclpy.create_node("ovseg_bench_node_overhead_3d")
    pubs = {t: node.create_publisher(_msg_class(t), f"{prefix}/{t}", 10) for t in KEYS_3D}
    proc = None
    rows = []
    try:
        proc = _listener(pubs, prefix, KEYS_3D)
        for size, stride in ((sz, st) for sz in sizes for st in strides):
            w, h = (int(v) for v in size.lower().split("x"))
            header = Header(frame_id="camera")
            rgb = np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)
            depth_msg, info = synthetic_depth_msg(h, w, header)
            pred = synthetic_prediction(h, w, num_classes, regions=regions)
            # the 2D products, as the node has them before the 3D ones (not timed)
            prod = build_products(pred, rgb, pred.vocabulary, overlay_alpha=0.5,
                                  random_weights=True, wanted={"semantic", "panoptic",
                                                               "segments"})
            planner = MarkerPlanner("camera")
            stages: Dict[str, List[float]] = {k: [] for k in
                                              ("depth", "3d", "messages", "publish")}
            # the floor of publishing the cloud, apart from the total: rclpy's conversion
            # and CDR serialisation alone (serialize_message), and one memcpy of its bytes
            floor: Dict[str, List[float]] = {"serialise": [], "memcpy": []}
            cpu: List[float] = []          # this thread's CPU time: the work without the
            #                                waits for a core of a shared machine
            sink = None
            for i in range(iters + 3):
                c0, t0 = time.thread_time(), time.perf_counter()
                depth = depth_frame_from_msg(depth_msg, colour_size=(h, w),
                                             colour_frame_id="camera", camera_info=info)
                t1 = time.perf_counter()
                build_3d(prod, depth, KEYS_3D, rgb=rgb, stride=stride)
                t2 = time.perf_counter()
                msgs = messages_3d(prod, header, KEYS_3D, planner, depth.stamp, 2.0)
                t3 = time.perf_counter()
                for key, m in msgs.items():
                    pubs[key].publish(m)
                t4, c4 = time.perf_counter(), time.thread_time()
                serialize_message(msgs["points"])
                t5 = time.perf_counter()
                raw = prod.cloud.reshape(-1).view(np.uint8)
                sink = np.empty_like(raw) if sink is None else sink
                np.copyto(sink, raw)
                t6 = time.perf_counter()
                if i >= 3:
                    for k, a, b in (("depth", t0, t1), ("3d", t1, t2), ("messages", t2, t3),
                                    ("publish", t3, t4)):
                        stages[k].append((b - a) * 1e3)
                    floor["serialise"].append((t5 - t4) * 1e3)
                    floor["memcpy"].append((t6 - t5) * 1e3)
                    cpu.append((c4 - c0) * 1e3)
            totals = [sum(v[i] for v in stages.values()) for i in range(iters)]
            rows.append({"size": size, "stride": stride, "segments": len(prod.segments_3d),
                         "iters": iters,
                         **{f"{k}_ms": statistics.median(v) for k, v in stages.items()},
                         "total_ms": statistics.median(totals),
                         "total_p95_ms": sorted(totals)[int(0.95 * (len(totals) - 1))],
                         "total_cpu_ms": statistics.median(cpu),
                         "cloud_bytes": int(prod.cloud.nbytes),
                         **{f"points_{k}_ms": statistics.median(v) for k, v in floor.items()},
                         "dds": dds_note})
    finally:
        _stop_listener(proc)
        node.destroy_node()
        rclpy.shutdown()
    return rows


def table_3d(rows: List[Dict]) -> str:
    lines = ["| input | cloud_stride | 3D segments | depth ms | cloud + 3D segments ms | "
             "messages ms | publish ms | total beyond 2D ms (p50) | (p95) | CPU ms (p50) | "
             "cloud MB | points: serialise ms | points: memcpy ms |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['size']} | {r['stride']} | {r['segments']} | {r['depth_ms']:.2f} | "
                     f"{r['3d_ms']:.2f} | {r['messages_ms']:.2f} | {r['publish_ms']:.2f} | "
                     f"{r['total_ms']:.2f} | {r['total_p95_ms']:.2f} | {r['total_cpu_ms']:.2f} | "
                     f"{r['cloud_bytes'] / 1e6:.2f} | {r['points_serialise_ms']:.2f} | "
                     f"{r['points_memcpy_ms']:.2f} |")
    return "\n".join(lines)


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
