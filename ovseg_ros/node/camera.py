"""One camera of the node: its subscriptions, lifecycle publishers, settings and counters.

Camera ``c`` reads ``c/image`` (+ ``c/image/compressed``, ``c/camera_info``) and
publishes one topic per row of the outputs table (``ovseg_ros/core/outputs.py``)
whose needs are met, under the same prefix; the unnamed camera uses the bare names.
Publishers are lifecycle publishers: they publish only while the node is active.
"""
from __future__ import annotations

import importlib
import time
from typing import Any, Callable, Dict, List, Optional

from rclpy.event_handler import SubscriptionEventCallbacks
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ..core.camera_outputs import CameraOutputs
from ..core.outputs import outputs_for
from ..ros.qos import camera_info_qos, input_qos, output_qos
from ..runtime.cameras import StallWatch, camera_label, topic_prefix
from ..runtime.stats import RateStats

MAX_CAMERA_FRAMES = 16     # camera_info cache size per camera (distinct frame_ids)


def message_class(msg_type: str):
    """The rclpy message class of a ROS type name such as ``sensor_msgs/msg/Image``."""
    pkg, kind, name = msg_type.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


class Camera:
    """One camera's topics, settings, counters and stall watch."""

    def __init__(self, name: str, settings: Dict[str, Any], input_timeout: float):
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
        #: the outputs built and published for the last frame (those with subscribers)
        self.outputs_published = ""
        self.last_problem: Optional[tuple] = None    # (monotonic time, text)
        #: the ROS-free output path (products, latest frame); set while a model is loaded
        self.outputs: Optional[CameraOutputs] = None

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
        self.subs.append(node.create_subscription(
            Image, p + "image", lambda m: on_frame(self, "image", m), qos_in,
            event_callbacks=events, callback_group=group))
        if self.compressed:
            # image_transport's naming: <base topic>/compressed, following any remap
            self.subs.append(node.create_subscription(
                CompressedImage, self.image_topic + "/compressed",
                lambda m: on_frame(self, "compressed", m), qos_in,
                event_callbacks=events, callback_group=group))
        self.subs.append(node.create_subscription(
            CameraInfo, p + "camera_info", lambda m: on_camera_info(self, m),
            camera_info_qos(), callback_group=group))
        q = output_qos()
        # depth rows come with the 3D outputs; segment_embeddings with embeddings.enabled
        self.pubs = {o.key: node.create_lifecycle_publisher(message_class(o.msg_type),
                                                            p + o.topic, q)
                     for o in outputs_for(depth=False, embeddings=embeddings)}

    def destroy_interfaces(self, node) -> None:
        for s in self.subs:
            node.destroy_subscription(s)
        self.subs = []
        for pub in self.pubs.values():
            node.destroy_lifecycle_publisher(pub)
        self.pubs = {}
