"""Launch the ovseg_ros segmentation node (and optionally RViz).

    ros2 launch ovseg_ros ovseg.launch.py
    ros2 launch ovseg_ros ovseg.launch.py image:=/camera/color/image_raw \
        camera_info:=/camera/color/camera_info device:=cuda rviz:=true
    ros2 launch ovseg_ros ovseg.launch.py config:=/path/to/jetson_small.yaml \
        vocabulary:="[person, forklift, pallet, floor]"

Launch arguments (documented in docs/node.md):
  namespace    namespace of the node and all its topics/services ('' = root,
               so the service is /set_vocabulary)
  config       params file (default: the package's config/ovseg.yaml)
  image        input image topic the node's `image` is remapped to
  camera_info  input camera_info topic the node's `camera_info` is remapped to
  engine       override the config's engine ('' = keep the config's)
  backend      override the config's backend ('' = keep)
  device       override the config's device, e.g. cuda ('' = keep)
  vocabulary   override the initial vocabulary, a YAML list ('' = keep)
  use_sim_time use the /clock topic (bag playback)
  rviz         also start RViz with the package's config/ovseg.rviz
  log_level    the node's log level
"""
import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = [
    ("namespace", "", "Namespace of the node and its topics ('' = root: /set_vocabulary)."),
    ("config", "", "Params file; '' = <share>/ovseg_ros/config/ovseg.yaml."),
    ("image", "image", "Input image topic (sensor_msgs/Image)."),
    ("camera_info", "camera_info", "Input camera_info topic."),
    ("engine", "", "Engine override (proxyclip, fcclip, maftplus); '' keeps the config's."),
    ("backend", "", "Backend override (torch, onnxruntime, tensorrt); '' keeps the config's."),
    ("device", "", "Device override (cpu, cuda, cuda:N); '' keeps the config's."),
    ("vocabulary", "", "Initial vocabulary override as a YAML list, e.g. \"[person, floor]\"."),
    ("use_sim_time", "false", "Use /clock (bag playback)."),
    ("rviz", "false", "Start RViz with config/ovseg.rviz."),
    ("log_level", "info", "Log level of the node."),
]


def _node(context, *args, **kwargs):
    import yaml

    share = FindPackageShare("ovseg_ros").perform(context)
    config = LaunchConfiguration("config").perform(context) or \
        os.path.join(share, "config", "ovseg.yaml")
    overrides = {"use_sim_time": LaunchConfiguration("use_sim_time").perform(context) == "true"}
    for key in ("engine", "backend", "device"):
        value = LaunchConfiguration(key).perform(context)
        if value:
            overrides[key] = value
    vocab = LaunchConfiguration("vocabulary").perform(context)
    if vocab:
        parsed = yaml.safe_load(vocab)
        if not isinstance(parsed, list) or not all(isinstance(v, str) for v in parsed):
            raise ValueError(f"launch argument vocabulary must be a YAML list of strings, "
                             f"e.g. \"[person, 'sofa,couch', floor]\"; got {vocab!r}")
        overrides["vocabulary"] = parsed
    nodes = [Node(
        package="ovseg_ros",
        executable="ovseg_node",
        name="ovseg_node",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[config, overrides],
        remappings=[("image", LaunchConfiguration("image")),
                    ("camera_info", LaunchConfiguration("camera_info"))],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
    )]
    # RViz in the same namespace: config/ovseg.rviz names its topics relatively.
    nodes.append(Node(package="rviz2", executable="rviz2", name="rviz2", output="screen",
                      namespace=LaunchConfiguration("namespace"),
                      arguments=["-d", os.path.join(share, "config", "ovseg.rviz")],
                      parameters=[{"use_sim_time": overrides["use_sim_time"]}],
                      condition=IfCondition(LaunchConfiguration("rviz"))))
    return nodes


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=desc)
         for name, default, desc in ARGUMENTS]
        + [OpaqueFunction(function=_node)])
