"""Cheap checks that run before an engine is built.

Loading a model takes long (and fails in its own way when weights are missing),
so the evaluation tools first check what costs nothing: that a bag opens and
its metadata is sound, that the topics exist with the right types, that
class files parse and output paths are free. Each problem is one line that
names the path or topic and what is there instead.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, Optional, Sequence, Tuple

from .bags import BagError, open_reader

META = "metadata.yaml"
REINDEX = "restore it from a copy or regenerate it with `ros2 bag reindex <bag>`"


def _yaml_problem(exc) -> str:
    """'line L, column C: problem' of a YAML error, without the parser's context dump."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return where + problem


def check_bag_metadata(path: Path) -> None:
    """A rosbag2 directory's metadata.yaml parses and names its storage files."""
    import yaml

    path = Path(path).expanduser()
    if not path.exists():
        raise BagError(f"bag {path} does not exist")
    if not path.is_dir():
        if path.suffix == ".mcap":   # a bare mcap file: rosbags reads it without metadata
            return
        raise BagError(f"bag {path} is not a rosbag2 directory (one holding {META})")
    meta = path / META
    if not meta.is_file():
        raise BagError(f"bag {path} has no {META}; {REINDEX}")
    try:
        data = yaml.safe_load(meta.read_text())
    except UnicodeDecodeError:
        raise BagError(f"bag {path}: {META} is not text; {REINDEX}") from None
    except yaml.YAMLError as exc:
        raise BagError(f"bag {path}: {META} is not valid YAML ({_yaml_problem(exc)}); "
                       f"{REINDEX}") from None
    info = data.get("rosbag2_bagfile_information") if isinstance(data, dict) else None
    if not isinstance(info, dict):
        raise BagError(f"bag {path}: {META} has no 'rosbag2_bagfile_information' mapping; "
                       f"{REINDEX}")
    missing = [k for k in ("version", "storage_identifier", "relative_file_paths") if k not in info]
    if missing:
        raise BagError(f"bag {path}: {META} lacks {', '.join(missing)}; {REINDEX}")
    files = info.get("relative_file_paths") or []
    absent = [f for f in files if not (path / str(f)).is_file()]
    if absent:
        raise BagError(f"bag {path}: {META} lists storage file {absent[0]!r}, which is not in "
                       "the bag directory")


def open_checked(path: Path):
    """open_reader after check_bag_metadata; any remaining error as one line."""
    check_bag_metadata(path)
    try:
        return open_reader(path)
    except BagError as exc:
        raise BagError(" ".join(str(exc).split())) from None


def bag_topics(reader) -> Dict[str, str]:
    return {c.topic: c.msgtype for c in reader.connections}


def require_topics(path: Path, wanted: Sequence[Tuple[str, Optional[str], Iterable[str]]]
                   ) -> Dict[str, int]:
    """Open the bag and check each (role, topic, allowed types); returns message counts.

    A missing topic is named with the topics the bag has, so a typo is seen at once.
    """
    from .bags import check_topic

    reader = open_checked(path)
    try:
        counts = {}
        for role, topic, types in wanted:
            if topic is None:
                continue
            conns = check_topic(reader, topic, tuple(types), role)
            counts[topic] = sum(c.msgcount for c in conns)
        return counts
    finally:
        reader.close()


def first_messages(path: Path, roles: Dict[str, str]) -> Dict[str, object]:
    """The first message of each role's topic (deserialised), for encoding checks."""
    reader = open_checked(path)
    try:
        out = {}
        for role, topic in roles.items():
            conns = [c for c in reader.connections if c.topic == topic]
            for conn, _, raw in reader.messages(connections=conns):
                out[role] = reader.deserialize(raw, conn.msgtype)
                break
        return out
    finally:
        reader.close()


def check_output_bag(in_path: Path, out_path: Path, overwrite: bool) -> None:
    in_path, out_path = Path(in_path).expanduser(), Path(out_path).expanduser()
    if out_path.resolve() == in_path.resolve():
        raise BagError("the output bag must differ from the input bag")
    if out_path.exists() and not overwrite:
        raise BagError(f"output {out_path} exists; pass --overwrite or choose another path")


def check_prefix_free(path: Path, prefix: str, names: Iterable[str]) -> None:
    prefix = "/" + prefix.strip("/") if prefix.strip("/") else ""
    reader = open_checked(path)
    try:
        clash = sorted(set(bag_topics(reader)) & {f"{prefix}/{n}" for n in names})
    finally:
        reader.close()
    if clash:
        raise BagError(f"the input bag already has output topics {clash}; choose another "
                       "--prefix")


__all__ = ["check_bag_metadata", "open_checked", "require_topics", "first_messages",
           "check_output_bag", "check_prefix_free", "bag_topics"]
