"""The node's QoS profiles as plain data, declared once.

``ovseg_ros/ros/qos.py`` builds rclpy profiles from these and
``ovseg_ros/eval/bags.py`` writes them as the offered QoS of recorded topics, so a
bag offers what the live node offers.

Input images default to sensor-data QoS (best effort, keep last 1) because that
is what camera drivers offer: a reliable subscriber would not match a
best-effort camera and would receive nothing. Outputs are reliable (depth 5),
which matches both reliable and best-effort subscribers (RViz defaults to
reliable). The vocabulary is transient-local so late joiners get it. Services
are keep-all, so a burst of requests waits in the request queue while one is
served instead of overwriting older ones (keep-last 10 loses requests, and
their callers never get an answer).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

RELIABILITIES = ("best_effort", "reliable")
DURABILITIES = ("volatile", "transient_local")
HISTORIES = ("keep_last", "keep_all")


@dataclass(frozen=True)
class QosSpec:
    reliability: str
    durability: str
    history: str
    depth: int           # keep_last only; 0 with keep_all

    def __post_init__(self):
        for name, value, allowed in (("reliability", self.reliability, RELIABILITIES),
                                     ("durability", self.durability, DURABILITIES),
                                     ("history", self.history, HISTORIES)):
            if value not in allowed:
                raise ValueError(f"QoS {name} must be one of {list(allowed)}, got {value!r}")
        if self.history == "keep_last" and int(self.depth) < 1:
            raise ValueError(f"QoS keep_last depth must be >= 1, got {self.depth}")

    def with_depth(self, depth: int) -> "QosSpec":
        return replace(self, depth=int(depth))


#: camera images (image, image/compressed): image_reliability / image_depth override
INPUT = QosSpec("best_effort", "volatile", "keep_last", 1)
#: camera_info is tiny; best effort matches reliable and best-effort drivers alike
CAMERA_INFO = QosSpec("best_effort", "volatile", "keep_last", 5)
#: every row of the outputs table (core/outputs.py)
OUTPUT = QosSpec("reliable", "volatile", "keep_last", 5)
#: the vocabulary: late subscribers get the last one
LATCHED = QosSpec("reliable", "transient_local", "keep_last", 1)
#: set_vocabulary and enable
SERVICE = QosSpec("reliable", "volatile", "keep_all", 0)


def input_spec(reliability: str = "best_effort", depth: int = 1) -> QosSpec:
    """The image subscription QoS for one camera's settings."""
    return replace(INPUT, reliability=reliability, depth=int(depth))


__all__ = ["QosSpec", "INPUT", "CAMERA_INFO", "OUTPUT", "LATCHED", "SERVICE", "input_spec",
           "RELIABILITIES", "DURABILITIES", "HISTORIES"]
