"""`colcon build` of this package in a temporary workspace, as a ROS 2 user runs it.

colcon (requirements/dev.txt) builds a copy of the package against the pinned
PyPI ROS 2 wheels (AMENT_PREFIX_PATH / CMAKE_PREFIX_PATH = the venv, the venv's
bin first on PATH) with --build-base/--install-base in the temporary directory.
Then, in a shell that sources install/setup.bash: the ament index entry, the
interfaces importing from the install, the entry-point scripts, the share files,
and the installed ovseg_node started with config/demo_tiny.yaml answering
set_vocabulary over DDS. Also: the requirements split the Makefile installs.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "ovseg_ros"
# what colcon needs of the source tree (the rest: venv, build outputs, data, .git)
SOURCES = ("package.xml", "CMakeLists.txt", "setup.py", "cmake", "msg", "srv", "resource",
           PACKAGE, "launch", "config")


def _colcon_env() -> dict:
    prefix = sys.prefix
    env = dict(os.environ)
    env["PATH"] = f"{prefix}/bin:{env.get('PATH', '')}"
    env["AMENT_PREFIX_PATH"] = prefix
    env["CMAKE_PREFIX_PATH"] = prefix
    env["MAKEFLAGS"] = "-j2"
    for key in ("COLCON_PREFIX_PATH", "PYTHONPATH"):
        env.pop(key, None)
    return env


@pytest.fixture(scope="module")
def colcon_install(tmp_path_factory):
    colcon = shutil.which("colcon", path=f"{sys.prefix}/bin")
    if colcon is None:
        pytest.skip("colcon is not installed (pip install -r requirements/dev.txt)")
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    ws = tmp_path_factory.mktemp("colcon_ws")
    src = ws / "src" / PACKAGE
    src.mkdir(parents=True)
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / name)
    build, install = ws / "build", ws / "install"
    cmd = [colcon, "--log-base", str(ws / "log"), "build", "--base-paths", str(ws / "src"),
           "--build-base", str(build), "--install-base", str(install),
           "--packages-select", PACKAGE, "--parallel-workers", "1",
           "--event-handlers", "console_direct-",
           "--cmake-args", "-DBUILD_TESTING=OFF", f"-DPython3_EXECUTABLE={sys.executable}"]
    proc = subprocess.run(cmd, cwd=ws, env=_colcon_env(), capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, \
        f"colcon build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return ws, install


def _sourced(install: Path, script: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``script`` in bash after sourcing install/setup.bash (with the venv on PATH)."""
    return subprocess.run(["bash", "-c", f"source {install}/setup.bash && {script}"],
                          cwd=install.parent, env=_colcon_env(), capture_output=True, text=True,
                          timeout=timeout)


def test_colcon_install_layout_and_imports(colcon_install):
    ws, install = colcon_install
    prefix = install / PACKAGE
    share = prefix / "share" / PACKAGE
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file()
    for rel in ("launch/ovseg.launch.py", "config/demo_tiny.yaml", "config/ovseg.yaml",
                "config/ovseg.rviz", "config/fastdds_camera.xml", "package.xml",
                "msg/Segments.msg", "srv/SetVocabulary.srv"):
        assert (share / rel).is_file(), f"{rel} not installed in {share}"
    node = prefix / "lib" / PACKAGE / "ovseg_node"
    assert node.is_file() and os.access(node, os.X_OK)
    assert node.read_text().startswith(f"#!{sys.executable}\n")

    check = ("import ovseg_ros, ovseg_ros.msg as m, ovseg_ros.srv as s; "
             "from rclpy.type_support import check_for_type_support as c; "
             "c(m.Segments); c(s.SetVocabulary); "
             "from ament_index_python.packages import get_package_share_directory as g; "
             "print(ovseg_ros.__file__); print(m.__file__); print(g('ovseg_ros'))")
    proc = _sourced(install, f"python -c \"{check}\"")
    assert proc.returncode == 0, proc.stderr[-3000:]
    init_file, msg_file, share_dir = proc.stdout.split()
    assert Path(init_file).is_relative_to(prefix), init_file
    assert Path(msg_file).is_relative_to(prefix), msg_file
    assert Path(share_dir) == share


def test_installed_node_answers_set_vocabulary(colcon_install, tmp_path):
    from node_harness import DOMAIN_ID, Client, _die_with_parent

    from ovseg_ros.srv import SetVocabulary

    ws, install = colcon_install
    share = install / PACKAGE / "share" / PACKAGE
    log_path = tmp_path / "installed_node.log"
    env = _colcon_env()
    env.update(ROS_DOMAIN_ID=str(DOMAIN_ID), OMP_NUM_THREADS="1",
               FASTDDS_BUILTIN_TRANSPORTS=os.environ.get("FASTDDS_BUILTIN_TRANSPORTS", "DEFAULT"))
    env.pop("ROS_AUTOMATIC_DISCOVERY_RANGE", None)
    script = (f"source {install}/setup.bash && exec ovseg_node --ros-args --params-file "
              f"{share}/config/demo_tiny.yaml -r __ns:=/colcon -p text_cache_dir:={tmp_path}")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(["bash", "-c", script], cwd=tmp_path, env=env, stdout=log,
                                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    client = Client(namespace="/colcon")
    try:
        srv = client.node.create_client(SetVocabulary, "set_vocabulary")
        try:
            resp = client.call(srv, SetVocabulary.Request(
                classes=["person", "sofa,couch", "floor"]), timeout=120)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; installed node's log:\n"
                                 f"{log_path.read_text()[-3000:]}") from None
        assert resp.success, resp.message
        assert [c.name for c in resp.classes] == ["person", "sofa", "floor"]
        assert proc.poll() is None, log_path.read_text()[-3000:]
    finally:
        client.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _requirement_names(path: Path) -> set:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.add(re.split(r"[=<>!~ ]", line)[0].lower())
    return names


def test_requirements_split_and_makefile_stamp():
    req = ROOT / "requirements"
    runtime = _requirement_names(req / "runtime.txt")
    ros = _requirement_names(req / "ros_pypi.txt")
    assert {"torch", "open_clip_torch", "timm"} <= runtime
    # what a ROS workspace installs must not replace ROS's packages or its numpy
    assert not {n for n in runtime if n.startswith("ros-")}
    assert not runtime & {"numpy", "opencv-python-headless", "pyyaml"}
    assert ros and all(n.startswith("ros-") for n in ros)
    assert "colcon-common-extensions" in _requirement_names(req / "dev.txt")
    makefile = (ROOT / "Makefile").read_text()
    stamp = re.search(r"^REQUIREMENTS :=((?:.*\\\n)*.*)$", makefile, re.M)
    assert stamp, "Makefile has no REQUIREMENTS list"
    listed = set(stamp.group(1).replace("\\", " ").split())
    assert listed == {f"requirements/{p.name}" for p in req.glob("*.txt")}
    assert "$(STAMPS)/venv: $(REQUIREMENTS)" in makefile
