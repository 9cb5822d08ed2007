"""QoS profiles of the node's topics.

Input images default to sensor-data QoS (best effort, keep last 1) because
that is what camera drivers offer: a reliable subscriber would not match a
best-effort camera and would receive nothing. Outputs are reliable (depth 5),
which matches both reliable and best-effort subscribers (RViz defaults to
reliable). The vocabulary is transient-local so late joiners get it.
"""
from __future__ import annotations

from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}


def input_qos(reliability: str = "best_effort", depth: int = 1) -> QoSProfile:
    """Subscription QoS for image, image/compressed and camera_info."""
    if reliability not in RELIABILITY:
        raise ValueError(f"image_reliability must be one of {sorted(RELIABILITY)}, "
                         f"got {reliability!r}")
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth),
                      reliability=RELIABILITY[reliability],
                      durability=qos_profile_sensor_data.durability)


def output_qos(depth: int = 5) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)


def latched_qos() -> QoSProfile:
    """Transient local, depth 1: the last vocabulary is delivered to late subscribers."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def service_qos() -> QoSProfile:
    """Services (set_vocabulary, enable): reliable and keep-all, so a burst of requests
    waits in the request queue while one is served instead of overwriting older ones
    (the default keep-last 10 loses requests, and their callers never get an answer)."""
    return QoSProfile(history=HistoryPolicy.KEEP_ALL, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.VOLATILE)
