"""ROS parameters declared from the one config schema (ovseg_ros.config.SCHEMA).

Each ParamSpec becomes a parameter with its description, its range
(FloatingPointRange / IntegerRange), its choices in the constraint text, and
read_only unless the spec is marked ``runtime``: model settings need a reload
(lifecycle cleanup + configure), thresholds change live.
"""
from __future__ import annotations

from typing import Any, Dict

from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                ParameterType)

from ..config import SCHEMA_LIST, ParamSpec

_TYPES = {
    "bool": ParameterType.PARAMETER_BOOL,
    "int": ParameterType.PARAMETER_INTEGER,
    "float": ParameterType.PARAMETER_DOUBLE,
    "str": ParameterType.PARAMETER_STRING,
    "str_list": ParameterType.PARAMETER_STRING_ARRAY,
    "bool_list": ParameterType.PARAMETER_BOOL_ARRAY,
}

INT64_MAX = (1 << 63) - 1


class ParameterSetupError(ValueError):
    """A params-file value does not fit the schema (wrong type or out of range)."""


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    d = ParameterDescriptor(name=spec.name, type=_TYPES[spec.kind], description=spec.description,
                            read_only=not spec.runtime)
    notes = []
    if spec.choices:
        notes.append("one of: " + ", ".join(spec.choices))
    if spec.kind == "int" and (spec.min is not None or spec.max is not None):
        d.integer_range = [IntegerRange(
            from_value=int(spec.min if spec.min is not None else -INT64_MAX),
            to_value=int(spec.max if spec.max is not None else INT64_MAX), step=1)]
    elif spec.kind == "float" and (spec.min is not None or spec.max is not None):
        d.floating_point_range = [FloatingPointRange(
            from_value=float(spec.min if spec.min is not None else -1e308),
            to_value=float(spec.max if spec.max is not None else 1e308), step=0.0)]
    notes.append("changeable at runtime" if spec.runtime else
                 "read-only: set at start (params file / launch)")
    d.additional_constraints = "; ".join(notes)
    return d


def declare_schema_parameters(node) -> None:
    """Declare every schema setting on ``node`` (values from the params file win)."""
    for spec in SCHEMA_LIST:
        default = list(spec.default) if isinstance(spec.default, list) else spec.default
        try:
            node.declare_parameter(spec.name, default, descriptor(spec))
        except Exception as exc:  # rclpy's type/range errors name neither the fix nor the schema
            raise ParameterSetupError(
                f"parameter '{spec.name}' ({spec.kind}, default {spec.default!r}): {exc}. "
                f"Check its value in the params file (e.g. write 0.0, not 0, for a float)"
            ) from exc


def read_schema_parameters(node) -> Dict[str, Any]:
    """Current values of all schema parameters as a flat config dict."""
    out = {}
    for spec in SCHEMA_LIST:
        value = node.get_parameter(spec.name).value
        if spec.kind in ("str_list", "bool_list"):
            value = list(value) if value is not None else []
        out[spec.name] = value
    return out
