"""``main()``: run the node until SIGINT (or ROS shutdown), then end the process.

The process ends with ``os._exit`` after the ROS-level cleanup, without deleting
the DDS participant. Why: with FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA, Fast DDS
3.2.2 can deadlock while deleting a participant (TCPChannelResourceBasic::disconnect
waits for a mutex that a TCP reader thread holds while blocked in recv() on an idle
connection; eProsima/Fast-DDS PR #6066). It did so in the test suite, inside
Python's exit (garbage collection of the rcl node, holding the GIL, so nothing in
Python could break out). The publishers, subscriptions and services are destroyed
first, so peers see them go at once; the kernel closes the sockets when the
process ends.
"""
from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import traceback

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn

from .lifecycle import OvsegNode

# How long the frame in flight and running callbacks may finish at the exit. Bounded so
# the node always exits within seconds (launch escalates to SIGTERM after 5 s).
EXIT_WORKER_TIMEOUT = 3.0
EXIT_CALLBACK_TIMEOUT = 1.0
# executor threads: inputs, set_vocabulary (may encode for seconds), locate (a cold query
# encodes for seconds), enable, and the default group (lifecycle and parameter services,
# diagnostics and stall timers)
EXECUTOR_THREADS = 5


def main(args=None) -> int:
    """The ``ovseg_node`` entry point; the process exit code is the result."""
    # `kill -USR1 <pid>` dumps every thread's stack to stderr (the node log): what the test
    # harness does before it SIGKILLs a node that did not stop, so a hang shows where it is
    if hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    code = 1
    try:
        code = _run(args)
    except BaseException:   # a bug in the cleanup itself: still exit, and say why
        traceback.print_exc()
    finally:
        _exit_process(code)
    return code   # not reached


def _run(args) -> int:
    rclpy.init(args=args)
    node = None
    executor = None
    code = 0
    try:
        node = OvsegNode()
        if node.get_parameter("autostart").value:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("autostart: configure failed (see the error above); "
                                        "exiting")
                return 1
            node.trigger_activate()
        executor = MultiThreadedExecutor(num_threads=EXECUTOR_THREADS)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as exc:   # e.g. a params-file value of the wrong type
        print(f"ovseg_node: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    finally:
        _ignore_further_interrupts()
        if node is not None:
            node._exiting = True
            node._active = False
            node._stop_worker(timeout=EXIT_WORKER_TIMEOUT)
        if executor is not None:
            # no new callbacks; running ones get a moment, and the pool threads are not
            # joined (os._exit ends them), so a callback that blocks cannot hold the exit
            executor.shutdown(timeout_sec=EXIT_CALLBACK_TIMEOUT, wait_for_threads=False)
        if node is not None:
            # The rcl node handle stays in use until os._exit, so rclpy defers its deletion
            # (and with it the DDS participant's, see the module doc) past destroy_node,
            # which still destroys every publisher, subscription, service and timer: peers
            # see them go at once. Only the node name ages out of their graph, with the DDS
            # lease (20 s).
            node.handle.__enter__()
            node.destroy_node()
        rclpy.try_shutdown()
    return code


def _ignore_further_interrupts() -> None:
    """From the start of the exit on, SIGINT and SIGTERM only say that the node is already
    stopping: terminals and ``ros2 launch`` signal the whole process group, so a second
    Ctrl-C (or launch's SIGTERM) often lands in the cleanup, where a KeyboardInterrupt
    would abort the worker join or destroy_service and turn a clean exit into exit code 1."""
    def note(signum, frame):
        try:
            os.write(2, b"ovseg_node: already shutting down\n")
        except OSError:
            pass
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, note)
        except (ValueError, OSError):   # not the main thread: nothing to protect there
            pass


def _exit_process(code: int) -> None:
    """Flush what was logged, then end the process without Python's finalisation."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):   # closed or broken pipe: nothing left to save
            pass
    os._exit(code)
