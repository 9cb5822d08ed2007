"""Package metadata: package.xml, setup.py, CMakeLists.txt agree with the code.

- package.xml is a valid format-3 manifest and declares every ROS package and
  every third-party library that the installed code (ovseg_ros/, launch/) imports;
- setup.py builds a wheel with the package data, the ament files, launch/ and
  config/, and the same console entry points as CMakeLists.txt;
- CMakeLists.txt in its colcon mode installs the Python package, the entry
  points and the generated interfaces into one working prefix.
"""
import ast
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from catkin_pkg.package import parse_package

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "ovseg_ros"

# ROS packages not installed here (no PyPI wheel) that code may import.
ROS_PACKAGES_NOT_ON_PYPI = {"launch", "launch_ros", "ros2cli", "cv_bridge", "message_filters",
                            "vision_msgs", "rosbag2_py", "tf2_ros"}
# Import name -> the package.xml key that provides it: a rosdep key
# (exec_depend/depend) or a <pip_depend> in <export> where rosdep has none.
THIRD_PARTY = {
    "numpy": "python3-numpy", "cv2": "python3-opencv", "yaml": "python3-yaml",
    "tqdm": "python3-tqdm", "matplotlib": "python3-matplotlib", "PIL": "python3-pil",
    "skimage": "python3-skimage", "scipy": "python3-scipy",
    "torch": "torch", "torchvision": "torchvision", "open_clip": "open_clip_torch",
    "timm": "timm", "safetensors": "safetensors", "rosbags": "rosbags", "onnx": "onnx",
    "onnxruntime": "onnxruntime", "torchmetrics": "torchmetrics",
    "huggingface_hub": "huggingface_hub", "motmetrics": "motmetrics", "plyfile": "plyfile",
    "tifffile": "python3-tifffile",
}
# Optional accelerators, imported lazily by the backends that need them and
# documented in docs/package_structure.md; not installed by default.
OPTIONAL = {"tensorrt", "pycuda", "cuda"}


@pytest.fixture(scope="module")
def manifest():
    pkg = parse_package(str(REPO / "package.xml"))
    pkg.validate()  # raises InvalidPackage (e.g. a bad maintainer e-mail)
    return pkg


def _declared(pkg):
    deps = pkg.build_depends + pkg.exec_depends + pkg.buildtool_depends
    names = {d.name for d in deps}
    pip = {e.content.strip() for e in pkg.exports if e.tagname == "pip_depend"}
    return names, pip


def test_manifest_basics(manifest):
    import ovseg_ros

    assert manifest.package_format == 3
    assert manifest.name == PACKAGE
    assert manifest.version == ovseg_ros.__version__ == "0.1.0"
    assert manifest.licenses == ["Apache-2.0"]
    assert manifest.maintainers and all(
        re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]{2,}", m.email) for m in manifest.maintainers)
    assert {"ament_cmake", "ament_cmake_python", "rosidl_default_generators"} <= \
        {d.name for d in manifest.buildtool_depends}
    assert "rosidl_default_runtime" in {d.name for d in manifest.exec_depends}
    assert "rosidl_interface_packages" in {g.name for g in manifest.member_of_groups}
    assert "python3-pytest" in {d.name for d in manifest.test_depends}
    build_type = [e.content for e in manifest.exports if e.tagname == "build_type"]
    assert build_type == ["ament_cmake"]


def _imports(paths):
    """Top-level module names imported (absolutely) by the given files."""
    found = {}
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            for mod in mods:
                found.setdefault(mod.split(".")[0], set()).add(str(path.relative_to(REPO)))
    return found


def _ros_packages_here():
    index = Path(sys.prefix) / "share" / "ament_index" / "resource_index" / "packages"
    return {p.name for p in index.iterdir()} if index.is_dir() else set()


