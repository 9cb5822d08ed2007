"""ROS 2 glue for ovseg_ros: message conversion, QoS, parameters, diagnostics.

Everything here is small and testable without DDS; ``ovseg_ros.node`` wires it
together. Importing this package needs rclpy and the message packages.
"""
