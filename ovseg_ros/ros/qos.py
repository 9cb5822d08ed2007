"""rclpy QoS profiles of the node's topics and services, built from the one QoS table
(``ovseg_ros/runtime/qos_table.py``, which says why each profile is what it is)."""
from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from ..runtime import qos_table as table

RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}
DURABILITY = {"volatile": DurabilityPolicy.VOLATILE,
              "transient_local": DurabilityPolicy.TRANSIENT_LOCAL}
HISTORY = {"keep_last": HistoryPolicy.KEEP_LAST, "keep_all": HistoryPolicy.KEEP_ALL}


def profile(spec: table.QosSpec) -> QoSProfile:
    # depth is ignored under keep_all (the table says 0 there)
    return QoSProfile(history=HISTORY[spec.history], depth=int(spec.depth),
                      reliability=RELIABILITY[spec.reliability],
                      durability=DURABILITY[spec.durability])


def input_qos(reliability: str = "best_effort", depth: int = 1) -> QoSProfile:
    """Subscription QoS for image and image/compressed."""
    if reliability not in RELIABILITY:
        raise ValueError(f"image_reliability must be one of {sorted(RELIABILITY)}, "
                         f"got {reliability!r}")
    return profile(table.input_spec(reliability, depth))


def camera_info_qos() -> QoSProfile:
    return profile(table.CAMERA_INFO)


def output_qos(depth: int = table.OUTPUT.depth) -> QoSProfile:
    return profile(table.OUTPUT.with_depth(depth))


def latched_qos() -> QoSProfile:
    """Transient local, depth 1: the last vocabulary is delivered to late subscribers."""
    return profile(table.LATCHED)


def service_qos() -> QoSProfile:
    """Services (set_vocabulary, enable): reliable and keep-all (see the QoS table)."""
    return profile(table.SERVICE)
