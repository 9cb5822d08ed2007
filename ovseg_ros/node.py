"""The ovseg_ros ROS 2 node: camera images in, label images out.

    ovseg_node --ros-args --params-file config/ovseg.yaml
    python -m ovseg_ros.node --ros-args -p engine:=proxyclip -r image:=/camera/image_raw
    python -m ovseg_ros.node --ros-args -p "cameras:=[front, left]"

A lifecycle node: *configure* loads the model (the slow part), *activate*
starts processing, *deactivate* stops without unloading, *cleanup* unloads.
With ``autostart`` (default true) it configures and activates itself, so it
also works as a plain node. The engine is used only through the public API
(``load_segmenter`` / ``prepare_vocabulary`` / ``apply_vocabulary`` /
``predict_batch``), so any registered engine plugs in by the ``engine`` parameter.

Cameras: one loaded model serves every camera named by ``cameras``; camera
``c`` has its own relative topics (``c/image`` in, ``c/semantic`` ... out), one
``vocabulary`` topic and one ``set_vocabulary`` service serve them all.

Threading: subscription callbacks only store the newest frame of their camera
(FrameQueues); one worker thread takes the waiting frame of every camera
(round robin), converts them, runs them through ``predict_batch`` (one
vocabulary version per batch) and publishes. ``set_vocabulary`` runs in its own
callback group: it encodes the new vocabulary while the worker keeps going with
the old one, swaps one reference (from the next batch on, for every camera),
and answers. Runtime parameter changes are queued and applied by the worker
between two batches.
"""
from __future__ import annotations

import dataclasses
import faulthandler
import logging
import os
import signal
import sys
import threading
import time
import traceback
from typing import Any, Dict, List, Optional

import rclpy
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_srvs.srv import SetBool

from .config import SCHEMA, ConfigError, make_config
from .core.products import build_products
from .core.vocabulary import VocabularyError
from .ros import diagnostics as diag
from .ros import messages as build
from .ros.image_conv import ImageConversionError, compressed_to_rgb, image_to_rgb
from .ros.params import declare_schema_parameters, descriptor, read_schema_parameters
from .ros.qos import input_qos, latched_qos, output_qos, service_qos
from .runtime.cameras import (PER_CAMERA_KEYS, StallWatch, camera_label, topic_prefix,
                              validate_camera_names)
from .runtime.frames import FrameQueues
from .runtime.stats import RateStats

NODE_NAME = "ovseg_node"
# Output topic names, relative to the camera's prefix (so a namespace moves them all). The
# camera_info re-stamped with each result gets its own name because `camera_info` is the input.
TOPICS = {"semantic": "semantic", "panoptic": "panoptic", "segments": "segments",
          "colored": "colored", "confidence": "confidence", "camera_info": "camera_info_out"}
VOCABULARY_TOPIC = "vocabulary"
DIAGNOSTICS_TOPIC = "/diagnostics"
MAX_CAMERA_FRAMES = 16     # camera_info cache size per camera (distinct frame_ids)
NO_IMAGE_WARN_AFTER = 5.0   # seconds without any frame after activation before we say so
# Process exit (SIGINT): how long the frame in flight and running callbacks may finish.
# Bounded so the node always exits within seconds (launch escalates to SIGTERM after 5 s).
EXIT_WORKER_TIMEOUT = 3.0
EXIT_CALLBACK_TIMEOUT = 1.0
# executor threads: inputs, set_vocabulary (may encode for seconds), enable, and the
# default group (lifecycle and parameter services, diagnostics and stall timers)
EXECUTOR_THREADS = 4


def _reserved_camera_names() -> set:
    """Camera names that would clash with a setting or a config group as a parameter prefix."""
    return {name.split(".")[0] for name in SCHEMA} | {"qos_overrides", "use_sim_time"}


class _Camera:
    """One camera's topics, settings, counters and stall watch."""

    def __init__(self, name: str, settings: Dict[str, Any], input_timeout: float):
        self.name = name
        self.prefix = topic_prefix(name)
        self.label = camera_label(name)
        self.reliability = settings["image_reliability"]
        self.depth = settings["image_depth"]
        self.compressed = settings["subscribe_compressed"]
        self.image_topic = ""
        self.stats = RateStats()
        self.stall = StallWatch(input_timeout)
        self.camera_infos: Dict[str, CameraInfo] = {}
        self.pubs: Dict[str, Any] = {}
        self.subs: List[Any] = []
        self.last_frame_time: Optional[float] = None
        self.bad_inputs = 0
        self.errors = 0
        #: the outputs built and published for the last frame (those with subscribers)
        self.outputs_published = ""
        self.last_problem: Optional[tuple] = None    # (monotonic time, text)

    def problem(self, text: str) -> None:
        self.last_problem = (time.monotonic(), text)


