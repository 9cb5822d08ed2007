"""The node's diagnostics policy, ROS-free: plain counters and states in, a level, a
message and key/values out. ``ovseg_ros/ros/diagnostics.py`` only turns a ``Health``
into a ``diagnostic_msgs/DiagnosticStatus``; the node gathers the facts.

Levels are diagnostic_msgs' (OK 0, WARN 1, ERROR 2), so they pass through unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

OK, WARN, ERROR = 0, 1, 2
#: colour frames in a row without a depth partner before a depth camera WARNs (one miss is
#: a stamp jitter; several mean the depth stream stopped or its stamps do not match)
UNPAIRED_WARN_AFTER = 3
#: where to look when a camera's frames do not arrive
NOTHING_ARRIVES = 'see the README, "Nothing arrives? Nothing in RViz?"'


@dataclass
class Health:
    level: int
    message: str
    values: Dict[str, Any]


@dataclass
class CameraFacts:
    """What the node knows about one camera at one moment."""
    label: str
    topic: str
    rates: Mapping[str, float]      # runtime.stats.RateStats.snapshot()
    processed: int
    received: int
    dropped: int
    bad_inputs: int = 0
    errors: int = 0
    frames_clamped: int = 0     # scaled below the engine's size by a per-frame limit
    frames_refused: int = 0     # refused before any work (max_input_pixels / max_input_side)
    stalled_for: Optional[float] = None     # seconds since the stall began, None: no stall
    stall_timeout: float = 0.0
    last_frame_age: float = -1.0            # -1: no frame yet
    waiting: bool = False                   # active, yet no frame since activation for a while
    publishers: int = 0                     # publishers on ``topic`` (asked when waiting)
    settings: Mapping[str, Any] = field(default_factory=dict)   # reliability, depth, ...
    outputs_published: str = ""
    last_problem: Optional[Tuple[float, str]] = None          # (age in s, text)
    #: depth counters (node/camera.py:Camera.depth_facts), {} when the camera has no depth:
    #: topic, received, paired, paired_exact, unpaired, dropped, unpaired_streak, last_miss,
    #: errors (DepthError code -> count), last_error
    depth: Mapping[str, Any] = field(default_factory=dict)
    tracks: Optional[int] = None            # live published tracks; None: tracking off
    track_resets: int = 0                   # stall, restart or stamp jump

    @property
    def stalled(self) -> bool:
        return self.stalled_for is not None


@dataclass
class NodeFacts:
    """What the node knows about itself at one moment."""
    active: bool
    enabled: bool
    loaded: bool
    load_error: Optional[str] = None
    model: Mapping[str, Any] = field(default_factory=dict)  # engine, backend, ... when loaded
    #: configure's warm-up (core/warmup.py:WarmupReport as a dict: size, batches, seconds,
    #: text_encode_s, compiled); {} when none ran (warmup_size '')
    warmup: Mapping[str, Any] = field(default_factory=dict)
    random_weights: bool = False
    counters: Mapping[str, Any] = field(default_factory=dict)   # received, errors, ...
    mode: str = "latest_frame"
    recent_problem: Optional[Tuple[str, str]] = None   # (kind, text) within the recent window
    last_problem: str = ""
    embeddings: bool = False                # embeddings.enabled (segment_embeddings, locate)
    tracking: bool = False                  # tracking.enabled


def camera_health(cam: CameraFacts, *, active: bool, recent_within: float) -> Health:
    """One camera: its rates, drops, bad inputs and stall state."""
    r = cam.rates
    values: Dict[str, Any] = {
        "camera": cam.label, "topic": cam.topic,
        "fps": r["fps"], "latency_ms": r["latency_ms"], "latency_max_ms": r["latency_max_ms"],
        "inference_ms": r["inference_ms"],
        # where the rest of the latency goes (runtime/stats.py STAGES), once frames were timed
        **{k: v for k, v in r.items() if k.startswith("stage_")},
        "frames_received": cam.received, "frames_processed": cam.processed,
        "frames_dropped": cam.dropped, "drop_rate": r["drop_rate"],
        "bad_inputs": cam.bad_inputs, "errors": cam.errors, "stalled": cam.stalled,
        "frames_clamped": cam.frames_clamped, "frames_refused": cam.frames_refused,
        "last_frame_age_s": cam.last_frame_age, **cam.settings,
        # lazy outputs: only those with subscribers are built (empty before a frame)
        "outputs_published": cam.outputs_published,
        "tracking": cam.tracks is not None,
    }
    if cam.depth:
        values.update(depth_values(cam.depth))
    if cam.tracks is not None:
        values.update(tracks=cam.tracks, track_resets=cam.track_resets)
    level, message = OK, "processing" if active else "not active"
    if cam.stalled:
        level = WARN
        message = (f"input stalled: no frame on {cam.topic} for {cam.stalled_for:.1f} s "
                   f"(input_timeout {cam.stall_timeout:g} s)")
    elif cam.waiting:
        level = WARN
        message = f"no image received on {cam.topic} yet ({cam.publishers} publishers)"
    elif cam.last_problem and cam.last_problem[0] <= recent_within:
        level, message = WARN, f"recent problem: {cam.last_problem[1]}"
    elif active and cam.depth and cam.depth["unpaired_streak"] >= UNPAIRED_WARN_AFTER:
        level = WARN
        message = (f"no 3D: the last {cam.depth['unpaired_streak']} colour frames had no depth "
                   f"partner on {cam.depth['topic']}: {cam.depth['last_miss']}")
    values["last_problem"] = cam.last_problem[1] if cam.last_problem else ""
    return Health(level, message, values)


def depth_values(depth: Mapping[str, Any]) -> Dict[str, Any]:
    """The depth key/values of a camera: how many colour frames were paired, how many were
    not and why, and the refused depth images by reason (DepthError code)."""
    errors = depth.get("errors", {})
    return {"depth_topic": depth["topic"], "depth_received": depth["received"],
            "depth_paired": depth["paired"], "depth_paired_exact": depth["paired_exact"],
            "depth_unpaired": depth["unpaired"], "depth_dropped": depth["dropped"],
            "depth_last_miss": depth["last_miss"],
            "depth_refused": sum(errors.values()),
            "depth_refused_by_reason": ",".join(f"{k}:{v}" for k, v in sorted(errors.items())),
            "depth_last_error": depth["last_error"]}


def warmup_values(warmup: Mapping[str, Any]) -> Dict[str, Any]:
    """What configure's warm-up cost: ``warmup_s`` is the prediction (with torch_compile, the
    compile: what a first camera frame would otherwise have waited), ``warmup_size`` ''
    when no warm-up ran."""
    if not warmup:
        return {"warmup_size": "", "warmup_s": 0.0, "warmup_compiled": False}
    w, h = warmup["size"]
    return {"warmup_size": f"{w}x{h}", "warmup_s": round(float(warmup["seconds"]), 3),
            "warmup_text_encode_s": round(float(warmup["text_encode_s"]), 3),
            "warmup_compiled": bool(warmup["compiled"])}


def node_health(node: NodeFacts, cameras: List[CameraFacts]) -> Health:
    """The whole node: state, summed rates, counters, model; the worst condition speaks."""
    processed = sum(c.processed for c in cameras)
    rates = [c.rates for c in cameras]
    values: Dict[str, Any] = {
        "state": "active" if node.active else ("inactive" if node.loaded else "unconfigured"),
        "enabled": node.enabled,
        "cameras": len(cameras),
        "fps": sum(r["fps"] for r in rates),
        "latency_ms": (sum(r["latency_ms"] * c.processed for r, c in zip(rates, cameras))
                       / processed) if processed else 0.0,
        "latency_max_ms": max([r["latency_max_ms"] for r in rates], default=0.0),
        "inference_ms": max([r["inference_ms"] for r in rates], default=0.0),
        "frames_received": sum(c.received for c in cameras),
        "frames_processed": processed,
        "frames_dropped": sum(c.dropped for c in cameras),
        "drop_rate": sum(r["drop_rate"] for r in rates),
        **node.counters,
        "stalled_cameras": ",".join(c.label for c in cameras if c.stalled),
        "mode": node.mode,
        "embeddings": node.embeddings, "tracking": node.tracking,
    }
    if node.loaded:
        values.update(node.model)
        values["weights"] = "RANDOM WEIGHTS" if node.random_weights else "pretrained"
        values.update(warmup_values(node.warmup))
    level, message = OK, "processing"
    stalled = [c for c in cameras if c.stalled]
    waiting = [c for c in cameras if c.waiting]
    if not node.loaded:
        level = ERROR
        message = f"model not loaded: {node.load_error}" if node.load_error \
            else "unconfigured (call lifecycle configure, or set autostart: true)"
    elif not node.active:
        message = "inactive (lifecycle): model loaded, not processing"
    elif not node.enabled:
        message = "paused by the enable service"
    elif stalled:
        level = WARN
        message = "input stalled: " + ", ".join(f"{c.topic} (camera {c.label})" for c in stalled)
    elif waiting:
        level = WARN
        message = ("no image received on " + ", ".join(
            f"{c.topic} ({c.publishers} publishers)" for c in waiting)
            + f" yet: check the remap and QoS (image_reliability); {NOTHING_ARRIVES}")
    if node.loaded and node.recent_problem is not None and level == OK:
        level, message = WARN, f"recent problem ({node.recent_problem[0]}): " \
                               f"{node.recent_problem[1]}"
    if node.loaded and node.random_weights:
        level = max(level, WARN)
        message = "RANDOM WEIGHTS (labels are meaningless); " + message
    values["last_problem"] = node.last_problem
    return Health(level, message, values)


__all__ = ["OK", "WARN", "ERROR", "Health", "CameraFacts", "NodeFacts", "camera_health",
           "node_health", "depth_values", "warmup_values", "NOTHING_ARRIVES", "UNPAIRED_WARN_AFTER"]
