"""The ovseg_ros ROS 2 node: camera images in, label images out.

    ovseg_node --ros-args --params-file config/ovseg.yaml
    python -m ovseg_ros.node --ros-args -p engine:=proxyclip -r image:=/camera/image_raw
    python -m ovseg_ros.node --ros-args -p "cameras:=[front, left]"

One job per module:

    lifecycle.py  OvsegNode: parameters, lifecycle transitions, interfaces, services
    camera.py     one camera's subscriptions, lifecycle publishers and counters
    worker.py     the worker thread: frames -> predict_batch -> the camera's outputs
    process.py    main() and the process exit
"""
from .lifecycle import OvsegNode
from .process import main

__all__ = ["OvsegNode", "main"]
