"""pip packaging of ovseg_ros: the ROS-free library, its CLIs and the ROS node.

`pip install .` (or `pip install -e .`, as `make venv` does) installs the
Python package with its data and console scripts, and puts package.xml, the
ament index marker, launch/ and config/ where ament tools look for them.
The ROS interfaces (ovseg_ros.msg / ovseg_ros.srv) are not built here: rosidl
generates them through CMakeLists.txt, either in a colcon workspace or with
`make interfaces` (docs/package_structure.md).
"""
import re
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "ovseg_ros"
HERE = Path(__file__).resolve().parent

# Keep in sync with CMakeLists.txt (test/test_package_metadata.py checks it).
ENTRY_POINTS = [
    "ovseg_node=ovseg_ros.node:main",
    "ovseg-eval=ovseg_ros.eval.cli:main",
    "ovseg-segment=ovseg_ros.tools.segment:main",
    "ovseg-bench=ovseg_ros.tools.bench:main",
    "ovseg-demo=ovseg_ros.tools.demo:main",
    "ovseg-weights=ovseg_ros.tools.weights_cli:main",
]


def read_version() -> str:
    # Read, not import: importing ovseg_ros needs numpy/torch at build time.
    text = (HERE / PACKAGE / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    if not match:
        raise RuntimeError(f"no __version__ = \"...\" line in {PACKAGE}/__init__.py")
    return match.group(1)


def files(pattern: str) -> list:
    # Relative paths: setuptools rejects absolute ones in data_files.
    return sorted(glob(pattern))


setup(
    name=PACKAGE,
    version=read_version(),
    description="Open-vocabulary semantic and panoptic segmentation for ROS 2",
    long_description=(HERE / "package.xml").read_text(encoding="utf-8").split(
        "<description>")[1].split("</description>")[0].strip(),
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["data/**/*", "testing/model_configs/*.json"]},
    exclude_package_data={"": ["*.pyc", "__pycache__/*"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", files("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", files("config/*.yaml") + files("config/*.rviz")
         + files("config/*.xml")),
    ],
    # Loose ranges; the tested, pinned set is requirements/runtime.txt. The ROS
    # 2 client libraries (rclpy, message packages) come from ROS, not from here.
    install_requires=[
        "numpy>=1.24",
        "pyyaml>=6",
        "opencv-python-headless>=4.8",
        "torch>=2.1",
        "open_clip_torch>=2.24",
        "timm>=1.0",
        "safetensors>=0.4",
        "huggingface_hub>=0.20",
        "rosbags>=0.10",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "pillow>=9",
        "onnx>=1.15",
        "onnxruntime>=1.17",
        "torchmetrics>=1.0",
    ],
    extras_require={"test": ["pytest>=7"]},
    entry_points={"console_scripts": ENTRY_POINTS},
    zip_safe=False,
)
