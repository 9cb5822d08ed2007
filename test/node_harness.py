"""Shared helpers of the node tests: a real ovseg_node in its own process and an
rclpy test node in this one, talking over DDS on a random domain.

Each pytest session picks one random ROS_DOMAIN_ID (other suites run DDS tests
on this machine at the same time). Fast DDS keeps its default transports: the
test frames are small (see TRANSPORTS below).

No node outlives the tests: NodeUnderTest.stop() is SIGINT then SIGKILL, nodes a
failed test did not stop are stopped at interpreter exit, and each node gets
PR_SET_PDEATHSIG so it is killed even when pytest itself is killed.
"""
from __future__ import annotations

import atexit
import ctypes
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import yaml

from ovseg_ros.presets import TINY_PROXYCLIP

ROOT = Path(__file__).resolve().parent.parent
DOMAIN_ID = int(os.environ.get("OVSEG_TEST_DOMAIN_ID") or random.Random().randint(1, 100))
os.environ["OVSEG_TEST_DOMAIN_ID"] = str(DOMAIN_ID)
# this process too: FastDDS reads these when rclpy creates its participant
os.environ["ROS_DOMAIN_ID"] = str(DOMAIN_ID)
# Fast DDS's default transports (UDP + shared memory): the test frames are small
# (< 512 KiB, which best effort delivers reliably), and LARGE_DATA's TCP transport
# in Fast DDS 3.2.2 can deadlock when a participant is deleted (ovseg_ros/node/process.py,
# main), which made node tests hang or miss discovery now and then.
TRANSPORTS = os.environ.get("OVSEG_TEST_FASTDDS_TRANSPORTS", "DEFAULT")
os.environ["FASTDDS_BUILTIN_TRANSPORTS"] = TRANSPORTS
os.environ.pop("ROS_AUTOMATIC_DISCOVERY_RANGE", None)

TINY_PARAMS = {
    **TINY_PROXYCLIP, "num_threads": 1, "precision": "fp32",
    "vocabulary": ["person", "cat", "floor", "sky"],
    "max_classes": 16, "max_class_name_length": 40, "max_input_pixels": 400 * 300,
    "subscribe_compressed": True, "diagnostics_period": 0.5,
    # configure's warm-up frame within max_input_pixels (the default 640x480 is above it)
    "warmup_size": "160x120",
}


def node_env() -> Dict[str, str]:
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(DOMAIN_ID)
    env["FASTDDS_BUILTIN_TRANSPORTS"] = TRANSPORTS
    env.pop("ROS_AUTOMATIC_DISCOVERY_RANGE", None)   # LOCALHOST breaks LARGE_DATA (docs/node.md)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    return env


def write_params(path: Path, params: dict) -> Path:
    """A ROS params file (what `--params-file` takes) with nested dotted keys."""
    nested: dict = {}
    for key, value in params.items():
        d = nested
        *groups, leaf = key.split(".")
        for g in groups:
            d = d.setdefault(g, {})
        d[leaf] = value
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": nested}}))
    return path


_LIVE: List["NodeUnderTest"] = []     # started and not yet stopped


def _stop_leftovers() -> None:
    """At interpreter exit: stop every node a failed test or fixture did not stop."""
    for node in list(_LIVE):
        node.stop()


atexit.register(_stop_leftovers)


try:   # resolved here, not in the forked child (no dlopen between fork and exec)
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):   # not Linux: atexit still stops the nodes
    _PRCTL = None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the test process dies (even by SIGKILL),
    so an aborted pytest run leaves no node behind."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL))


def run_tool(cmd: List[str], timeout: float, **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run for a tool that starts node processes itself (the demo): it runs
    in its own process group, and on timeout the whole group is killed, so its node
    children do not outlive it. Raises AssertionError with the output on timeout."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"{' '.join(map(str, cmd))} ran over {timeout:.0f} s and was "
                             f"killed with its children:\n{out[-3000:]}{err[-3000:]}")
    finally:
        if proc.poll() is None:   # interrupted (Ctrl-C): leave nothing behind either
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # a tool that exited must not leave a child behind: kill any, and say so
    done = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
        done.left_children = True
    except ProcessLookupError:
        done.left_children = False
    return done


