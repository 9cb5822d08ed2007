"""One camera of the node: its subscriptions, lifecycle publishers, settings and counters.

Camera ``c`` reads ``c/image`` (+ ``c/image/compressed``, ``c/camera_info``) and
publishes one topic per row of the outputs table (``ovseg_ros/core/outputs.py``)
whose needs are met, under the same prefix; the unnamed camera uses the bare names.
Publishers are lifecycle publishers: they publish only while the node is active.

Depth (``depth_enabled``, docs/node.md "Depth and 3D"): the camera also reads the
registered ``c/depth`` and ``c/depth/camera_info``. The callback only keeps the raw
message under its stamp (``DepthPairing``); the worker pairs it with the colour frame,
decodes and checks it (``core/depth.py``), so a bad or missing depth image costs the
colour path nothing: the 2D outputs go on, the reason is counted and reported.
"""
from __future__ import annotations

import importlib
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from rclpy.event_handler import SubscriptionEventCallbacks
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ..core.camera_outputs import CameraOutputs
from ..core.depth import DepthError, DepthFrame, depth_frame_from_msg
from ..core.markers import MarkerPlanner
from ..core.outputs import outputs_for
from ..ros.qos import camera_info_qos, input_qos, output_qos
from ..runtime.cameras import StallWatch, camera_label, topic_prefix
from ..runtime.depth_pairing import DepthPairing
from ..runtime.stats import RateStats

MAX_CAMERA_FRAMES = 16     # camera_info cache size per camera (distinct frame_ids)
#: depth images kept for pairing: a depth stream at 5x the colour rate keeps about 5 of them
MAX_PENDING_DEPTH = 30
#: QoS depth of the depth subscription: several depth images may arrive per colour frame
DEPTH_QUEUE = 10


def message_class(msg_type: str):
    """The rclpy message class of a ROS type name such as ``sensor_msgs/msg/Image``."""
    pkg, kind, name = msg_type.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


