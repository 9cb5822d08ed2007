"""ROS-free runtime pieces of the node: frame hand-over and scheduling across
cameras, rolling statistics, input-stall detection, camera naming.

Nothing here imports rclpy, so all of it is unit-tested without DDS.
"""
