"""The ovseg_ros ROS 2 node: camera images in, label images out.

    ovseg_node --ros-args --params-file config/ovseg.yaml
    python -m ovseg_ros.node --ros-args -p engine:=proxyclip -r image:=/camera/image_raw

A lifecycle node: *configure* loads the model (the slow part), *activate*
starts processing, *deactivate* stops without unloading, *cleanup* unloads.
With ``autostart`` (default true) it configures and activates itself, so it
also works as a plain node. The engine is used only through the public API
(``load_segmenter`` / ``set_vocabulary`` / ``predict``), so any registered
engine (ProxyCLIP, FC-CLIP, ...) plugs in by the ``engine`` parameter.

Threading: subscription callbacks only store the newest frame (FrameBuffer);
one worker thread converts, segments and publishes. A vocabulary change swaps
one immutable reference inside the Segmenter, so the frame in flight finishes
with the old vocabulary and the next one uses the new one whole. Runtime
parameter changes are queued and applied by the worker between two frames.
"""
from __future__ import annotations

import faulthandler
import logging
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any, Dict, Optional

import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_srvs.srv import SetBool

from .config import SCHEMA, ConfigError, make_config
from .core.vocabulary import VocabularyError
from .ros import diagnostics as diag
from .ros import messages as build
from .ros.frames import FrameBuffer
from .ros.image_conv import (ImageConversionError, array_to_image, compressed_to_rgb,
                             image_to_rgb)
from .ros.params import declare_schema_parameters, read_schema_parameters
from .ros.qos import input_qos, latched_qos, output_qos
from .ros.stats import RateStats

NODE_NAME = "ovseg_node"
# Output topic names (relative, so a namespace moves them all). The camera_info
# re-stamped with each result gets its own name because `camera_info` is the input.
TOPICS = {"semantic": "semantic", "panoptic": "panoptic", "segments": "segments",
          "colored": "colored", "confidence": "confidence", "camera_info": "camera_info_out",
          "vocabulary": "vocabulary", "diagnostics": "/diagnostics"}
MAX_CAMERA_FRAMES = 16     # camera_info cache size (distinct frame_ids)
NO_IMAGE_WARN_AFTER = 5.0   # seconds without any frame after activation before we say so
# Process exit (SIGINT): how long the frame in flight and running callbacks may finish.
# Bounded so the node always exits within seconds (launch escalates to SIGTERM after 5 s).
EXIT_WORKER_TIMEOUT = 3.0
EXIT_CALLBACK_TIMEOUT = 1.0


class OvsegNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        declare_schema_parameters(self)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._problems = diag.ProblemLog(lambda text: self.get_logger().warning(text))
        self._segmenter = None
        self._cfg = None
        self._load_error: Optional[str] = None
        self._active = False
        self._enabled = True
        self._frames: Optional[FrameBuffer] = None
        self._worker: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._pending: Dict[str, Any] = {}
        self._pending_lock = threading.Lock()
        # latest camera_info per frame_id: with several cameras remapped onto one input,
        # each result is republished with the calibration of its own camera
        self._camera_infos: Dict[str, CameraInfo] = {}
        self._stats = RateStats()
        self._last_frame_time: Optional[float] = None
        self._activated_at: Optional[float] = None
        self._errors = 0
        self._subs = []
        self._pubs: Dict[str, Any] = {}
        self._srv_vocab = None
        self._vocab_group = MutuallyExclusiveCallbackGroup()
        self._input_group = MutuallyExclusiveCallbackGroup()
        # Diagnostics and `enable` exist in every lifecycle state, so a node that
        # failed to load its weights still says why on /diagnostics.
        self._diag_pub = self.create_publisher(diag.DiagnosticArray, TOPICS["diagnostics"], 10)
        self._diag_timer = self.create_timer(
            float(self.get_parameter("diagnostics_period").value), self._publish_diagnostics)
        self._srv_enable = self.create_service(SetBool, "enable", self._on_enable)

    # --- lifecycle ----------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        from . import load_segmenter

        values = read_schema_parameters(self)
        try:
            self._cfg = make_config(values)
            t0 = time.monotonic()
            self._segmenter = load_segmenter(self._cfg)
        except Exception as exc:  # ConfigError, WeightsError, VocabularyError, ...
            self._load_error = f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"configure failed, model not loaded: {self._load_error}")
            self._segmenter = None
            return TransitionCallbackReturn.FAILURE
        self._load_error = None
        info = self._segmenter.describe()
        self.get_logger().info(
            f"loaded engine {info.get('engine')} on {info.get('device')} "
            f"({info.get('backend')}, {info.get('precision')}) in {time.monotonic() - t0:.1f} s")
        if self._segmenter.random_weights:
            self.get_logger().warning(
                "running with RANDOM WEIGHTS (random_init: true): labels are meaningless; "
                "set random_init: false and provide pretrained weights for real output")
        self._create_interfaces()
        self._publish_vocabulary()
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        capacity = self._cfg["max_queue"] if self._cfg["process_every_frame"] else 1
        self._frames = FrameBuffer(capacity)
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name="ovseg_worker", daemon=True)
        self._worker.start()
        self._activated_at = time.monotonic()
        self._active = True
        self.get_logger().info(
            f"active: listening on {self._image_topic} "
            f"({self._cfg['image_reliability']}, depth {self._cfg['image_depth']})"
            + (f" and {self._image_topic}/compressed" if self._cfg["subscribe_compressed"] else "")
            + ("; process_every_frame (queue %d)" % capacity if capacity > 1 else
               "; latest frame only"))
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._stop_worker()
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_interfaces()
        self._segmenter = None
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._stop_worker()
        self._destroy_interfaces()
        self._segmenter = None
        return TransitionCallbackReturn.SUCCESS

    def _stop_worker(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._frames is not None:
            self._frames.close()
        if self._worker is not None:
            self._worker.join(timeout=timeout)   # daemon: a late frame never blocks the exit
            self._worker = None

    # --- topics and services ---------------------------------------------------------------
    def _create_interfaces(self) -> None:
        from ovseg_ros.msg import Segments, Vocabulary
        from ovseg_ros.srv import SetVocabulary

        cfg = self._cfg
        qos_in = input_qos(cfg["image_reliability"], cfg["image_depth"])
        events = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_qos)
        self._image_topic = self.resolve_topic_name("image")
        self._subs.append(self.create_subscription(
            Image, "image", lambda m: self._on_frame("image", m), qos_in,
            event_callbacks=events, callback_group=self._input_group))
        if cfg["subscribe_compressed"]:
            # image_transport's naming: <base topic>/compressed, following any remap of `image`
            self._subs.append(self.create_subscription(
                CompressedImage, self._image_topic + "/compressed",
                lambda m: self._on_frame("compressed", m), qos_in, event_callbacks=events,
                callback_group=self._input_group))
        # camera_info is tiny; best effort matches reliable and best-effort drivers alike
        self._subs.append(self.create_subscription(
            CameraInfo, "camera_info", self._on_camera_info, input_qos("best_effort", 5),
            callback_group=self._input_group))
        q = output_qos()
        self._pubs = {
            "semantic": self.create_publisher(Image, TOPICS["semantic"], q),
            "panoptic": self.create_publisher(Image, TOPICS["panoptic"], q),
            "colored": self.create_publisher(Image, TOPICS["colored"], q),
            "confidence": self.create_publisher(Image, TOPICS["confidence"], q),
            "segments": self.create_publisher(Segments, TOPICS["segments"], q),
            "camera_info": self.create_publisher(CameraInfo, TOPICS["camera_info"], q),
            "vocabulary": self.create_publisher(Vocabulary, TOPICS["vocabulary"], latched_qos()),
        }
        self._srv_vocab = self.create_service(SetVocabulary, "set_vocabulary",
                                              self._on_set_vocabulary,
                                              callback_group=self._vocab_group)

    def _destroy_interfaces(self) -> None:
        for s in self._subs:
            self.destroy_subscription(s)
        self._subs = []
        for p in self._pubs.values():
            self.destroy_publisher(p)
        self._pubs = {}
        if self._srv_vocab is not None:
            self.destroy_service(self._srv_vocab)
            self._srv_vocab = None

    def _on_incompatible_qos(self, info) -> None:
        self._problems.report(
            "qos", f"a publisher on {self._image_topic} has incompatible QoS (policy "
            f"{info.last_policy_kind}): nothing will arrive. Camera drivers usually publish "
            "best effort; keep image_reliability: best_effort (see docs/node.md)")

    # --- callbacks: store only ----------------------------------------------------------------
    def _on_frame(self, kind: str, msg) -> None:
        if not (self._active and self._enabled) or self._frames is None:
            return
        self._last_frame_time = time.monotonic()
        self._frames.put((kind, msg, self._last_frame_time))

    def _on_camera_info(self, msg: CameraInfo) -> None:
        infos = self._camera_infos
        if msg.header.frame_id not in infos and len(infos) >= MAX_CAMERA_FRAMES:
            infos.pop(next(iter(infos)))
        infos[msg.header.frame_id] = msg

    def _on_enable(self, req, resp):
        self._enabled = bool(req.data)
        if not self._enabled and self._frames is not None:
            self._frames.clear()
        resp.success = True
        resp.message = ("processing enabled" if self._enabled else "processing paused") + \
            ("" if self._active else " (node is not active: lifecycle state "
             f"{'unconfigured' if self._segmenter is None else 'inactive'})")
        self.get_logger().info(resp.message)
        return resp

    def _on_set_vocabulary(self, req, resp):
        seg = self._segmenter
        if seg is None:
            resp.success = False
            resp.message = "the node is not configured (model not loaded); nothing changed"
            return resp
        try:
            state = seg.set_vocabulary(list(req.classes), list(req.is_thing) or None)
        except VocabularyError as exc:
            return self._vocab_refused(resp, str(exc))
        except Exception as exc:   # e.g. the text encoder rejected a prompt
            return self._vocab_refused(resp, f"{type(exc).__name__}: {exc}")
        resp.success = True
        resp.version = int(state.version)
        resp.classes = build.class_infos(state)
        resp.message = (f"applied vocabulary v{state.version} with {state.num_classes} classes "
                        f"from the next frame on: {build.class_map_text(state.names)}")
        self.get_logger().info(resp.message)
        self._publish_vocabulary()
        return resp

    def _vocab_refused(self, resp, reason: str):
        state = self._segmenter.vocabulary
        resp.success = False
        resp.message = f"vocabulary rejected, nothing changed: {reason}"
        resp.version = int(state.version)
        resp.classes = build.class_infos(state)
        self._problems.report("vocabulary", resp.message)
        return resp

    def _on_set_parameters(self, params) -> SetParametersResult:
        changes = {}
        for p in params:
            spec = SCHEMA.get(p.name)
            if spec is None:
                continue   # use_sim_time and other ROS-owned parameters
            if not spec.runtime:
                return SetParametersResult(
                    successful=False, reason=f"'{p.name}' is read-only while running; set it in "
                    "the params file or on the command line and restart the node")
            try:
                changes[p.name] = spec.validate(p.value)
            except ConfigError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        engine_changes = {k: v for k, v in changes.items() if not SCHEMA[k].node_only}
        if engine_changes and self._cfg is not None:
            try:
                self._cfg.replace(**engine_changes)   # cross-field checks before accepting
            except ConfigError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        if engine_changes:
            with self._pending_lock:
                self._pending.update(engine_changes)
        return SetParametersResult(successful=True)

    # --- the worker ---------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            item = self._frames.get(timeout=0.2)
            if item is None:
                continue
            self._apply_pending()
            try:
                self._process(*item)
            except Exception as exc:   # keep running: report, then take the next frame
                if not self.context.ok():   # SIGINT shut ROS down under the frame in flight
                    break
                self._errors += 1
                self._problems.report("error", f"processing failed: {type(exc).__name__}: "
                                      f"{exc}\n{traceback.format_exc(limit=4)}")

    def _apply_pending(self) -> None:
        with self._pending_lock:
            changes, self._pending = self._pending, {}
        if changes and self._segmenter is not None:
            try:
                self._cfg = self._segmenter.update_config(**changes)
                self.get_logger().info(f"runtime settings applied: {changes}")
            except ConfigError as exc:
                self._problems.report("parameter", f"runtime settings not applied: {exc}")

    def _process(self, kind: str, msg, t_received: float) -> None:
        max_px = self._cfg["max_input_pixels"]
        try:
            rgb = image_to_rgb(msg, max_px) if kind == "image" else compressed_to_rgb(msg, max_px)
        except ImageConversionError as exc:
            topic = self._image_topic + ("/compressed" if kind == "compressed" else "")
            self._problems.report(f"input:{exc.code}", f"dropped a frame on {topic}: {exc}")
            return
        seg = self._segmenter
        t0 = time.monotonic()
        pred = seg.predict(rgb)
        t_inf = time.monotonic() - t0
        header = msg.header
        size = rgb.shape[:2]
        out = build.FrameOutputs(pred, size)
        sem, pan = build.label_images(out, header)
        pubs = self._pubs
        pubs["semantic"].publish(sem)
        pubs["panoptic"].publish(pan)
        pubs["segments"].publish(build.segments_msg(out, header))
        alpha = float(self.get_parameter("overlay_alpha").value)
        overlay = build.overlay_rgb(rgb, out.semantic, alpha, len(pred.vocabulary))
        if pred.random_weights:
            overlay = build.draw_banner(overlay, "RANDOM WEIGHTS - labels are meaningless")
        pubs["colored"].publish(array_to_image(overlay, "rgb8", header))
        if self.get_parameter("publish_confidence").value:
            pubs["confidence"].publish(build.confidence_image(out, header))
        info = self._camera_infos.get(header.frame_id)
        if info is not None:
            pubs["camera_info"].publish(build.camera_info_for(info, header))
        self._stats.record(time.monotonic() - t_received, t_inf)

    # --- vocabulary and diagnostics -------------------------------------------------------------
    def _publish_vocabulary(self) -> None:
        seg = self._segmenter
        pub = self._pubs.get("vocabulary")
        if seg is None or pub is None:
            return
        pub.publish(build.vocabulary_msg(seg.vocabulary, seg.describe().get("engine", ""),
                                         seg.random_weights, self.get_clock().now().to_msg()))

    def _publish_diagnostics(self) -> None:
        self._diag_pub.publish(diag.array_msg(self.get_clock().now().to_msg(),
                                              [self.diagnostic_status()]))

    def diagnostic_status(self):
        seg = self._segmenter
        snap = self._stats.snapshot()
        frames = self._frames
        values: Dict[str, Any] = {
            "state": "active" if self._active else ("inactive" if seg else "unconfigured"),
            "enabled": self._enabled,
            "fps": snap["fps"], "latency_ms": snap["latency_ms"],
            "latency_max_ms": snap["latency_max_ms"], "inference_ms": snap["inference_ms"],
            "frames_received": frames.received if frames is not None else 0,
            "frames_processed": self._stats.processed,
            "frames_dropped": frames.dropped if frames is not None else 0,
            "bad_inputs": self._problems.count_prefix("input:"),
            "vocabulary_rejected": self._problems.counts.get("vocabulary", 0),
            "errors": self._errors,
            "mode": "process_every_frame" if self._cfg and self._cfg["process_every_frame"]
            else "latest_frame",
        }
        if seg is not None:
            info = seg.describe()
            values.update({"engine": info.get("engine"), "backend": info.get("backend"),
                           "device": info.get("device"), "precision": info.get("precision"),
                           "weights": "RANDOM WEIGHTS" if seg.random_weights else "pretrained",
                           "vocabulary_version": seg.vocabulary.version,
                           "num_classes": seg.vocabulary.num_classes})
        level, message = diag.OK, "processing"
        recent = self._problems.recent(within=max(5.0, 2 * self._diag_timer.timer_period_ns / 1e9))
        if seg is None:
            level = diag.ERROR
            message = f"model not loaded: {self._load_error}" if self._load_error \
                else "unconfigured (call lifecycle configure, or set autostart: true)"
        elif not self._active:
            message = "inactive (lifecycle): model loaded, not processing"
        elif not self._enabled:
            message = "paused by the enable service"
        elif self._last_frame_time is None and \
                time.monotonic() - (self._activated_at or 0) > NO_IMAGE_WARN_AFTER:
            level = diag.WARN
            message = (f"no image received on {self._image_topic} yet "
                       f"({self.count_publishers(self._image_topic)} publishers): check the remap, "
                       "QoS (image_reliability) and FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA")
        if seg is not None and recent is not None and level == diag.OK:
            level, message = diag.WARN, f"recent problem ({recent[0]}): {recent[1]}"
        if seg is not None and seg.random_weights:
            level = max(level, diag.WARN)
            message = "RANDOM WEIGHTS (labels are meaningless); " + message
        values["last_problem"] = self._problems.last[2] if self._problems.last else ""
        return diag.status_msg(f"{self.get_name()}: segmentation",
                               self.get_fully_qualified_name(), level, message, values)


