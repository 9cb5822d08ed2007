"""Launch the ovseg_ros segmentation node (and optionally RViz).

    ros2 launch ovseg_ros ovseg.launch.py
    ros2 launch ovseg_ros ovseg.launch.py image:=/camera/color/image_raw \
        camera_info:=/camera/color/camera_info device:=cuda rviz:=true
    ros2 launch ovseg_ros ovseg.launch.py config:=/path/to/jetson_small.yaml \
        vocabulary:="[person, forklift, pallet, floor]"
    ros2 launch ovseg_ros ovseg.launch.py \
        cameras:="{front: /front/color/image_raw, left: /left/color/image_raw}"
    ros2 launch ovseg_ros ovseg.launch.py image:=/camera/color/image_raw \
        camera_info:=/camera/color/camera_info \
        depth:=/camera/aligned_depth_to_color/image_raw

Launch arguments (documented in docs/node.md):
  namespace    namespace of the node and all its topics/services ('' = root,
               so the service is /set_vocabulary)
  config       params file (default: the package's config/ovseg.yaml); a relative
               path is looked up in the working directory, then the package's share
               directory (config:=config/demo_tiny.yaml works from anywhere)
  image        input image topic the node's `image` is remapped to
  camera_info  input camera_info topic the node's `camera_info` is remapped to
  depth        registered depth topic (16UC1 mm / 32FC1 m, the colour image's size and
               frame) the node's `depth` is remapped to; enables depth and the 3D outputs
               ('' = no depth)
  depth_camera_info  the depth's camera_info ('' = the camera_info beside the depth topic)
  engine       override the config's engine ('' = keep the config's)
  backend      override the config's backend ('' = keep)
  device       override the config's device, e.g. cuda ('' = keep)
  vocabulary   override the initial vocabulary, a YAML list ('' = keep)
  cameras      the node's cameras: a YAML list "[front, left]" (topics front/image,
               front/semantic, ...) or a mapping "{front: /cam_front/image_raw, ...}"
               that also remaps each camera's image and camera_info, or with depth
               "{front: {image: /front/color/image_raw, depth:
               /front/aligned_depth_to_color/image_raw}}" ('' = keep)
  tracking     true: persistent track ids (tracking.enabled); '' = keep the config's
  embeddings   true: segment embeddings, the segment_embeddings topic and the locate
               service (embeddings.enabled); '' = keep the config's
  use_sim_time use the /clock topic (bag playback)
  rviz         also start RViz with the package's config/ovseg.rviz (an error before
               anything starts when rviz2 is not installed)
  dds_profile  Fast DDS XML profile for the node ('' = the package's
               config/fastdds_camera.xml unless the environment already sets one or
               FASTDDS_BUILTIN_TRANSPORTS; 'none' = leave the environment alone)
  log_level    the node's log level

The argument handling (path resolution, overrides, remappings, the node's
environment, the rviz2 check) is ovseg_ros/launch_logic.py, importable and
tested without launch_ros.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

ARGUMENTS = [
    ("namespace", "", "Namespace of the node and its topics ('' = root: /set_vocabulary)."),
    ("config", "", "Params file; '' = <share>/ovseg_ros/config/ovseg.yaml."),
    ("image", "image", "Input image topic (sensor_msgs/Image)."),
    ("camera_info", "camera_info", "Input camera_info topic."),
    ("depth", "", "Registered depth topic (16UC1 mm or 32FC1 m, aligned to the colour image); "
     "enables the 3D outputs; '' = no depth."),
    ("depth_camera_info", "", "Depth camera_info topic; '' = the one beside the depth topic."),
    ("engine", "", "Engine override (proxyclip, fcclip, maftplus); '' keeps the config's."),
    ("backend", "", "Backend override (torch, onnxruntime, tensorrt); '' keeps the config's."),
    ("device", "", "Device override (cpu, cuda, cuda:N); '' keeps the config's."),
    ("vocabulary", "", "Initial vocabulary override as a YAML list, e.g. \"[person, floor]\"."),
    ("cameras", "", "Cameras of the node: a YAML list \"[front, left]\" (topics front/image, "
     "...) or a mapping \"{front: /cam_front/image_raw}\" (remaps front/image there) or "
     "\"{front: {image: ..., depth: ...}}\" (and front/depth); '' keeps the config's."),
    ("tracking", "", "true: persistent track ids (tracking.enabled); '' keeps the config's."),
    ("embeddings", "", "true: segment embeddings, segment_embeddings and the locate service "
     "(embeddings.enabled); '' keeps the config's."),
    ("use_sim_time", "false", "Use /clock (bag playback)."),
    ("rviz", "false", "Start RViz with config/ovseg.rviz."),
    ("log_level", "info", "Log level of the node."),
    ("dds_profile", "", "Fast DDS XML profile for the node; '' = <share>/ovseg_ros/config/"
     "fastdds_camera.xml unless the environment sets one; 'none' = the environment's."),
]


def _node(context, *args, **kwargs):
    from launch.actions import LogInfo

    from ovseg_ros.launch_logic import plan

    share = FindPackageShare("ovseg_ros").perform(context)
    values = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    # Everything is decided (and every error raised) before the first process starts.
    p = plan(values, share)
    namespace = LaunchConfiguration("namespace")
    actions = [LogInfo(msg=f"ovseg_node: {note}") for note in p.notes]
    actions.append(Node(
        package="ovseg_ros",
        executable="ovseg_node",
        name="ovseg_node",
        namespace=namespace,
        output="screen",
        emulate_tty=True,
        parameters=[str(p.config), p.overrides],
        remappings=p.remappings,
        additional_env=p.node_env,
        arguments=["--ros-args", "--log-level", p.log_level],
    ))
    if p.rviz:
        # RViz in the same namespace: config/ovseg.rviz names its topics relatively.
        actions.append(Node(package="rviz2", executable="rviz2", name="rviz2", output="screen",
                            namespace=namespace, arguments=["-d", str(p.rviz_config)],
                            parameters=[{"use_sim_time": p.overrides["use_sim_time"]}]))
    return actions


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=desc)
         for name, default, desc in ARGUMENTS]
        + [OpaqueFunction(function=_node)])
