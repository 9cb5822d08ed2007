"""Test-only models and presets (random weights). Never imported by production modules:
``ovseg_ros.weights`` registers the tiny models on demand when a config names one."""