class NodeUnderTest:
    """`python -m ovseg_ros.node` in its own process (stdout+stderr to a log file)."""

    def __init__(self, tmp: Path, params: dict, namespace: str = "/t", extra=()):
        self.log_path = tmp / f"node{namespace.replace('/', '_')}.log"
        params = dict(params)
        params.setdefault("text_cache_dir", str(tmp / "text_cache"))
        cfg = write_params(tmp / f"params{namespace.replace('/', '_')}.yaml", params)
        self._log = open(self.log_path, "w")
        cmd = [sys.executable, "-m", "ovseg_ros.node", "--ros-args", "--params-file", str(cfg),
               "-r", f"__ns:={namespace}", *extra]
        self.proc = subprocess.Popen(cmd, cwd=str(ROOT), env=node_env(), stdout=self._log,
                                     stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        self.namespace = namespace
        _LIVE.append(self)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
        return float("nan")

    def stop(self, timeout: float = 20.0) -> int:
        """SIGINT (a clean shutdown), SIGKILL after ``timeout`` s; safe to call twice.
        Before the SIGKILL the node gets SIGUSR1, which makes it dump all thread stacks
        into its log (faulthandler, registered in ovseg_ros.node.main): a hang says where.
        With OVSEG_TEST_GDB=1 (and gdb installed) the native stacks of all threads go to
        <log>.gdb.txt first: how the Fast DDS shutdown deadlock (ovseg_ros/node/process.py)
        was found."""
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                if os.environ.get("OVSEG_TEST_GDB"):   # investigation aid: native stacks too
                    import shutil
                    if shutil.which("gdb"):
                        out = subprocess.run(["gdb", "-p", str(self.proc.pid), "-batch", "-ex",
                                              "thread apply all bt"], capture_output=True,
                                             text=True, timeout=120).stdout
                        self.log_path.with_suffix(".gdb.txt").write_text(out)
                self.proc.send_signal(signal.SIGUSR1)
                try:
                    self.proc.wait(timeout=1.0)
                except subprocess.TimeoutExpired:
                    pass
                if self.proc.poll() is None:
                    self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()
        if self in _LIVE:
            _LIVE.remove(self)
        return self.proc.returncode


class Client:
    """An rclpy node in the test process, spun by a background thread."""

    def __init__(self, namespace: str = "/t"):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.ctx = rclpy.Context()
        rclpy.init(context=self.ctx, domain_id=DOMAIN_ID)
        self.node = rclpy.create_node("ovseg_test_client", namespace=namespace,
                                      context=self.ctx)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.lock = threading.Lock()
        self.received: Dict[str, List] = {}
        self._running = True
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self._running:
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:   # shutting down
                if self._running:
                    raise

    def record(self, msg_type, topic: str, qos=None, key: Optional[str] = None,
               keep: int = 10000):
        """Subscribe and keep (receive time, msg) under ``key`` (default: topic)."""
        from ovseg_ros.ros.qos import output_qos

        key = key or topic
        with self.lock:
            self.received.setdefault(key, [])

        def cb(msg, key=key):
            with self.lock:
                lst = self.received[key]
                lst.append((time.monotonic(), msg))
                if len(lst) > keep:
                    del lst[0]
        return self.node.create_subscription(msg_type, topic, cb,
                                             qos if qos is not None else output_qos(depth=50))

    def msgs(self, key: str) -> List:
        with self.lock:
            return [m for _, m in self.received.get(key, [])]

    def timed(self, key: str) -> List:
        with self.lock:
            return list(self.received.get(key, []))

    def clear(self, key: str) -> None:
        with self.lock:
            self.received[key] = []

    def wait_for(self, pred: Callable[[], bool], timeout: float, node: NodeUnderTest = None,
                 what: str = "condition") -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return
            if node is not None and not node.alive():
                raise AssertionError(f"node exited while waiting for {what}:\n{node.log()[-3000:]}")
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}"
                             + (f"\nnode log:\n{node.log()[-3000:]}" if node else ""))

    def latched(self, msg_type, topic: str, node: NodeUnderTest = None, timeout: float = 20.0):
        """The current message of a transient-local topic, as a late subscriber gets it."""
        from ovseg_ros.ros.qos import latched_qos

        key = f"latched:{topic}"
        sub = self.record(msg_type, topic, qos=latched_qos(), key=key)
        try:
            self.wait_for(lambda: self.msgs(key), timeout, node, f"the latched {topic}")
            return self.msgs(key)[-1]
        finally:
            self.node.destroy_subscription(sub)
            self.clear(key)

    def call(self, client, request, timeout: float = 60.0):
        if not client.wait_for_service(timeout_sec=timeout):
            raise AssertionError(f"service {client.srv_name} not available")
        fut = client.call_async(request)
        end = time.monotonic() + timeout
        while not fut.done() and time.monotonic() < end:
            time.sleep(0.01)
        assert fut.done(), f"no response from {client.srv_name} within {timeout} s"
        return fut.result()

    def close(self) -> None:
        import rclpy

        self._running = False
        self._thread.join(timeout=2.0)
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.ctx)


def stamp_key(header) -> tuple:
    return (header.stamp.sec, header.stamp.nanosec, header.frame_id)


def diag_values(client: Client, name: str):
    """(values dict, status) of the newest DiagnosticStatus called ``name``, or None."""
    for arr in reversed(client.msgs("/diagnostics")):
        for st in arr.status:
            if st.name == name:
                return {kv.key: kv.value for kv in st.values}, st
    return None


class CameraStream:
    """A camera in the test process: publishes frames of one fixed RGB image (sent in
    ``encoding``) on ``topic`` at
    ``rate`` Hz from a thread, each with a unique stamp (seconds from ``sec_base``), and
    remembers what it sent."""

    def __init__(self, client: Client, topic: str, frame_id: str, rgb, sec_base: int,
                 rate: float = 10.0, encoding: str = "rgb8", qos=None):
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        self.client = client
        self.topic = topic
        self.frame_id = frame_id
        self.rgb = rgb
        self.encoding = encoding
        self.rate = rate
        self.sec_base = sec_base
        if qos is None:   # reliable: matches best-effort and reliable subscriptions alike
            qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)
        self.pub = client.node.create_publisher(Image, topic, qos)
        self.sent: Dict[tuple, float] = {}
        self._i = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.hook: Optional[Callable[[int], None]] = None   # called before each frame

    def message(self):
        from std_msgs.msg import Header

        from ovseg_ros.ros.image_conv import rgb_to_image

        h = Header(frame_id=self.frame_id)
        h.stamp.sec, h.stamp.nanosec = self.sec_base + self._i, 0
        self._i += 1
        return rgb_to_image(self.rgb, self.encoding, h)

    def publish_one(self):
        msg = self.message()
        self.sent[stamp_key(msg.header)] = time.monotonic()
        self.pub.publish(msg)
        return msg

    def _run(self) -> None:
        t0, n = time.monotonic(), 0
        while not self._stop.is_set():
            if self.hook is not None:
                self.hook(n)
            self.publish_one()
            n += 1
            self._stop.wait(max(0.0, t0 + n / self.rate - time.monotonic()))

    def start(self) -> "CameraStream":
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
