"""launch/ovseg.launch.py and the params files under config/.

launch_ros is not installable from PyPI: where it imports, the launch description
is built and checked; everywhere the file is parsed and its launch arguments
must be documented (docs/node.md and the file's docstring). The params files are
loaded both ways they are used: by the API (make_config) and by rcl's YAML parser
into a node declaring the schema parameters, and must agree.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ROOT / "launch" / "ovseg.launch.py"
DOCS = ROOT / "docs" / "node.md"
CONFIGS = sorted((ROOT / "config").glob("*.yaml"))


def _launch_arguments():
    tree = ast.parse(LAUNCH.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "ARGUMENTS"
                                                for t in node.targets):
            return [ast.literal_eval(elt)[0] for elt in node.value.elts], ast.get_docstring(tree)
    raise AssertionError("launch file has no ARGUMENTS list")


def test_launch_file_parses_and_arguments_are_documented():
    names, docstring = _launch_arguments()
    assert {"namespace", "config", "image", "camera_info", "engine", "backend", "device",
            "vocabulary", "rviz"} <= set(names)
    docs = DOCS.read_text()
    for name in names:
        assert f"`{name}`" in docs, f"launch argument {name} missing from docs/node.md"
        assert f"\n  {name} " in docstring, f"launch argument {name} missing from the docstring"


def test_launch_description_builds():
    pytest.importorskip("launch_ros")
    import importlib.util

    from launch.actions import DeclareLaunchArgument

    spec = importlib.util.spec_from_file_location("ovseg_launch", LAUNCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ld = mod.generate_launch_description()
    declared = [e.name for e in ld.entities if isinstance(e, DeclareLaunchArgument)]
    assert declared == _launch_arguments()[0]


# --- the launch file's logic (ovseg_ros/launch_logic.py), without launch_ros ------------------
def test_relative_config_resolves_against_cwd_then_share(tmp_path):
    from ovseg_ros.launch_logic import plan

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # started from another directory: config:=config/demo_tiny.yaml is the package's file
    p = plan({"config": "config/demo_tiny.yaml"}, ROOT, cwd=elsewhere, environ={})
    assert p.config == (ROOT / "config" / "demo_tiny.yaml").resolve()
    assert plan({"config": "demo_tiny.yaml"}, ROOT, cwd=elsewhere, environ={}).config == p.config
    # a file of that name in the working directory wins
    mine = elsewhere / "config" / "demo_tiny.yaml"
    mine.parent.mkdir()
    mine.write_text((ROOT / "config" / "demo_tiny.yaml").read_text())
    assert plan({"config": "config/demo_tiny.yaml"}, ROOT, cwd=elsewhere,
                environ={}).config == mine.resolve()
    # '' = the package's default params file; an absolute path is used as is
    assert plan({}, ROOT, cwd=elsewhere, environ={}).config == (ROOT / "config" / "ovseg.yaml")
    assert plan({"config": str(mine)}, ROOT, cwd=tmp_path, environ={}).config == mine


def test_missing_config_fails_loudly(tmp_path):
    from ovseg_ros.launch_logic import LaunchArgumentError, plan

    with pytest.raises(LaunchArgumentError) as err:
        plan({"config": "config/nope.yaml"}, ROOT, cwd=tmp_path, environ={})
    msg = str(err.value)
    assert "config:='config/nope.yaml'" in msg and "file not found" in msg
    assert str(tmp_path / "config" / "nope.yaml") in msg
    assert str(ROOT / "config" / "nope.yaml") in msg
    with pytest.raises(LaunchArgumentError, match="file not found"):
        plan({"config": str(tmp_path / "absent.yaml")}, ROOT, cwd=tmp_path, environ={})


def test_rviz_without_rviz2_is_an_error_before_anything_starts(tmp_path):
    from ovseg_ros.launch_logic import LaunchArgumentError, plan

    no_rviz = {"AMENT_PREFIX_PATH": str(tmp_path)}
    with pytest.raises(LaunchArgumentError, match="rviz2 is not installed") as err:
        plan({"rviz": "true"}, ROOT, cwd=tmp_path, environ=no_rviz, which=lambda name: None)
    assert "rviz:=false" in str(err.value) and "nothing was started" in str(err.value)
    # with rviz2 in an ament prefix (how launch_ros finds it) RViz is planned with our layout
    exe = tmp_path / "lib" / "rviz2" / "rviz2"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    p = plan({"rviz": "true"}, ROOT, cwd=tmp_path, environ=no_rviz, which=lambda name: None)
    assert p.rviz and p.rviz_config == ROOT / "config" / "ovseg.rviz"
    assert not plan({"rviz": "false"}, ROOT, cwd=tmp_path, environ={}).rviz
    with pytest.raises(LaunchArgumentError, match="true or false"):
        plan({"rviz": "maybe"}, ROOT, cwd=tmp_path, environ={})


def test_overrides_and_remappings():
    from ovseg_ros.launch_logic import LaunchArgumentError, plan

    p = plan({"engine": "fcclip", "device": "cuda", "backend": "", "use_sim_time": "true",
              "vocabulary": "[person, 'sofa,couch', floor]", "image": "/cam/image_raw",
              "camera_info": "/cam/camera_info", "log_level": "debug"}, ROOT, cwd=ROOT,
             environ={})
    assert p.overrides == {"use_sim_time": True, "engine": "fcclip", "device": "cuda",
                           "vocabulary": ["person", "sofa,couch", "floor"]}
    assert p.remappings == [("image", "/cam/image_raw"), ("camera_info", "/cam/camera_info")]
    assert p.log_level == "debug"
    for bad in ("person", "[1, 2]", "[]", "[unclosed"):
        with pytest.raises(LaunchArgumentError, match="vocabulary"):
            plan({"vocabulary": bad}, ROOT, cwd=ROOT, environ={})


def test_tracking_and_embeddings_arguments():
    from ovseg_ros.launch_logic import LaunchArgumentError, plan

    p = plan({"tracking": "true", "embeddings": "on"}, ROOT, cwd=ROOT, environ={})
    assert p.overrides["tracking.enabled"] is True and p.overrides["embeddings.enabled"] is True
    p = plan({"tracking": "false", "embeddings": ""}, ROOT, cwd=ROOT, environ={})
    assert p.overrides["tracking.enabled"] is False and "embeddings.enabled" not in p.overrides
    with pytest.raises(LaunchArgumentError, match="tracking must be true or false"):
        plan({"tracking": "maybe"}, ROOT, cwd=ROOT, environ={})


def test_cameras_argument():
    from ovseg_ros.launch_logic import LaunchArgumentError, plan

    p = plan({"cameras": "[front, left]"}, ROOT, cwd=ROOT, environ={})
    assert p.overrides["cameras"] == ["front", "left"]
    assert p.remappings == [("image", "image"), ("camera_info", "camera_info")]
    p = plan({"cameras": "{front: /front/color/image_raw, left: /left/image}"}, ROOT, cwd=ROOT,
             environ={})
    assert p.overrides["cameras"] == ["front", "left"]
    assert p.remappings[2:] == [("front/image", "/front/color/image_raw"),
                                ("front/camera_info", "/front/color/camera_info"),
                                ("left/image", "/left/image"),
                                ("left/camera_info", "/left/camera_info")]
    assert "cameras" not in plan({"cameras": ""}, ROOT, cwd=ROOT, environ={}).overrides
    for bad in ("front", "[front, front]", "[front/x]", "{front: 3}", "[]", "[unclosed"):
        with pytest.raises(LaunchArgumentError, match="cameras"):
            plan({"cameras": bad}, ROOT, cwd=ROOT, environ={})


def test_depth_argument_remaps_and_enables_depth():
    from ovseg_ros.launch_logic import LaunchArgumentError, plan

    p = plan({"image": "/camera/color/image_raw", "camera_info": "/camera/color/camera_info",
              "depth": "/camera/aligned_depth_to_color/image_raw"}, ROOT, cwd=ROOT, environ={})
    assert p.overrides["depth_enabled"] is True
    assert p.remappings == [("image", "/camera/color/image_raw"),
                            ("camera_info", "/camera/color/camera_info"),
                            ("depth", "/camera/aligned_depth_to_color/image_raw"),
                            ("depth/camera_info", "/camera/aligned_depth_to_color/camera_info")]
    p = plan({"depth": "/d/image", "depth_camera_info": "/color/camera_info"}, ROOT, cwd=ROOT,
             environ={})
    assert ("depth/camera_info", "/color/camera_info") in p.remappings
    assert "depth_enabled" not in plan({}, ROOT, cwd=ROOT, environ={}).overrides
    with pytest.raises(LaunchArgumentError, match="depth_camera_info:= needs depth"):
        plan({"depth_camera_info": "/x/camera_info"}, ROOT, cwd=ROOT, environ={})
    # depth:= is the unnamed camera's: named cameras give theirs in cameras:=
    with pytest.raises(LaunchArgumentError, match="give each camera's depth in cameras"):
        plan({"depth": "/d", "cameras": "[front]"}, ROOT, cwd=ROOT, environ={})


def test_cameras_argument_with_depth_topics():
    from ovseg_ros.launch_logic import LaunchArgumentError, plan

    p = plan({"cameras": "{front: {image: /front/color/image_raw, depth: "
                         "/front/aligned_depth_to_color/image_raw}, left: /left/image, "
                         "rear: {image: /rear/image, depth: /rear/depth, "
                         "depth_camera_info: /rear/camera_info}}"},
             ROOT, cwd=ROOT, environ={})
    assert p.overrides["cameras"] == ["front", "left", "rear"]
    assert p.overrides["front.depth_enabled"] is True and p.overrides["rear.depth_enabled"]
    assert "left.depth_enabled" not in p.overrides and "depth_enabled" not in p.overrides
    assert p.remappings[2:] == [
        ("front/image", "/front/color/image_raw"),
        ("front/camera_info", "/front/color/camera_info"),
        ("front/depth", "/front/aligned_depth_to_color/image_raw"),
        ("front/depth/camera_info", "/front/aligned_depth_to_color/camera_info"),
        ("left/image", "/left/image"), ("left/camera_info", "/left/camera_info"),
        ("rear/image", "/rear/image"), ("rear/camera_info", "/rear/camera_info"),
        ("rear/depth", "/rear/depth"), ("rear/depth/camera_info", "/rear/camera_info")]
    for bad, match in (("{front: {image: /a, dpth: /b}}", "unknown keys \\['dpth'\\]"),
                       ("{front: {}}", "must map to an image topic"),
                       ("{front: {depth: 3}}", "must map to an image topic")):
        with pytest.raises(LaunchArgumentError, match=match):
            plan({"cameras": bad}, ROOT, cwd=ROOT, environ={})


def test_dds_profile_selection(tmp_path):
    from ovseg_ros.launch_logic import PROFILE_VARS, LaunchArgumentError, plan

    profile = (ROOT / "config" / "fastdds_camera.xml").resolve()
    p = plan({}, ROOT, cwd=tmp_path, environ={})
    assert p.node_env == {"FASTDDS_DEFAULT_PROFILES_FILE": str(profile)}
    # Fast DDS 2.x (Humble, Jazzy) reads only the older name
    assert plan({}, ROOT, cwd=tmp_path, environ={"ROS_DISTRO": "humble"}).node_env == \
        {var: str(profile) for var in PROFILE_VARS}
    # the user's own Fast DDS choice is kept
    for var in PROFILE_VARS + ("FASTDDS_BUILTIN_TRANSPORTS",):
        assert plan({}, ROOT, cwd=tmp_path, environ={var: "x"}).node_env == {}
    assert plan({"dds_profile": "none"}, ROOT, cwd=tmp_path, environ={}).node_env == {}
    assert plan({"dds_profile": "config/fastdds_camera.xml"}, ROOT, cwd=tmp_path,
                environ={"FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA"}).node_env[
        PROFILE_VARS[0]] == str(profile)
    with pytest.raises(LaunchArgumentError, match="dds_profile"):
        plan({"dds_profile": "missing.xml"}, ROOT, cwd=tmp_path, environ={})


def test_launch_without_rviz2_leaves_no_process(tmp_path):
    """Where ros2 launch exists: rviz:=true without rviz2 fails and leaves no ovseg_node."""
    pytest.importorskip("launch_ros")
    import shutil

    from node_harness import run_tool
    from ovseg_ros.launch_logic import find_rviz2

    ros2 = shutil.which("ros2")
    if ros2 is None or find_rviz2(os.environ) is not None:
        pytest.skip("needs ros2 launch and a machine without rviz2")
    done = run_tool([ros2, "launch", "ovseg_ros", "ovseg.launch.py", "rviz:=true",
                     "config:=config/demo_tiny.yaml"], timeout=120, cwd=tmp_path)
    assert done.returncode != 0
    assert "rviz2 is not installed" in done.stdout + done.stderr
    assert not done.left_children


def test_rviz_config_shows_overlay_and_labels():
    import yaml

    rviz = yaml.safe_load((ROOT / "config" / "ovseg.rviz").read_text())
    topics = {d["Topic"]["Value"]: d["Class"] for d in rviz["Visualization Manager"]["Displays"]}
    assert topics.get("colored") == "rviz_default_plugins/Image"
    assert topics.get("semantic") == "rviz_default_plugins/Image"
    assert topics.get("left/colored") == "rviz_default_plugins/Image"   # a second camera
    assert "panoptic" not in topics      # RViz rejects 32SC1
    displays = {d["Topic"]["Value"]: d for d in rviz["Visualization Manager"]["Displays"]}
    # the 3D outputs: the labelled cloud in its rgb colours, the segment boxes and labels
    assert displays["points"]["Class"] == "rviz_default_plugins/PointCloud2"
    assert displays["points"]["Color Transformer"] == "RGB8"
    assert displays["markers"]["Class"] == "rviz_default_plugins/MarkerArray"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_params_file_is_valid_for_api_and_node(path):
    pytest.importorskip("rclpy")
    import rclpy
    from rclpy.node import Node

    from ovseg_ros.config import make_config
    from ovseg_ros.ros.params import declare_schema_parameters, read_schema_parameters

    cfg = make_config(path)            # the API reads the same file
    ctx = rclpy.Context()
    rclpy.init(context=ctx, args=["--ros-args", "--params-file", str(path)])
    try:
        node = Node("ovseg_node", context=ctx)
        declare_schema_parameters(node)
        values = read_schema_parameters(node)
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
    assert make_config(values).as_dict() == cfg.as_dict()


def test_default_config_is_proxyclip_b16_dino_b8():
    from ovseg_ros.config import make_config

    cfg = make_config(ROOT / "config" / "ovseg.yaml")
    assert cfg["engine"] == "proxyclip" and not cfg["random_init"]
    assert cfg["proxyclip.clip_model"] == "ViT-B-16"
    assert cfg["proxyclip.vfm_model"] == "vit_base_patch8_224.dino"
    small = make_config(ROOT / "config" / "jetson_small.yaml")
    assert small["proxyclip.vfm_model"] == "vit_small_patch8_224.dino"
    assert not small["proxyclip.sliding_window"]
    assert make_config(ROOT / "config" / "fcclip.yaml")["engine"] == "fcclip"


def test_docs_parameter_table_matches_schema():
    import subprocess
    import sys

    table = subprocess.run([sys.executable, "scripts/node_param_table.py"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.strip()
    assert table in DOCS.read_text(), \
        "docs/node.md is stale: run python scripts/node_param_table.py --update"