def test_manifest_declares_every_import(manifest):
    files = sorted((REPO / PACKAGE).rglob("*.py")) + sorted((REPO / "launch").glob("*.py"))
    imports = _imports(files)
    ros = _ros_packages_here() | ROS_PACKAGES_NOT_ON_PYPI
    names, pip = _declared(manifest)
    problems = []
    for mod, where in sorted(imports.items()):
        if mod in sys.stdlib_module_names or mod == PACKAGE or mod in OPTIONAL:
            continue
        if mod in ros:
            if mod not in names:
                problems.append(f"ROS package {mod!r} (imported by {sorted(where)}) is missing: "
                                f"add <exec_depend>{mod}</exec_depend> to package.xml")
        elif mod in THIRD_PARTY:
            key = THIRD_PARTY[mod]
            if key not in names and key not in pip:
                problems.append(f"{mod!r} (imported by {sorted(where)}) is missing: add "
                                f"<exec_depend>{key}</exec_depend> (or <pip_depend> in <export>)")
        else:
            problems.append(f"unknown import {mod!r} in {sorted(where)}: declare it in package.xml "
                            "and add its key to THIRD_PARTY in test/tools/test_package_metadata.py")
    assert not problems, "\n".join(problems)


def test_pip_only_dependencies_are_pinned(manifest):
    # Every <pip_depend> must be installable from the project's pinned set.
    pinned = set()
    for line in (REPO / "requirements" / "runtime.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            pinned.add(re.split(r"[=<>!~\[ ]", line)[0].lower().replace("_", "-"))
    _, pip = _declared(manifest)
    missing = {p for p in pip if p.lower().replace("_", "-") not in pinned}
    assert not missing, f"pip_depend without a pin in requirements/runtime.txt: {missing}"


def _cmake_entry_points():
    text = (REPO / "CMakeLists.txt").read_text()
    block = re.search(r"set\(entry_points(.*?)\)", text, re.S).group(1)
    return re.findall(r'"([^"]+=[^"]+)"', block)


def _setup_entry_points():
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "ENTRY_POINTS":
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no ENTRY_POINTS list")


def test_entry_points_agree_between_setup_and_cmake():
    setup_eps = _setup_entry_points()
    assert setup_eps == _cmake_entry_points()
    assert "ovseg_node=ovseg_ros.node:main" in setup_eps


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    # Build from a copy so that setuptools' build/ and egg-info never touch the
    # working tree that other tests and tools use at the same time.
    src = tmp_path_factory.mktemp("src")
    for name in ("setup.py", "package.xml", "resource", "launch", "config", PACKAGE):
        if (REPO / name).exists():
            copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
            copy(REPO / name, src / name, **({"ignore": shutil.ignore_patterns(
                "__pycache__", "*.pyc")} if (REPO / name).is_dir() else {}))
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-q", "-w", str(out), str(src)],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheels = list(out.glob(f"{PACKAGE}-0.1.0-*.whl"))
    assert len(wheels) == 1, list(out.iterdir())
    with zipfile.ZipFile(wheels[0]) as zf:
        return zf.namelist(), zf.read(next(n for n in zf.namelist()
                                           if n.endswith("entry_points.txt"))).decode()


def test_wheel_contains_package_data(wheel):
    names, _ = wheel
    data = [p for p in (REPO / PACKAGE / "data").rglob("*")
            if p.is_file() and "__pycache__" not in p.parts]
    data += list((REPO / PACKAGE / "testing" / "model_configs").glob("*.json"))
    assert any(p.name == "coco_panoptic.txt" for p in data)
    missing = [str(p.relative_to(REPO)) for p in data
               if p.relative_to(REPO).as_posix() not in names]
    assert not missing, f"package data missing from the wheel: {missing}"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert f"{PACKAGE}/segmenter.py" in names and f"{PACKAGE}/core/vocabulary.py" in names


def test_wheel_installs_ament_files_launch_and_config(wheel):
    names, _ = wheel
    data = f"{PACKAGE}-0.1.0.data/data/"
    expected = [f"share/ament_index/resource_index/packages/{PACKAGE}",
                f"share/{PACKAGE}/package.xml"]
    for pattern in ("launch/*.launch.py", "config/*.yaml", "config/*.rviz"):
        expected += [f"share/{PACKAGE}/{p.relative_to(REPO).as_posix()}"
                     for p in sorted(REPO.glob(pattern))]
    if (REPO / "launch" / "ovseg.launch.py").exists():
        assert f"share/{PACKAGE}/launch/ovseg.launch.py" in expected
    missing = [e for e in expected if data + e not in names]
    assert not missing, f"missing from the wheel's data files: {missing}"


def test_wheel_console_scripts(wheel):
    _, entry_points = wheel
    for ep in _setup_entry_points():
        name, target = ep.split("=")
        assert f"{name} = {target}" in entry_points


def test_colcon_mode_install_layout(tmp_path):
    """CMakeLists.txt as colcon runs it (OVSEG_ROS_INTERFACES_ONLY=OFF): one
    prefix with the Python sources + generated msg/srv, entry points in
    lib/ovseg_ros, launch/config in share/ovseg_ros; the package imports from it."""
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip("cmake is not installed")
    prefix = sys.prefix
    env = dict(os.environ, CMAKE_PREFIX_PATH=prefix, AMENT_PREFIX_PATH=prefix,
               PATH=f"{prefix}/bin:{os.environ.get('PATH', '')}",
               LD_LIBRARY_PATH=f"{prefix}/lib:{os.environ.get('LD_LIBRARY_PATH', '')}")
    build, install = tmp_path / "build", tmp_path / "install"
    for cmd in ([cmake, "-S", str(REPO), "-B", str(build), f"-DCMAKE_INSTALL_PREFIX={install}",
                 f"-DPython3_EXECUTABLE={sys.executable}", "-DBUILD_TESTING=OFF",
                 "-DCMAKE_BUILD_TYPE=Release"],
                [cmake, "--build", str(build), "-j", "2"],
                [cmake, "--install", str(build)]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    site = install / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    pkg = site / PACKAGE
    assert (pkg / "__init__.py").read_text() == (REPO / PACKAGE / "__init__.py").read_text()
    assert (pkg / "msg" / "_segments.py").is_file()
    assert (pkg / "srv" / "_set_vocabulary.py").is_file()
    assert (pkg / "data" / "class_names" / "coco_panoptic.txt").is_file()
    share = install / "share" / PACKAGE
    assert (share / "package.xml").is_file()
    assert (install / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file()
    for pattern in ("launch/*.launch.py", "config/*.yaml", "config/*.rviz"):
        for p in REPO.glob(pattern):
            assert (share / p.relative_to(REPO)).is_file(), p
    for ep in _setup_entry_points():
        name, target = ep.split("=")
        script = install / "lib" / PACKAGE / name
        assert script.is_file() and os.access(script, os.X_OK), script
        module = target.split(":")[0]
        assert f"from {module} import" in script.read_text()

    # The installed prefix works on its own, as after `source install/setup.bash`.
    run_env = dict(os.environ, PYTHONPATH=str(site),
                   LD_LIBRARY_PATH=f"{install / 'lib'}:{os.environ.get('LD_LIBRARY_PATH', '')}")
    check = ("import ovseg_ros, ovseg_ros.msg as m, ovseg_ros.srv as s; "
             "from rclpy.type_support import check_for_type_support as c; "
             "c(m.Segments); c(s.SetVocabulary); "
             "print(ovseg_ros.__file__, m.__file__, ovseg_ros.load_segmenter.__name__)")
    proc = subprocess.run([sys.executable, "-c", check], env=run_env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    init_file, msg_file, api = proc.stdout.split()
    assert Path(init_file).parent == pkg and Path(msg_file).parent.parent == pkg
    assert api == "load_segmenter"