class Camera:
    """One camera's topics, settings, counters and stall watch."""

    def __init__(self, name: str, settings: Dict[str, Any], input_timeout: float, *,
                 depth_slop: float = 0.02):
        self.name = name
        self.prefix = topic_prefix(name)
        self.label = camera_label(name)
        self.reliability = settings["image_reliability"]
        self.depth = settings["image_depth"]
        self.compressed = settings["subscribe_compressed"]
        self.image_topic = ""
        self.stats = RateStats()
        self.stall = StallWatch(input_timeout)
        self.camera_infos: Dict[str, CameraInfo] = {}
        self.pubs: Dict[str, Any] = {}
        self.subs: List[Any] = []
        self.last_frame_time: Optional[float] = None
        self.bad_inputs = 0
        self.errors = 0
        #: frames scaled below the engine's size by a limit (Prediction.notes), and frames
        #: refused before any work (InputLimitError): docs/node.md "Bounded work per frame"
        self.frames_clamped = 0
        self.frames_refused = 0
        #: the outputs built and published for the last frame (those with subscribers)
        self.outputs_published = ""
        self.last_problem: Optional[tuple] = None    # (monotonic time, text)
        #: the ROS-free output path (products, latest frame); set while a model is loaded
        self.outputs: Optional[CameraOutputs] = None
        self.depth_enabled = bool(settings.get("depth_enabled", False))
        self.depth_topic = ""
        self.depth_info: Optional[CameraInfo] = None     # the newest depth/camera_info
        self.pairing = DepthPairing(depth_slop, MAX_PENDING_DEPTH)
        self._depth_lock = threading.Lock()   # depth arrives on the input thread, pairs on
        #                                       the worker's
        self.depth_received = 0
        self.depth_errors: Dict[str, int] = {}      # DepthError code -> count
        self.last_depth_error = ""
        self.unpaired_streak = 0                    # colour frames in a row without depth
        #: the camera's markers (ns = its label): stable ids, DELETE / DELETEALL
        self.markers = MarkerPlanner(self.label)

    def problem(self, text: str) -> None:
        self.last_problem = (time.monotonic(), text)

    def store_camera_info(self, msg: CameraInfo) -> None:
        infos = self.camera_infos
        if msg.header.frame_id not in infos and len(infos) >= MAX_CAMERA_FRAMES:
            infos.pop(next(iter(infos)))
        infos[msg.header.frame_id] = msg

    def create_interfaces(self, node, *, on_frame: Callable, on_camera_info: Callable,
                          on_incompatible_qos: Callable, group, embeddings: bool = False) -> None:
        """Subscriptions (callbacks in ``group``) and one lifecycle publisher per output."""
        p = self.prefix
        qos_in = input_qos(self.reliability, self.depth)
        events = SubscriptionEventCallbacks(
            incompatible_qos=lambda info: on_incompatible_qos(self, info))
        self.image_topic = node.resolve_topic_name(p + "image")
        # camera_info and depth first: when a driver's colour, depth and calibration of one
        # stamp are all waiting, the executor serves subscriptions in creation order, so the
        # colour frame finds its depth partner and calibration already stored
        self.subs.append(node.create_subscription(
            CameraInfo, p + "camera_info", lambda m: on_camera_info(self, m),
            camera_info_qos(), callback_group=group))
        if self.depth_enabled:
            self._create_depth_subscriptions(node, qos_in, group)
        self.subs.append(node.create_subscription(
            Image, p + "image", lambda m: on_frame(self, "image", m), qos_in,
            event_callbacks=events, callback_group=group))
        if self.compressed:
            # image_transport's naming: <base topic>/compressed, following any remap
            self.subs.append(node.create_subscription(
                CompressedImage, self.image_topic + "/compressed",
                lambda m: on_frame(self, "compressed", m), qos_in,
                event_callbacks=events, callback_group=group))
        q = output_qos()
        # depth rows come with the 3D outputs; segment_embeddings with embeddings.enabled
        self.pubs = {o.key: node.create_lifecycle_publisher(message_class(o.msg_type),
                                                            p + o.topic, q)
                     for o in outputs_for(depth=self.depth_enabled, embeddings=embeddings)}

    # --- depth ------------------------------------------------------------------------------
    def _create_depth_subscriptions(self, node, qos_in, group) -> None:
        p = self.prefix
        qos_depth = input_qos(self.reliability, max(self.depth, DEPTH_QUEUE))
        self.depth_topic = node.resolve_topic_name(p + "depth")
        self.subs.append(node.create_subscription(
            Image, p + "depth", self.store_depth, qos_depth, callback_group=group))
        self.subs.append(node.create_subscription(
            CameraInfo, p + "depth/camera_info", self.store_depth_info,
            camera_info_qos(), callback_group=group))

    def store_depth(self, msg: Image) -> None:
        """Keep the raw message under its stamp: decoding waits until a colour frame pairs
        with it (most depth images of a fast depth stream are never used)."""
        st = msg.header.stamp
        with self._depth_lock:
            self.depth_received += 1
            self.pairing.add_depth(int(st.sec) * 1_000_000_000 + int(st.nanosec), msg)

    def store_depth_info(self, msg: CameraInfo) -> None:
        self.depth_info = msg

    def pair_depth(self, header) -> Optional[Image]:
        """The depth message paired with this colour frame, or None (never waits)."""
        st = header.stamp
        with self._depth_lock:
            msg = self.pairing.match(int(st.sec) * 1_000_000_000 + int(st.nanosec))
        self.unpaired_streak = 0 if msg is not None else self.unpaired_streak + 1
        return msg

    def depth_frame(self, msg: Image, header, colour_size, rectified: bool) -> DepthFrame:
        """Decode and check a paired depth message against the colour frame. Intrinsics: the
        depth camera_info (the registered stream's, i.e. the colour camera's), else the
        colour camera_info of the frame. Raises DepthError (its code names the fact)."""
        info = self.depth_info
        if info is None or info.header.frame_id != header.frame_id:
            info = self.camera_infos.get(header.frame_id, info)
        return depth_frame_from_msg(msg, colour_size=colour_size,
                                    colour_frame_id=header.frame_id, camera_info=info,
                                    rectified=rectified)

    def depth_failed(self, exc: DepthError) -> str:
        """Count a depth error by code; returns the line to report."""
        self.depth_errors[exc.code] = self.depth_errors.get(exc.code, 0) + 1
        text = (f"camera {self.label}: no 3D for a frame, depth on {self.depth_topic} "
                f"refused ({exc.code}): {exc}; the 2D outputs go on")
        self.last_depth_error = text
        self.problem(text)
        return text

    def depth_facts(self) -> Dict[str, Any]:
        """The depth counters for the diagnostics (runtime/health.py), {} without depth."""
        if not self.depth_enabled:
            return {}
        c = self.pairing.counts
        return {"topic": self.depth_topic, "received": self.depth_received,
                "paired": c.paired, "paired_exact": c.paired_exact,
                "unpaired": c.unpaired_colour, "dropped": c.dropped_depth,
                "unpaired_streak": self.unpaired_streak,
                "last_miss": self.pairing.last_miss or "",
                "errors": dict(self.depth_errors), "last_error": self.last_depth_error}

    def destroy_interfaces(self, node) -> None:
        for s in self.subs:
            node.destroy_subscription(s)
        self.subs = []
        for pub in self.pubs.values():
            node.destroy_lifecycle_publisher(pub)
        self.pubs = {}
