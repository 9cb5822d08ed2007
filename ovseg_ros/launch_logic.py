"""What launch/ovseg.launch.py does with its arguments, without launch or launch_ros.

The launch file is a thin wrapper: it reads the launch arguments as strings and
hands them to :func:`plan`, which returns everything the launch actions need
(params file, parameter overrides, remappings, the node's extra environment,
whether to start RViz). Keeping this ROS-free lets the logic be tested where
launch_ros is not installable (the PyPI ROS 2 wheels) and keeps every error
message in one place.

Errors are :class:`LaunchArgumentError` and are raised before any process is
started, so a bad argument never leaves a half-started launch (an ovseg_node
without its RViz) behind.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Tuple

PACKAGE = "ovseg_ros"
DEFAULT_CONFIG = "config/ovseg.yaml"
DEFAULT_DDS_PROFILE = "config/fastdds_camera.xml"
RVIZ_CONFIG = "config/ovseg.rviz"
#: the environment variables that select a Fast DDS XML profile: Fast DDS 3.x (Kilted and
#: later) reads FASTDDS_, 2.x (Humble, Jazzy) only FASTRTPS_, which Kilted's rmw_fastrtps
#: still reads with a deprecation warning
PROFILE_VARS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
#: distributions whose Fast DDS is 2.x
FASTDDS2_DISTROS = ("humble", "iron", "jazzy")


def profile_variables(path, environ: Mapping[str, str]) -> Dict[str, str]:
    """The variables that make Fast DDS load the XML profile ``path`` on this distribution
    (ROS_DISTRO): FASTDDS_DEFAULT_PROFILES_FILE, plus the deprecated FASTRTPS_ name only
    where Fast DDS 2.x needs it."""
    env = {PROFILE_VARS[0]: str(path)}
    if environ.get("ROS_DISTRO", "").lower() in FASTDDS2_DISTROS:
        env[PROFILE_VARS[1]] = str(path)
    return env
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


class LaunchArgumentError(ValueError):
    """A launch argument cannot be used; the message says which and how to fix it."""


def parse_bool(name: str, value: str) -> bool:
    v = str(value).strip().lower()
    if v in TRUE:
        return True
    if v in FALSE:
        return False
    raise LaunchArgumentError(f"launch argument {name} must be true or false, got {value!r}")


def resolve_file(name: str, value: str, share_dir: Optional[Path], cwd: Path,
                 default: str) -> Path:
    """A file named by a launch argument.

    '' -> ``<share>/<default>``. An absolute path is used as is. A relative
    path is looked up against the working directory of ``ros2 launch``, then
    the package's share directory (so ``config:=config/demo_tiny.yaml`` works
    from any directory), then ``<share>/config`` (``config:=demo_tiny.yaml``).
    A file that is not found is an error naming every place tried.
    """
    value = os.path.expanduser(str(value).strip())
    share = Path(share_dir) if share_dir else None
    if not value:
        if share is None:
            raise LaunchArgumentError(f"launch argument {name}: no default, the {PACKAGE} share "
                                      f"directory is unknown; pass {name}:=<file>")
        candidates = [share / default]
    elif os.path.isabs(value):
        candidates = [Path(value)]
    else:
        candidates = [Path(cwd) / value]
        if share is not None:
            candidates += [share / value, share / "config" / value]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    tried = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise LaunchArgumentError(f"launch argument {name}:={value!r}: file not found (tried {tried})")


def parse_vocabulary(text: str) -> Optional[List[str]]:
    """'' -> None (keep the config's); else a YAML list of strings."""
    import yaml

    if not str(text).strip():
        return None
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LaunchArgumentError(f"launch argument vocabulary is not valid YAML ({exc}); "
                                  "e.g. vocabulary:=\"[person, 'sofa,couch', floor]\"") from None
    if not isinstance(parsed, list) or not parsed or not all(isinstance(v, str) for v in parsed):
        raise LaunchArgumentError("launch argument vocabulary must be a non-empty YAML list of "
                                  "strings, e.g. vocabulary:=\"[person, 'sofa,couch', floor]\"; "
                                  f"got {text!r}")
    return parsed


#: the keys of a camera's entry in the cameras mapping, and the node topic each remaps
CAMERA_TOPIC_KEYS = {"image": "image", "camera_info": "camera_info", "depth": "depth",
                     "depth_camera_info": "depth/camera_info"}


def _camera_topics(name: str, value, hint: str) -> Dict[str, str]:
    """One camera's entry: an image topic, or a mapping with image, camera_info, depth,
    depth_camera_info (each optional; camera_info and depth_camera_info default to the
    camera_info beside image and depth)."""
    if isinstance(value, str):
        value = {"image": value}
    if not isinstance(value, dict) or not value or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise LaunchArgumentError(f"launch argument cameras: camera {name!r} must map to an "
                                  f"image topic or to a mapping of topics; {hint}; got "
                                  f"{value!r}")
    unknown = sorted(set(value) - set(CAMERA_TOPIC_KEYS))
    if unknown:
        raise LaunchArgumentError(f"launch argument cameras: camera {name!r} has unknown keys "
                                  f"{unknown}; the keys are {sorted(CAMERA_TOPIC_KEYS)}")
    return {k: value.get(k, "") for k in CAMERA_TOPIC_KEYS}


def parse_cameras(text: str) -> Optional[Dict[str, Dict[str, str]]]:
    """'' -> None (keep the config's cameras); a YAML list of camera names
    (``[front, left]``: topics front/image, left/image, ... in the node's namespace), or a
    mapping name -> image topic (``{front: /cam_front/image_raw}``: front/image is remapped
    there and front/camera_info to the camera_info beside it), or name -> topics
    (``{front: {image: /front/color/image_raw, depth:
    /front/aligned_depth_to_color/image_raw}}``: front/depth and front/depth/camera_info
    are remapped too, and the camera's depth is enabled). Returns name -> {image,
    camera_info, depth, depth_camera_info} ('' = no remap)."""
    import yaml

    if not str(text).strip():
        return None
    hint = ("e.g. cameras:=\"[front, left]\" or "
            "cameras:=\"{front: /cam_front/image_raw, left: /cam_left/image_raw}\" or "
            "cameras:=\"{front: {image: /front/color/image_raw, depth: "
            "/front/aligned_depth_to_color/image_raw}}\"")
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise LaunchArgumentError(f"launch argument cameras is not valid YAML ({exc}); "
                                  f"{hint}") from None
    if isinstance(parsed, list) and parsed and all(isinstance(v, str) for v in parsed):
        cams = {name: {k: "" for k in CAMERA_TOPIC_KEYS} for name in parsed}
        if len(cams) != len(parsed):
            raise LaunchArgumentError(f"launch argument cameras names a camera twice: {text!r}")
    elif isinstance(parsed, dict) and parsed and all(isinstance(k, str) for k in parsed):
        cams = {k: _camera_topics(k, v, hint) for k, v in parsed.items()}
    else:
        raise LaunchArgumentError(f"launch argument cameras must be a non-empty YAML list of "
                                  f"names or a mapping name -> image topic; {hint}; got {text!r}")
    from .runtime.cameras import CameraConfigError, validate_camera_names

    try:
        validate_camera_names(list(cams))
    except CameraConfigError as exc:
        raise LaunchArgumentError(f"launch argument cameras: {exc}") from None
    return cams


def sibling_camera_info(topic: str) -> str:
    """The camera_info beside an image topic, as camera drivers publish it."""
    return topic.rsplit("/", 1)[0] + "/camera_info" if "/" in topic else "camera_info"


def camera_remappings(cams: Mapping[str, Mapping[str, str]]) -> List[Tuple[str, str]]:
    """front -> {image: /cam_front/image_raw} gives front/image and front/camera_info
    remaps (the camera_info beside the image topic), a depth topic front/depth and
    front/depth/camera_info (beside the depth topic unless depth_camera_info is given).
    A plain string value is the image topic."""
    out = []
    for name, topics in cams.items():
        if isinstance(topics, str):
            topics = {"image": topics}
        prefix = f"{name}/" if name else ""
        for stream, info in (("image", "camera_info"), ("depth", "depth_camera_info")):
            topic = topics.get(stream, "")
            if topic:
                out.append((prefix + CAMERA_TOPIC_KEYS[stream], topic))
            info_topic = topics.get(info, "") or (sibling_camera_info(topic) if topic else "")
            if info_topic:
                out.append((prefix + CAMERA_TOPIC_KEYS[info], info_topic))
    return out


def node_overrides(args: Mapping[str, str]) -> Dict[str, object]:
    """Parameter overrides of the node: use_sim_time, and engine/backend/device/vocabulary/
    cameras/tracking/embeddings when they are not ''; depth_enabled with depth:=,
    <c>.depth_enabled for each camera given a depth topic in cameras:=."""
    overrides: Dict[str, object] = {
        "use_sim_time": parse_bool("use_sim_time", args.get("use_sim_time", "false"))}
    for key in ("engine", "backend", "device"):
        value = str(args.get(key, "")).strip()
        if value:
            overrides[key] = value
    vocab = parse_vocabulary(args.get("vocabulary", ""))
    if vocab is not None:
        overrides["vocabulary"] = vocab
    cams = parse_cameras(args.get("cameras", ""))
    if cams is not None:
        overrides["cameras"] = list(cams)
        for name, topics in cams.items():
            if topics["depth"]:
                overrides[f"{name}.depth_enabled" if name else "depth_enabled"] = True
    if _depth_argument(args, cams):
        overrides["depth_enabled"] = True
    # tracking:=true / embeddings:=true switch the config groups' `enabled` ('' = keep)
    for group in ("tracking", "embeddings"):
        value = str(args.get(group, "")).strip()
        if value:
            overrides[f"{group}.enabled"] = parse_bool(group, value)
    return overrides


def _depth_argument(args: Mapping[str, str], cams) -> str:
    """The depth:= topic ('' = none); it is the unnamed camera's, so it cannot go with named
    cameras (their depth topics go into cameras:=)."""
    depth = str(args.get("depth", "")).strip()
    info = str(args.get("depth_camera_info", "")).strip()
    if info and not depth:
        raise LaunchArgumentError("launch argument depth_camera_info:= needs depth:=<topic>")
    if depth and cams is not None and any(cams):
        raise LaunchArgumentError(
            "launch argument depth:= is the unnamed camera's depth; with named cameras give "
            "each camera's depth in cameras:=, e.g. cameras:=\"{front: {image: "
            "/front/color/image_raw, depth: /front/aligned_depth_to_color/image_raw}}\"")
    return depth


def node_remappings(args: Mapping[str, str]) -> List[Tuple[str, str]]:
    cams = parse_cameras(args.get("cameras", ""))
    out = [("image", str(args.get("image", "image")) or "image"),
           ("camera_info", str(args.get("camera_info", "camera_info")) or "camera_info")]
    depth = _depth_argument(args, cams)
    if depth:
        out += [("depth", depth), ("depth/camera_info",
                                   str(args.get("depth_camera_info", "")).strip()
                                   or sibling_camera_info(depth))]
    return out + camera_remappings(cams or {})


def dds_environment(value: str, share_dir: Optional[Path], cwd: Path,
                    environ: Mapping[str, str]) -> Tuple[Dict[str, str], str]:
    """(variables to set for the node process, what was decided, for the log).

    ``dds_profile`` '' selects the package's config/fastdds_camera.xml (large
    camera frames between processes, docs/node.md "Large frames") unless the
    environment already chooses Fast DDS transports or a profile itself: the
    user's choice is kept. 'none' leaves the environment alone; a path selects
    that profile (resolved like ``config``), also when FASTDDS_BUILTIN_TRANSPORTS
    is set: the profile's transports then apply (checked with Fast DDS 3.2.3: a
    participant with both is discovered by, and delivers to, default peers).
    """
    v = str(value).strip()
    if v.lower() == "none":
        return {}, "dds_profile:=none: Fast DDS settings of the environment are used"
    if not v:
        for var in PROFILE_VARS + ("FASTDDS_BUILTIN_TRANSPORTS",):
            if environ.get(var):
                return {}, (f"{var}={environ[var]} is set in the environment: kept (the "
                            "package's Fast DDS camera profile is not applied)")
    path = resolve_file("dds_profile", v, share_dir, cwd, DEFAULT_DDS_PROFILE)
    env = profile_variables(path, environ)
    return env, f"Fast DDS profile {path} (large camera frames)"


def find_rviz2(environ: Mapping[str, str],
               which: Callable[[str], Optional[str]] = shutil.which) -> Optional[str]:
    """The rviz2 executable, as launch_ros would find it (``<prefix>/lib/rviz2/rviz2`` of an
    AMENT_PREFIX_PATH entry), or on PATH; None when RViz is not installed."""
    for prefix in environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            exe = Path(prefix) / "lib" / "rviz2" / "rviz2"
            if exe.is_file() and os.access(exe, os.X_OK):
                return str(exe)
    return which("rviz2")


@dataclass
class LaunchPlan:
    """Everything launch/ovseg.launch.py starts, decided before anything starts."""

    config: Path
    overrides: Dict[str, object]
    remappings: List[Tuple[str, str]]
    node_env: Dict[str, str]
    rviz: bool
    rviz_config: Optional[Path]
    log_level: str
    notes: List[str] = field(default_factory=list)


def plan(args: Mapping[str, str], share_dir: Optional[Path], cwd: Optional[Path] = None,
         environ: Optional[Mapping[str, str]] = None,
         which: Callable[[str], Optional[str]] = shutil.which) -> LaunchPlan:
    """The launch plan for the given argument strings; raises LaunchArgumentError."""
    cwd = Path(cwd) if cwd is not None else Path.cwd()
    environ = os.environ if environ is None else environ
    config = resolve_file("config", args.get("config", ""), share_dir, cwd, DEFAULT_CONFIG)
    overrides = node_overrides(args)
    env, dds_note = dds_environment(args.get("dds_profile", ""), share_dir, cwd, environ)
    rviz = parse_bool("rviz", args.get("rviz", "false"))
    rviz_config = None
    if rviz:
        if find_rviz2(environ, which) is None:
            raise LaunchArgumentError(
                "rviz:=true but rviz2 is not installed (not in any AMENT_PREFIX_PATH prefix's "
                "lib/rviz2, not on PATH): install it (apt install ros-$ROS_DISTRO-rviz2) or "
                "launch with rviz:=false; nothing was started")
        rviz_config = resolve_file("rviz", "", share_dir, cwd, RVIZ_CONFIG)
    return LaunchPlan(config=config, overrides=overrides, remappings=node_remappings(args),
                      node_env=env, rviz=rviz, rviz_config=rviz_config,
                      log_level=str(args.get("log_level", "info")) or "info",
                      notes=[f"params file {config}", dds_note])


__all__ = ["LaunchArgumentError", "LaunchPlan", "plan", "resolve_file", "parse_vocabulary",
           "parse_cameras", "camera_remappings", "sibling_camera_info", "CAMERA_TOPIC_KEYS",
           "parse_bool", "node_overrides", "node_remappings", "dds_environment", "find_rviz2",
           "profile_variables", "DEFAULT_DDS_PROFILE", "PROFILE_VARS"]
