"""Diagnostics messages (diagnostic_msgs/DiagnosticArray on /diagnostics) from the ROS-free
health results of ``ovseg_ros/runtime/health.py``."""
from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from ..runtime.health import Health


def status_msg(name: str, hardware_id: str, result: Health) -> DiagnosticStatus:
    """A DiagnosticStatus from a health result (the policy: ovseg_ros/runtime/health.py)."""
    st = DiagnosticStatus()
    st.level = int(result.level).to_bytes(1, "little")
    st.name = name
    st.hardware_id = hardware_id
    st.message = result.message
    st.values = [KeyValue(key=str(k), value=_fmt(v)) for k, v in result.values.items()]
    return st


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def array_msg(stamp, statuses) -> DiagnosticArray:
    arr = DiagnosticArray()
    arr.header.stamp = stamp
    arr.status = list(statuses)
    return arr
