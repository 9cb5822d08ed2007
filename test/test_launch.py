"""launch/ovseg.launch.py and the params files under config/.

launch_ros is not installable from PyPI: where it imports, the launch description
is built and checked; everywhere the file is parsed and its launch arguments
must be documented (docs/node.md and the file's docstring). The params files are
loaded both ways they are used: by the API (make_config) and by rcl's YAML parser
into a node declaring the schema parameters, and must agree.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
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


def test_rviz_config_shows_overlay_and_labels():
    import yaml

    rviz = yaml.safe_load((ROOT / "config" / "ovseg.rviz").read_text())
    topics = {d["Topic"]["Value"]: d["Class"] for d in rviz["Visualization Manager"]["Displays"]}
    assert topics.get("colored") == "rviz_default_plugins/Image"
    assert topics.get("semantic") == "rviz_default_plugins/Image"
    assert "panoptic" not in topics      # RViz rejects 32SC1


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