class OvsegNode(LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        declare_schema_parameters(self)
        # camera names are fixed for the node's life: they decide its topics and parameters
        self._camera_names = validate_camera_names(
            list(self.get_parameter("cameras").value or []), _reserved_camera_names())
        self._declare_camera_parameters()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._problems = diag.ProblemLog(lambda text: self.get_logger().warning(text))
        self._segmenter = None
        self._cfg = None
        self._load_error: Optional[str] = None
        self._active = False
        self._enabled = True
        self._exiting = False
        self._frames: Optional[FrameQueues] = None
        self._worker: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._pending: Dict[str, Any] = {}
        self._pending_lock = threading.Lock()
        self._cameras: Dict[str, _Camera] = {}
        self._activated_at: Optional[float] = None
        self._errors = 0
        self._vocab_changes = 0
        self._batches = 0             # predict_batch calls
        self._batched_frames = 0      # frames that shared a call with another camera's
        self._vocab_pub = None
        self._srv_vocab = None
        self._stall_timer = None
        self._vocab_group = MutuallyExclusiveCallbackGroup()
        self._input_group = MutuallyExclusiveCallbackGroup()
        self._enable_group = MutuallyExclusiveCallbackGroup()
        # Diagnostics and `enable` exist in every lifecycle state, so a node that
        # failed to load its weights still says why on /diagnostics.
        self._diag_pub = self.create_publisher(diag.DiagnosticArray, DIAGNOSTICS_TOPIC, 10)
        self._diag_timer = self.create_timer(
            float(self.get_parameter("diagnostics_period").value), self._publish_diagnostics)
        self._srv_enable = self.create_service(SetBool, "enable", self._on_enable,
                                               qos_profile=service_qos(),
                                               callback_group=self._enable_group)

    def _declare_camera_parameters(self) -> None:
        """<camera>.image_reliability / image_depth / subscribe_compressed for every named
        camera, defaulting to the node-wide setting (the unnamed camera uses that one)."""
        for cam in self._camera_names:
            if not cam:
                continue
            for key in PER_CAMERA_KEYS:
                spec = dataclasses.replace(
                    SCHEMA[key], name=f"{cam}.{key}",
                    description=f"Camera '{cam}': {SCHEMA[key].description} "
                                f"(default: the node-wide '{key}').")
                default = self.get_parameter(key).value
                try:
                    self.declare_parameter(spec.name, default, descriptor(spec))
                except Exception as exc:   # wrong type in the params file
                    raise ConfigError(f"parameter '{spec.name}' ({spec.kind}): {exc}") from exc

    def _camera_settings(self, cam: str) -> Dict[str, Any]:
        out = {}
        for key in PER_CAMERA_KEYS:
            name = f"{cam}.{key}" if cam else key
            try:
                out[key] = SCHEMA[key].validate(self.get_parameter(name).value)
            except ConfigError as exc:
                raise ConfigError(f"parameter '{name}': {exc}") from exc
        return out

    # --- lifecycle ----------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        from . import load_segmenter

        values = read_schema_parameters(self)
        try:
            self._cfg = make_config(values)
            settings = {c: self._camera_settings(c) for c in self._camera_names}
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
        timeout = float(self._cfg["input_timeout"])
        self._cameras = {c: _Camera(c, settings[c], timeout) for c in self._camera_names}
        self._create_interfaces()
        self._publish_vocabulary(self._segmenter.vocabulary)
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        capacity = self._cfg["max_queue"] if self._cfg["process_every_frame"] else 1
        self._frames = FrameQueues(self._camera_names, capacity)
        for cam in self._cameras.values():
            cam.stall.reset()
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name="ovseg_worker", daemon=True)
        self._worker.start()
        self._activated_at = time.monotonic()
        self._active = True
        for cam in self._cameras.values():
            self.get_logger().info(
                f"active: camera {cam.label} on {cam.image_topic} ({cam.reliability}, depth "
                f"{cam.depth})" + (f" and {cam.image_topic}/compressed" if cam.compressed else "")
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

        q = output_qos()
        for cam in self._cameras.values():
            p = cam.prefix
            qos_in = input_qos(cam.reliability, cam.depth)
            events = SubscriptionEventCallbacks(
                incompatible_qos=lambda info, cam=cam: self._on_incompatible_qos(cam, info))
            cam.image_topic = self.resolve_topic_name(p + "image")
            cam.subs.append(self.create_subscription(
                Image, p + "image", lambda m, cam=cam: self._on_frame(cam, "image", m), qos_in,
                event_callbacks=events, callback_group=self._input_group))
            if cam.compressed:
                # image_transport's naming: <base topic>/compressed, following any remap
                cam.subs.append(self.create_subscription(
                    CompressedImage, cam.image_topic + "/compressed",
                    lambda m, cam=cam: self._on_frame(cam, "compressed", m), qos_in,
                    event_callbacks=events, callback_group=self._input_group))
            # camera_info is tiny; best effort matches reliable and best-effort drivers alike
            cam.subs.append(self.create_subscription(
                CameraInfo, p + "camera_info", lambda m, cam=cam: self._on_camera_info(cam, m),
                input_qos("best_effort", 5), callback_group=self._input_group))
            cam.pubs = {
                "semantic": self.create_publisher(Image, p + TOPICS["semantic"], q),
                "panoptic": self.create_publisher(Image, p + TOPICS["panoptic"], q),
                "colored": self.create_publisher(Image, p + TOPICS["colored"], q),
                "confidence": self.create_publisher(Image, p + TOPICS["confidence"], q),
                "segments": self.create_publisher(Segments, p + TOPICS["segments"], q),
                "camera_info": self.create_publisher(CameraInfo, p + TOPICS["camera_info"], q),
            }
        self._vocab_pub = self.create_publisher(Vocabulary, VOCABULARY_TOPIC, latched_qos())
        self._srv_vocab = self.create_service(SetVocabulary, "set_vocabulary",
                                              self._on_set_vocabulary, qos_profile=service_qos(),
                                              callback_group=self._vocab_group)
        timeout = float(self._cfg["input_timeout"])
        if timeout > 0:
            # a stall is reported within a quarter of the timeout (at most 0.5 s late)
            self._stall_timer = self.create_timer(max(0.05, min(0.5, timeout / 4)),
                                                  self._check_stalls)

    def _destroy_interfaces(self) -> None:
        for cam in self._cameras.values():
            for s in cam.subs:
                self.destroy_subscription(s)
            cam.subs = []
            for p in cam.pubs.values():
                self.destroy_publisher(p)
            cam.pubs = {}
        if self._vocab_pub is not None:
            self.destroy_publisher(self._vocab_pub)
            self._vocab_pub = None
        if self._srv_vocab is not None:
            self.destroy_service(self._srv_vocab)
            self._srv_vocab = None
        if self._stall_timer is not None:
            self.destroy_timer(self._stall_timer)
            self._stall_timer = None

    def _on_incompatible_qos(self, cam: _Camera, info) -> None:
        text = (f"a publisher on {cam.image_topic} has incompatible QoS (policy "
                f"{info.last_policy_kind}): nothing will arrive. Camera drivers usually publish "
                "best effort; keep image_reliability: best_effort (see docs/node.md)")
        cam.problem(text)
        self._problems.report(f"qos:{cam.name}", text)

    # --- callbacks: store only ----------------------------------------------------------------
    def _on_frame(self, cam: _Camera, kind: str, msg) -> None:
        frames = self._frames
        if not (self._active and self._enabled) or frames is None:
            return
        now = time.monotonic()
        gap = cam.stall.frame(now)
        if gap is not None:
            self.get_logger().info(f"camera {cam.label}: frames on {cam.image_topic} again "
                                   f"after {gap:.1f} s without any")
        cam.last_frame_time = now
        if not frames.put(cam.name, (kind, msg, now)):
            cam.stats.record_drop(now)

    def _on_camera_info(self, cam: _Camera, msg: CameraInfo) -> None:
        infos = cam.camera_infos
        if msg.header.frame_id not in infos and len(infos) >= MAX_CAMERA_FRAMES:
            infos.pop(next(iter(infos)))
        infos[msg.header.frame_id] = msg

    def _check_stalls(self) -> None:
        if not (self._active and self._enabled):
            return
        now = time.monotonic()
        for cam in self._cameras.values():
            silence = cam.stall.check(now)
            if silence is not None:
                self.get_logger().warning(
                    f"camera {cam.label}: input stalled, no frame on {cam.image_topic} for "
                    f"{silence:.1f} s (input_timeout {cam.stall.timeout:g} s); its outputs stop "
                    f"until frames return ({self.count_publishers(cam.image_topic)} publishers)")

    def _on_enable(self, req, resp):
        self._enabled = bool(req.data)
        if not self._enabled:
            if self._frames is not None:
                self._frames.clear()
            for cam in self._cameras.values():
                cam.stall.reset()    # paused: silence is expected, not a stall
        resp.success = True
        resp.message = ("processing enabled" if self._enabled else "processing paused") + \
            ("" if self._active else " (node is not active: lifecycle state "
             f"{'unconfigured' if self._segmenter is None else 'inactive'})")
        self.get_logger().info(resp.message)
        return resp

    def _on_set_vocabulary(self, req, resp):
        """Encode on this callback group's thread while the worker keeps predicting with the
        old vocabulary; swap; answer. Requests are served one at a time, in arrival order
        (versions follow that order); the others wait in the keep-all request queue."""
        t0 = time.monotonic()
        seg = self._segmenter
        if seg is None:
            resp.success = False
            resp.message = "the node is not configured (model not loaded); nothing changed"
            self.get_logger().warning(f"set_vocabulary: {resp.message}")
            return resp
        try:
            pending = seg.prepare_vocabulary(list(req.classes), list(req.is_thing) or None)
        except VocabularyError as exc:
            return self._vocab_refused(seg, resp, str(exc))
        except Exception as exc:   # e.g. the text encoder rejected a prompt
            return self._vocab_refused(seg, resp, f"{type(exc).__name__}: {exc}")
        if self._exiting:
            return self._vocab_refused(seg, resp, "the node is shutting down")
        state = seg.apply_vocabulary(pending)
        self._vocab_changes += 1
        self._publish_vocabulary(state)
        resp.success = True
        resp.version = int(state.version)
        resp.classes = build.class_infos(state)
        resp.message = (f"applied vocabulary v{state.version} with {state.num_classes} classes "
                        f"in {time.monotonic() - t0:.2f} s (text encoding "
                        f"{pending.encode_seconds:.2f} s), from the next frame of every camera "
                        f"on: {build.class_map_text(state.names)}")
        self.get_logger().info(resp.message)
        return resp

    def _vocab_refused(self, seg, resp, reason: str):
        state = seg.vocabulary
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
                continue   # use_sim_time, per-camera (read-only) and other ROS-owned parameters
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
            batch = self._frames.get_batch(timeout=0.2)
            if not batch:
                continue
            self._apply_pending()
            try:
                self._process_batch(batch)
            except Exception as exc:   # keep running: report, then take the next frames
                if not self.context.ok():   # SIGINT shut ROS down under the frames in flight
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

    def _convert(self, cam: _Camera, kind: str, msg):
        max_px = self._cfg["max_input_pixels"]
        try:
            return image_to_rgb(msg, max_px) if kind == "image" else compressed_to_rgb(msg, max_px)
        except ImageConversionError as exc:
            topic = cam.image_topic + ("/compressed" if kind == "compressed" else "")
            text = f"dropped a frame on {topic}: {exc}"
            cam.bad_inputs += 1
            cam.problem(text)
            self._problems.report(f"input:{exc.code}:{cam.name}", text)
            return None

    def _process_batch(self, batch) -> None:
        """Segment the waiting frame of each camera in one predict_batch call (one vocabulary
        version for all of them) and publish each camera's outputs on its own topics."""
        items = []
        for name, (kind, msg, t_received) in batch:
            cam = self._cameras[name]
            rgb = self._convert(cam, kind, msg)
            if rgb is not None:
                items.append((cam, msg, rgb, t_received))
        if not items:
            return
        seg = self._segmenter
        t0 = time.monotonic()
        try:
            preds = seg.predict_batch([it[2] for it in items])
        except Exception as exc:
            if not self.context.ok():
                raise
            if len(items) == 1:
                self._frame_failed(items[0][0], exc)
                return
            # one camera's frame must not cost the others theirs: one at a time
            preds = []
            for cam, _, rgb, _ in items:
                try:
                    preds.append(seg.predict(rgb))
                except Exception as exc1:
                    if not self.context.ok():
                        raise
                    self._frame_failed(cam, exc1)
                    preds.append(None)
        t_inf = time.monotonic() - t0
        self._batches += 1
        if len(items) > 1:
            self._batched_frames += len(items)
        for (cam, msg, rgb, t_received), pred in zip(items, preds):
            if pred is not None:
                self._publish_outputs(cam, msg.header, rgb, pred)
                cam.stats.record(time.monotonic() - t_received, t_inf)

    def _frame_failed(self, cam: _Camera, exc: Exception) -> None:
        cam.errors += 1
        self._errors += 1
        text = (f"processing a frame of camera {cam.label} failed: {type(exc).__name__}: {exc}\n"
                f"{traceback.format_exc(limit=4)}")
        cam.problem(text)
        self._problems.report(f"error:{cam.name}", text)

    def _publish_outputs(self, cam: _Camera, header, rgb, pred) -> None:
        """One output path (ovseg_ros.core.products): what bag inference and ovseg-segment
        write is what the node publishes.

        Lazy, like image_proc: an output nobody subscribes to is neither built nor
        published (the colour overlay is the costliest product; every image is a copy
        per message), and the next frame after a subscriber appears has it."""
        wanted = {key for key in ("semantic", "panoptic", "segments", "colored", "confidence")
                  if cam.pubs[key].get_subscription_count() > 0}
        if not self.get_parameter("publish_confidence").value:
            wanted.discard("confidence")
        cam.outputs_published = ",".join(sorted(wanted))
        if wanted:
            products = build_products(
                pred, rgb, pred.vocabulary,
                overlay_alpha=float(self.get_parameter("overlay_alpha").value),
                random_weights=pred.random_weights, colored="colored" in wanted,
                confidence="confidence" in wanted)
            for key, msg in build.product_messages(products, header, wanted).items():
                cam.pubs[key].publish(msg)
        info = cam.camera_infos.get(header.frame_id)
        if info is not None:
            cam.pubs["camera_info"].publish(build.camera_info_for(info, header))

    # --- vocabulary and diagnostics -------------------------------------------------------------
    def _publish_vocabulary(self, state) -> None:
        seg = self._segmenter
        pub = self._vocab_pub
        if seg is None or pub is None:
            return
        pub.publish(build.vocabulary_msg(state, seg.describe().get("engine", ""),
                                         seg.random_weights, self.get_clock().now().to_msg()))

    def _publish_diagnostics(self) -> None:
        statuses = [self.diagnostic_status()] + [self.camera_status(c)
                                                 for c in self._cameras.values()]
        self._diag_pub.publish(diag.array_msg(self.get_clock().now().to_msg(), statuses))

    def _recent_within(self) -> float:
        return max(5.0, 2 * self._diag_timer.timer_period_ns / 1e9)

    def _no_image_yet(self, cam: _Camera) -> bool:
        return (self._active and self._enabled and cam.last_frame_time is None
                and time.monotonic() - (self._activated_at or 0) > NO_IMAGE_WARN_AFTER)

    def camera_status(self, cam: _Camera):
        """One DiagnosticStatus per camera: its rates, drops, bad inputs and stall state."""
        snap = cam.stats.snapshot()
        frames = self._frames
        now = time.monotonic()
        values: Dict[str, Any] = {
            "camera": cam.label, "topic": cam.image_topic,
            "fps": snap["fps"], "latency_ms": snap["latency_ms"],
            "latency_max_ms": snap["latency_max_ms"], "inference_ms": snap["inference_ms"],
            "frames_received": frames.received[cam.name] if frames is not None else 0,
            "frames_processed": cam.stats.processed,
            "frames_dropped": frames.dropped[cam.name] if frames is not None else 0,
            "drop_rate": snap["drop_rate"],
            "bad_inputs": cam.bad_inputs, "errors": cam.errors,
            "stalled": cam.stall.stalled,
            "last_frame_age_s": (now - cam.last_frame_time) if cam.last_frame_time else -1.0,
            "image_reliability": cam.reliability, "image_depth": cam.depth,
            "subscribe_compressed": cam.compressed,
            # lazy outputs: only those with subscribers are built (empty before a frame)
            "outputs_published": cam.outputs_published,
        }
        level, message = diag.OK, "processing" if self._active else "not active"
        if cam.stall.stalled:
            level = diag.WARN
            message = (f"input stalled: no frame on {cam.image_topic} for "
                       f"{now - cam.stall.stalled_since:.1f} s (input_timeout "
                       f"{cam.stall.timeout:g} s)")
        elif self._no_image_yet(cam):
            level = diag.WARN
            message = (f"no image received on {cam.image_topic} yet "
                       f"({self.count_publishers(cam.image_topic)} publishers)")
        elif cam.last_problem and now - cam.last_problem[0] <= self._recent_within():
            level, message = diag.WARN, f"recent problem: {cam.last_problem[1]}"
        values["last_problem"] = cam.last_problem[1] if cam.last_problem else ""
        return diag.status_msg(f"{self.get_name()}: camera {cam.label}",
                               self.get_fully_qualified_name(), level, message, values)

    def diagnostic_status(self):
        seg = self._segmenter
        cams = list(self._cameras.values())
        frames = self._frames
        done = [c.stats.snapshot() for c in cams]
        processed = sum(c.stats.processed for c in cams)
        values: Dict[str, Any] = {
            "state": "active" if self._active else ("inactive" if seg else "unconfigured"),
            "enabled": self._enabled,
            "cameras": len(self._camera_names),
            "fps": sum(s["fps"] for s in done),
            "latency_ms": (sum(s["latency_ms"] * c.stats.processed for s, c in zip(done, cams))
                           / processed) if processed else 0.0,
            "latency_max_ms": max([s["latency_max_ms"] for s in done], default=0.0),
            "inference_ms": max([s["inference_ms"] for s in done], default=0.0),
            "frames_received": frames.total_received if frames is not None else 0,
            "frames_processed": processed,
            "frames_dropped": frames.total_dropped if frames is not None else 0,
            "drop_rate": sum(s["drop_rate"] for s in done),
            "bad_inputs": self._problems.count_prefix("input:"),
            "vocabulary_rejected": self._problems.counts.get("vocabulary", 0),
            "vocabulary_changes": self._vocab_changes,
            "errors": self._errors,
            "batches": self._batches, "frames_batched": self._batched_frames,
            "stalled_cameras": ",".join(c.label for c in cams if c.stall.stalled),
            "mode": "process_every_frame" if self._cfg and self._cfg["process_every_frame"]
            else "latest_frame",
        }
        if seg is not None:
            info = seg.describe()
            values.update({"engine": info.get("engine"), "backend": info.get("backend"),
                           "device": info.get("device"), "precision": info.get("precision"),
                           # which stages run in that precision (the rest stay fp32)
                           "stage_precision": ", ".join(
                               f"{k}={v}" for k, v in info.get("stage_precision", {}).items()),
                           "weights": "RANDOM WEIGHTS" if seg.random_weights else "pretrained",
                           "vocabulary_version": seg.vocabulary.version,
                           "num_classes": seg.vocabulary.num_classes})
        level, message = diag.OK, "processing"
        recent = self._problems.recent(within=self._recent_within())
        stalled = [c for c in cams if c.stall.stalled]
        waiting = [c for c in cams if self._no_image_yet(c)]
        if seg is None:
            level = diag.ERROR
            message = f"model not loaded: {self._load_error}" if self._load_error \
                else "unconfigured (call lifecycle configure, or set autostart: true)"
        elif not self._active:
            message = "inactive (lifecycle): model loaded, not processing"
        elif not self._enabled:
            message = "paused by the enable service"
        elif stalled:
            level = diag.WARN
            message = "input stalled: " + ", ".join(
                f"{c.image_topic} (camera {c.label})" for c in stalled)
        elif waiting:
            level = diag.WARN
            message = ("no image received on " + ", ".join(
                f"{c.image_topic} ({self.count_publishers(c.image_topic)} publishers)"
                for c in waiting) + " yet: check the remap, QoS (image_reliability) and "
                "FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA")
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
    except BaseException:   # a bug in the cleanup itself: still exit, and say why
        traceback.print_exc()
    finally:
        _exit_process(code)
    return code   # not reached


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