def main(args=None) -> int:
    """Run the node until SIGINT (or ROS shutdown); the process exit code is the result.

    Ends the process with os._exit, after the ROS-level cleanup, without deleting the
    DDS participant: with FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA, Fast DDS 3.2.2 can
    deadlock while deleting a participant (TCPChannelResourceBasic::disconnect waits for a
    mutex that a TCP reader thread holds while blocked in recv() on an idle connection;
    eProsima/Fast-DDS PR #6066). It did so in the test suite, inside Python's exit
    (garbage collection of the rcl node, holding the GIL, so nothing in Python could
    break out). The publishers, subscriptions and services are destroyed first, so peers
    see them go at once; the kernel closes the sockets when the process ends.
    """
    # `kill -USR1 <pid>` dumps every thread's stack to stderr (the node log): what the test
    # harness does before it SIGKILLs a node that did not stop, so a hang shows where it is
    if hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    code = 1
    try:
        code = _run(args)
    except BaseException:   # e.g. a second Ctrl-C during the cleanup: still exit, and say why
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
        executor = MultiThreadedExecutor(num_threads=3)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as exc:   # e.g. a params-file value of the wrong type
        print(f"ovseg_node: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    finally:
        if node is not None:
            node._active = False
            node._stop_worker(timeout=EXIT_WORKER_TIMEOUT)
        if executor is not None:
            # no new callbacks; running ones get a moment, and the pool threads are not
            # joined (os._exit ends them), so a callback that blocks cannot hold the exit
            executor.shutdown(timeout_sec=EXIT_CALLBACK_TIMEOUT, wait_for_threads=False)
        if node is not None:
            # The rcl node handle stays in use until os._exit, so rclpy defers its deletion
            # (and with it the DDS participant's, see main) past destroy_node, which still
            # destroys every publisher, subscription, service and timer: peers see them go
            # at once. Only the node name ages out of their graph, with the DDS lease (20 s).
            node.handle.__enter__()
            node.destroy_node()
        rclpy.try_shutdown()
    return code


def _exit_process(code: int) -> None:
    """Flush what was logged, then end the process without Python's finalisation."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):   # closed or broken pipe: nothing left to save
            pass
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
