"""The description of one setting (``ParamSpec``) and the error a bad value raises.

Kept apart from ``config.py`` so engine config groups
(``ovseg_ros/engines/<name>_config.py``) can declare their settings without
importing the assembled schema (which imports them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple


class ConfigError(ValueError):
    """A config key is unknown or a value is out of range; the message says which and why."""


@dataclass(frozen=True)
class ParamSpec:
    """The description of one setting.

    ``kind`` is one of ``bool``, ``int``, ``float``, ``str``, ``str_list``,
    ``bool_list``. ``runtime`` marks settings the node may change while running
    (thresholds); everything else needs a reload and is read-only for ROS.
    ``node_only`` settings belong to the ROS node and are ignored by the engines.
    """

    name: str
    kind: str
    default: Any
    description: str
    min: Optional[float] = None
    max: Optional[float] = None
    choices: Optional[Tuple[str, ...]] = None
    runtime: bool = False
    node_only: bool = False

    def validate(self, value: Any) -> Any:
        """Return ``value`` converted to this setting's type or raise ConfigError."""
        kind = self.kind
        where = f"config key '{self.name}'"
        if kind == "bool":
            if isinstance(value, bool):
                return value
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    raise ConfigError(f"{where} must be an integer, got {value!r}")
            self._check_range(value)
            return int(value)
        if kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where} must be a number, got {value!r}")
            self._check_range(float(value))
            return float(value)
        if kind == "str":
            if not isinstance(value, str):
                raise ConfigError(f"{where} must be a string, got {value!r}")
            if self.choices is not None and value not in self.choices:
                raise ConfigError(f"{where} must be one of {list(self.choices)}, got {value!r}")
            return value
        if kind == "str_list":
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise ConfigError(f"{where} must be a list of strings, got {value!r}")
            if not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where} must contain only strings, got {value!r}")
            return list(value)
        if kind == "bool_list":
            if isinstance(value, str) or not isinstance(value, Sequence):
                raise ConfigError(f"{where} must be a list of booleans, got {value!r}")
            if not all(isinstance(v, bool) for v in value):
                raise ConfigError(f"{where} must contain only true/false, got {value!r}")
            return list(value)
        raise AssertionError(f"unknown kind {kind}")  # schema bug, not user input

    def _check_range(self, value: float) -> None:
        if self.min is not None and value < self.min:
            raise ConfigError(f"config key '{self.name}' must be >= {self.min}, got {value}")
        if self.max is not None and value > self.max:
            raise ConfigError(f"config key '{self.name}' must be <= {self.max}, got {value}")
