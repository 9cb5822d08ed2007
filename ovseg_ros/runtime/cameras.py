"""Camera names and input-stall detection of the node (ROS-free).

A camera name becomes a topic prefix (``front/image``) and a parameter group
(``front.image_reliability``), so it must be a valid ROS name token and must
not collide with a config group (``proxyclip.*``) or another setting.
"""
from __future__ import annotations

import re
import threading
from typing import Iterable, List, Optional, Sequence

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# per-camera parameters: <camera>.<key>, defaulting to the node-wide setting <key>
PER_CAMERA_KEYS = ("image_reliability", "image_depth", "subscribe_compressed",
                   "depth_enabled")


class CameraConfigError(ValueError):
    """The ``cameras`` parameter cannot be used; the message says why and what to write."""


def validate_camera_names(names: Sequence[str], reserved: Iterable[str] = ()) -> List[str]:
    """Check the ``cameras`` list: unique, '' or a ROS name token, no clash with ``reserved``
    (config groups and keys). Returns the names as a list."""
    names = [str(n) for n in names]
    if not names:
        raise CameraConfigError("cameras is empty: give at least one camera name, or [''] for "
                                "one unnamed camera on the bare topics (image, semantic, ...)")
    seen = set()
    reserved = set(reserved)
    for n in names:
        if n in seen:
            raise CameraConfigError(f"camera {n!r} is listed twice in cameras={names}")
        seen.add(n)
        if n == "":
            continue
        if not _NAME.match(n):
            raise CameraConfigError(
                f"camera name {n!r} is not usable as a topic prefix and parameter group: "
                "use letters, digits and '_', starting with a letter (e.g. front, cam_left)")
        if n in reserved:
            raise CameraConfigError(f"camera name {n!r} clashes with the config group or key "
                                    f"'{n}'; pick another name")
    return names


def topic_prefix(camera: str) -> str:
    """'' for the unnamed camera, 'front/' for camera 'front' (relative names)."""
    return f"{camera}/" if camera else ""


def camera_label(camera: str) -> str:
    return camera if camera else "(unnamed)"


class StallWatch:
    """Says once when frames stop for ``timeout`` seconds after they came, and once when
    they return. ``timeout`` 0 disables it. Times are monotonic seconds."""

    def __init__(self, timeout: float):
        self.timeout = float(timeout)
        self._lock = threading.Lock()   # frames arrive on one thread, checks run on another
        self.last_frame: Optional[float] = None
        self.stalled_since: Optional[float] = None   # time of the last frame before the stall

    @property
    def stalled(self) -> bool:
        return self.stalled_since is not None

    def frame(self, now: float) -> Optional[float]:
        """Record a frame; returns the stall's length in seconds when this frame ends one."""
        with self._lock:
            gap = None
            if self.stalled_since is not None:
                gap = now - self.stalled_since
                self.stalled_since = None
            self.last_frame = now
            return gap

    def check(self, now: float) -> Optional[float]:
        """Returns the silence in seconds when the input has just become stalled, else None."""
        with self._lock:
            if self.timeout <= 0 or self.last_frame is None or self.stalled_since is not None:
                return None
            silence = now - self.last_frame
            if silence >= self.timeout:
                self.stalled_since = self.last_frame
                return silence
            return None

    def reset(self) -> None:
        """Forget the input (paused or deactivated: silence is expected, not a stall)."""
        with self._lock:
            self.last_frame = None
            self.stalled_since = None
