"""rosbag2 reading and writing (sqlite3 and mcap) with ``rosbags``, and Image <-> numpy.

rosbags is pure Python: no ROS installation is needed to read or write bags.
Our own messages (``ovseg_ros/msg/Segments`` ...) are registered in the
typestore from the ``.msg`` files at run time (the repository's ``msg/`` or
an installed ``share/ovseg_ros/msg``), so the evaluation tools work before
and without ``colcon build``.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np

from ..core import image_codec as codec
from .metrics import IGNORE

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"

#: the shared encoding table (encoding -> channels, dtype, bytes per pixel)
ENCODINGS = codec.ENCODINGS
LABEL_ENCODINGS = ("16UC1", "mono16", "mono8", "8UC1", "32SC1")
RGB_ENCODINGS = codec.RGB_ENCODINGS


class BagError(ValueError):
    """A bag, topic or message cannot be used; the message says what and how to fix it."""


# --- typestore --------------------------------------------------------------------------------
def msg_dirs() -> List[Path]:
    """Where ovseg_ros/msg/*.msg may be: the source tree, then installed share/ directories."""
    here = Path(__file__).resolve().parents[2] / "msg"
    cands = [here, Path(sys.prefix) / "share" / "ovseg_ros" / "msg"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            cands.append(Path(prefix) / "share" / "ovseg_ros" / "msg")
    return cands


def find_msg_dir() -> Path:
    for d in msg_dirs():
        if d.is_dir() and any(d.glob("*.msg")):
            return d
    raise BagError("ovseg_ros message definitions (*.msg) not found in any of "
                   f"{[str(d) for d in msg_dirs()]}; run from the source tree or install the "
                   "package")


def make_typestore(with_ovseg: bool = True):
    """The ROS 2 Kilted typestore, plus ovseg_ros/msg/* parsed from the .msg files."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    if with_ovseg:
        types = {}
        for f in sorted(find_msg_dir().glob("*.msg")):
            types.update(get_types_from_msg(f.read_text(), f"ovseg_ros/msg/{f.stem}"))
        store.register(types)
    return store


# --- Image <-> numpy (ovseg_ros/core/image_codec.py, shared with the node) --------------------
def _bag_error(exc: codec.ImageCodecError, what: str, encoding: str = "") -> BagError:
    if exc.code == "encoding":
        return BagError(f"{what}: unsupported encoding {encoding!r}; supported: "
                        f"{sorted(ENCODINGS)}")
    if exc.code in ("empty", "step", "data_size"):
        return BagError(f"{what}: {exc} (malformed message)")
    return BagError(f"{what}: {exc}")


def image_to_numpy(msg, what: str = "image") -> np.ndarray:
    """HxW or HxWxC array of a sensor_msgs/Image, validated against its header fields."""
    try:
        return codec.decode_msg(msg)
    except codec.ImageCodecError as exc:
        raise _bag_error(exc, what, msg.encoding) from exc


def to_rgb(arr: np.ndarray, encoding: str) -> np.ndarray:
    """An 8-bit colour/mono image array -> HxWx3 uint8 RGB."""
    try:
        return codec.to_rgb(arr, encoding)
    except codec.ImageCodecError as exc:
        raise BagError(str(exc)) from exc


def compressed_to_rgb(msg, what: str = "image") -> np.ndarray:
    try:
        return codec.decode_compressed(msg.data, msg.format)
    except codec.ImageCodecError as exc:
        raise _bag_error(exc, what) from exc


def numpy_to_image(store, arr: np.ndarray, encoding: str, header):
    """A sensor_msgs/Image with ``header`` (kept as is: output stamps = input stamps)."""
    Image = store.types[IMAGE_TYPE]
    try:
        step, data = codec.encode(arr, encoding)
    except codec.ImageCodecError as exc:
        raise BagError(str(exc)) from exc
    h, w = arr.shape[:2]
    return Image(header=header, height=h, width=w, encoding=encoding, is_bigendian=0,
                 step=step, data=np.frombuffer(data, np.uint8))


def stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


def label_to_classes(arr: np.ndarray, encoding: str, ignore_value: Optional[int]) -> np.ndarray:
    """A label image (16UC1 / mono8 / 32SC1) -> int64 class ids with IGNORE."""
    if encoding not in LABEL_ENCODINGS:
        raise BagError(f"label encoding {encoding!r} is not a class-id image; use one of "
                       f"{list(LABEL_ENCODINGS)}")
    out = arr.astype(np.int64)
    if ignore_value is not None:
        out[out == ignore_value] = IGNORE
    return out


# --- reading -----------------------------------------------------------------------------------
@dataclass
class Frame:
    """One image of a bag (with its label message, when evaluating)."""

    index: int               # position among the bag's image messages (0-based)
    key: str                 # stable id: image stamp in ns (and a suffix for repeated stamps)
    timestamp: int           # bag receive time in ns
    msg: object              # the deserialised image message
    label: object = None     # the paired label message, if any


def open_reader(path: Path):
    from rosbags.highlevel import AnyReader

    path = Path(path).expanduser()
    if not path.exists():
        raise BagError(f"bag {path} does not exist")
    try:
        reader = AnyReader([path], default_typestore=make_typestore(with_ovseg=False))
        reader.open()
    except Exception as exc:   # rosbags raises several unrelated types for unreadable bags
        raise BagError(f"cannot open bag {path}: {exc} (a rosbag2 directory with metadata.yaml "
                       "and .db3/.mcap files is expected)") from exc
    return reader


def check_topic(reader, topic: str, allowed_types: Sequence[str], role: str) -> list:
    conns = [c for c in reader.connections if c.topic == topic]
    if not conns:
        topics = sorted({f"{c.topic} [{c.msgtype}]" for c in reader.connections})
        raise BagError(f"{role} topic {topic!r} is not in the bag; it has: {topics}")
    bad = {c.msgtype for c in conns} - set(allowed_types)
    if bad:
        raise BagError(f"{role} topic {topic!r} has type {sorted(bad)}; expected one of "
                       f"{list(allowed_types)}")
    return conns


def iter_frames(reader, image_topic: str, label_topic: Optional[str] = None,
                stats: Optional[dict] = None) -> Iterator[Frame]:
    """Image messages in bag order; with ``label_topic``, each paired with the label message of
    the same header stamp (images without one are skipped and counted in ``stats``)."""
    img_conns = check_topic(reader, image_topic, (IMAGE_TYPE, COMPRESSED_TYPE), "image")
    conns = list(img_conns)
    lab_ids = set()
    if label_topic is not None:
        lab_conns = check_topic(reader, label_topic, (IMAGE_TYPE,), "label")
        lab_ids = {c.id for c in lab_conns}
        conns += lab_conns
    img_ids = {c.id for c in img_conns}
    stats = stats if stats is not None else {}
    stats.update(images=0, labels=0, unmatched_images=0, unmatched_labels=0)
    seen: Dict[int, int] = {}
    pending_img: Dict[int, Frame] = {}
    pending_lab: Dict[int, object] = {}
    index = 0
    for conn, t, raw in reader.messages(connections=conns):
        msg = reader.deserialize(raw, conn.msgtype)
        s = stamp_ns(msg.header)
        if conn.id in img_ids:
            n = seen.get(s, 0)
            seen[s] = n + 1
            frame = Frame(index=index, key=f"{s:020d}" + (f"_{n}" if n else ""), timestamp=t,
                          msg=msg)
            index += 1
            stats["images"] += 1
            if label_topic is None:
                yield frame
            elif s in pending_lab:
                frame.label = pending_lab.pop(s)
                yield frame
            else:
                pending_img[s] = frame
        elif conn.id in lab_ids:
            stats["labels"] += 1
            if s in pending_img:
                frame = pending_img.pop(s)
                frame.label = msg
                yield frame
            else:
                pending_lab[s] = msg
    stats["unmatched_images"] = len(pending_img)
    stats["unmatched_labels"] = len(pending_lab)


def frame_rgb(frame: Frame) -> np.ndarray:
    msg = frame.msg
    what = f"image at stamp {frame.key}"
    if hasattr(msg, "format") and not hasattr(msg, "encoding"):
        return compressed_to_rgb(msg, what)
    return to_rgb(image_to_numpy(msg, what), msg.encoding)


# --- writing -----------------------------------------------------------------------------------
def storage_plugin(name: str):
    from rosbags.rosbag2 import StoragePlugin

    try:
        return {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[name]
    except KeyError:
        raise BagError(f"storage must be 'sqlite3' or 'mcap', got {name!r}") from None


def bag_storage(path: Path) -> str:
    """'mcap' or 'sqlite3', from the files of an existing bag."""
    path = Path(path)
    if path.is_dir() and any(path.glob("*.mcap")) or path.suffix == ".mcap":
        return "mcap"
    return "sqlite3"


# --- QoS of recorded topics -------------------------------------------------------------------
# rosbag2 records each topic's offered QoS profiles (offered_qos_profiles) and `ros2 bag play`
# offers them again: without them a latched topic (`vocabulary`) is replayed volatile and late
# subscribers never get it. rosbags writes them in the bag's own format version: version 9
# (rosbag2 Jazzy/Kilted) as a structured list with policy names, version 8 as a YAML string.
#: RMW_DURATION_INFINITE as rmw_fastrtps reports it (and rosbag2 records it): 9223372036 s
#: 854775807 ns, i.e. INT64_MAX nanoseconds
INFINITE_NS = 9_223_372_036_854_775_807


def _qos_time(ns: int):
    from rosbags.interfaces import QosTime

    return QosTime(int(ns) // 1_000_000_000, int(ns) % 1_000_000_000)


def make_qos(reliability: str = "reliable", durability: str = "volatile", depth: int = 5,
             history: str = "keep_last"):
    """A rosbags Qos as rosbag2 records a publisher with these policies and default deadline,
    lifespan and liveliness (automatic, infinite lease)."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability

    try:
        hist = QosHistory[history.upper()]
        rel = QosReliability[reliability.upper()]
        dur = QosDurability[durability.upper()]
    except KeyError as exc:
        raise BagError(f"unknown QoS policy value {exc}; history: keep_last/keep_all, "
                       "reliability: reliable/best_effort, durability: volatile/"
                       "transient_local") from None
    inf = _qos_time(INFINITE_NS)
    return Qos(hist, int(depth), rel, dur, inf, inf, QosLiveliness.AUTOMATIC, inf, False)


def qos_from_spec(spec):
    """A rosbags Qos from a row of the node's QoS table (``runtime/qos_table.py``)."""
    return make_qos(spec.reliability, spec.durability, spec.depth, spec.history)


def latched_qos():
    """How the node publishes `vocabulary` (transient local, reliable, depth 1)."""
    from ..runtime.qos_table import LATCHED

    return qos_from_spec(LATCHED)


def output_qos():
    """How the node publishes every output of the outputs table (reliable, volatile, 5)."""
    from ..runtime.qos_table import OUTPUT

    return qos_from_spec(OUTPUT)


def playback_image_qos():
    """Reliable, volatile, depth 10, for image topics of bags this project writes: `ros2 bag
    play` then repeats every frame (a reliable offer also matches best-effort subscribers),
    where a best-effort offer of large frames would lose most of them (docs/node.md)."""
    return make_qos("reliable", "volatile", 10)


def qos_from_profile(profile):
    """A rosbags Qos from an rclpy QoSProfile (e.g. ``TopicEndpointInfo.qos_profile`` of
    ``Node.get_publishers_info_by_topic``: what the publisher offers, as rosbag2 records it).
    Duck-typed, so this module needs no rclpy: the policy enums carry rmw's values, which
    rosbags' enums share."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability

    def ns(d):
        return int(getattr(d, "nanoseconds", d))

    def val(v):
        return int(getattr(v, "value", v))

    return Qos(QosHistory(val(profile.history)), int(profile.depth),
               QosReliability(val(profile.reliability)), QosDurability(val(profile.durability)),
               _qos_time(ns(profile.deadline)), _qos_time(ns(profile.lifespan)),
               QosLiveliness(val(profile.liveliness)),
               _qos_time(ns(profile.liveliness_lease_duration)),
               bool(profile.avoid_ros_namespace_conventions))


__all__ = ["BagError", "Frame", "make_typestore", "find_msg_dir", "image_to_numpy", "to_rgb",
           "numpy_to_image", "label_to_classes", "open_reader", "check_topic", "iter_frames",
           "frame_rgb", "stamp_ns", "storage_plugin", "bag_storage", "latched_qos",
           "make_qos", "qos_from_spec", "output_qos", "playback_image_qos", "qos_from_profile",
           "INFINITE_NS",
           "write_image_bag", "rename_storage_files",
           "LABEL_ENCODINGS", "RGB_ENCODINGS", "IMAGE_TYPE", "COMPRESSED_TYPE"]


def write_image_bag(path: Path, frames, image_topic: str = "/camera/image",
                    label_topic: Optional[str] = "/camera/labels", *,
                    image_encoding: str = "rgb8", label_encoding: str = "16UC1",
                    frame_id: str = "camera", storage: str = "sqlite3") -> Path:
    """A bag of (stamp_ns, rgb, labels-or-None) frames: images and, optionally, label images.

    Used to turn image/label folders into bags (``ovseg-eval make-bag``) and by the tests.
    Written under ``<path>.partial`` and renamed when complete.
    """
    from rosbags.rosbag2 import Writer

    path = Path(path)
    if path.exists():
        raise BagError(f"output {path} exists; remove it or choose another path")
    store = make_typestore(with_ovseg=False)
    T = store.types
    tmp = path.with_name(path.name + ".partial")
    if tmp.exists():
        import shutil
        shutil.rmtree(tmp)
    w = Writer(tmp, version=9, storage_plugin=storage_plugin(storage))
    w.open()
    try:
        qos = [playback_image_qos()]
        ci = w.add_connection(image_topic, IMAGE_TYPE, typestore=store, offered_qos_profiles=qos)
        cl = w.add_connection(label_topic, IMAGE_TYPE, typestore=store,
                              offered_qos_profiles=qos) if label_topic else None
        for stamp, rgb, labels in frames:
            hdr = T["std_msgs/msg/Header"](
                stamp=T["builtin_interfaces/msg/Time"](sec=stamp // 1_000_000_000,
                                                       nanosec=stamp % 1_000_000_000),
                frame_id=frame_id)
            img = {"rgb8": rgb, "bgr8": rgb[..., ::-1], "mono8": rgb[..., 0]}.get(image_encoding)
            if img is None:
                raise BagError(f"image_encoding must be rgb8, bgr8 or mono8, got "
                               f"{image_encoding!r}")
            w.write(ci, stamp, store.serialize_cdr(numpy_to_image(store, img, image_encoding, hdr),
                                                   IMAGE_TYPE))
            if cl is not None and labels is not None:
                w.write(cl, stamp, store.serialize_cdr(
                    numpy_to_image(store, labels, label_encoding, hdr), IMAGE_TYPE))
    except BaseException:
        w.close()
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    w.close()
    rename_storage_files(tmp, tmp.name, path.name)
    tmp.rename(path)
    return path


def rename_storage_files(bag: Path, old_stem: str, new_stem: Optional[str] = None) -> None:
    """Give a bag's storage files the stem ``new_stem`` (default: the directory's name) and
    fix their names in metadata.yaml. Called on the temporary directory before its final
    rename (``new_stem`` = the final name), so a crash never leaves a complete-looking bag
    whose metadata names files that are not there."""
    import yaml

    new_stem = new_stem or bag.name
    meta = bag / "metadata.yaml"
    text = meta.read_text()
    for f in sorted(bag.iterdir()):
        if f.name.startswith(old_stem + "."):
            new = new_stem + f.name[len(old_stem):]
            f.rename(bag / new)
            text = text.replace(f.name, new)
    yaml.safe_load(text)   # still valid YAML
    tmp = meta.with_name(meta.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, meta)
