"""OvsegNode: parameters, lifecycle transitions, interfaces and services.

A lifecycle node: *configure* loads the model (the slow part) and creates the
topics, *activate* starts processing (and enables the lifecycle publishers),
*deactivate* stops without unloading, *cleanup* removes the topics and frees the
model. With ``autostart`` (default true) it configures and activates itself, so
it also works as a plain node. The engine is used only through the public API
(``load_segmenter`` / ``prepare_vocabulary`` / ``apply_vocabulary`` /
``predict_batch``), so any registered engine plugs in by the ``engine`` parameter.

Cameras: one loaded model serves every camera named by ``cameras``; camera
``c`` has its own relative topics (``c/image`` in, ``c/semantic`` ... out,
``camera.py``), one ``vocabulary`` topic and one ``set_vocabulary`` service serve
them all.

Threading: subscription callbacks only store frames; the worker thread
(``worker.py``) segments and publishes. ``set_vocabulary`` runs in its own
callback group: it encodes the new vocabulary while the worker keeps going with
the old one, swaps one reference (from the next batch on, for every camera),
and answers. ``locate`` (``locate.py``) runs in a callback group of its own too.
Runtime parameter changes are queued and applied by the worker between two batches.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import gc
import threading
import time
from typing import Any, Dict, Optional, Tuple

from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from std_srvs.srv import SetBool

from ..config import SCHEMA, ConfigError, make_config, parse_frame_size
from ..core.camera_outputs import CameraOutputs
from ..core.vocabulary import VocabularyError
from ..core.warmup import WarmupReport, warm_up
from ..ros import diagnostics as diag
from ..ros import messages as build
from ..ros.params import declare_schema_parameters, descriptor, read_schema_parameters
from ..ros.qos import latched_qos, service_qos
from ..runtime.cameras import PER_CAMERA_KEYS, validate_camera_names
from ..runtime import health
from ..runtime.frames import FrameQueues
from ..runtime.problems import ProblemLog
from .camera import Camera
from .locate import LocateService
from .worker import Worker

NODE_NAME = "ovseg_node"
VOCABULARY_TOPIC = "vocabulary"
DIAGNOSTICS_TOPIC = "/diagnostics"
NO_IMAGE_WARN_AFTER = 5.0   # seconds without any frame after activation before we say so


def _return_freed_heap() -> None:
    """Give the heap freed by the model back to the system: glibc keeps freed blocks in its
    arenas, so without a trim the process RSS barely drops after cleanup (docs/node.md,
    "Memory"). Other C libraries have no malloc_trim and return memory their own way."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)


def _reserved_camera_names() -> set:
    """Camera names that would clash with a setting or a config group as a parameter prefix."""
    return {name.split(".")[0] for name in SCHEMA} | {"qos_overrides", "use_sim_time"}


class OvsegNode(Worker, LocateService, LifecycleNode):
    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        declare_schema_parameters(self)
        # camera names are fixed for the node's life: they decide its topics and parameters
        self._camera_names = validate_camera_names(
            list(self.get_parameter("cameras").value or []), _reserved_camera_names())
        self._declare_camera_parameters()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._problems = ProblemLog(lambda text: self.get_logger().warning(text))
        self._segmenter = None
        self._cfg = None
        self._load_error: Optional[str] = None
        self._warmup: Optional[WarmupReport] = None    # configure's warm-up, None: none run
        self._active = False
        self._enabled = True
        self._exiting = False
        self._frames: Optional[FrameQueues] = None
        self._worker: Optional[threading.Thread] = None
        self._stop = threading.Event()
        self._pending: Dict[str, Any] = {}
        self._pending_lock = threading.Lock()
        self._cameras: Dict[str, Camera] = {}
        self._activated_at: Optional[float] = None
        self._errors = 0
        self._vocab_changes = 0
        self._batches = 0             # predict_batch calls
        self._batched_frames = 0      # frames that shared a call with another camera's
        self._vocab_pub = None
        self._srv_vocab = None
        self._embedding_space = ""     # SegmentEmbeddings.space of the loaded engine
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
        from .. import load_segmenter

        values = read_schema_parameters(self)
        try:
            self._cfg = make_config(values)
            settings = {c: self._camera_settings(c) for c in self._camera_names}
            # checked against the input limits before the (slow) load
            warmup_size = parse_frame_size(self._cfg["warmup_size"], "warmup_size",
                                           max_side=self._cfg["max_input_side"],
                                           max_pixels=self._cfg["max_input_pixels"])
            t0 = time.monotonic()
            self._segmenter = load_segmenter(self._cfg)
            load_s = time.monotonic() - t0
            self._warmup = self._warm_up(warmup_size)
        except Exception as exc:  # ConfigError, WeightsError, VocabularyError, ...
            self._load_error = f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"configure failed, model not loaded: {self._load_error}")
            self._segmenter = None
            self._warmup = None
            gc.collect()   # what a half-built model left behind
            return TransitionCallbackReturn.FAILURE
        self._load_error = None
        info = self._segmenter.describe()
        self.get_logger().info(
            f"loaded engine {info.get('engine')} on {info.get('device')} "
            f"({info.get('backend')}, {info.get('precision')}) in {load_s:.1f} s")
        if self._warmup is not None:
            self.get_logger().info(self._warmup.describe())
        if self._segmenter.random_weights:
            self.get_logger().warning(
                "running with RANDOM WEIGHTS (random_init: true): labels are meaningless; "
                "set random_init: false and provide pretrained weights for real output")
        timeout = float(self._cfg["input_timeout"])
        slop = float(self._cfg["depth_slop"])
        self._cameras = {c: Camera(c, settings[c], timeout, depth_slop=slop)
                         for c in self._camera_names}
        alpha = float(self.get_parameter("overlay_alpha").value)
        for cam in self._cameras.values():
            # with a tracker when tracking.enabled (core/camera_outputs.py)
            cam.outputs = CameraOutputs.from_config(cam.name, self._cfg, overlay_alpha=alpha,
                                                    cloud_stride=int(self._cfg["cloud_stride"]))
        self._embedding_space = (self._segmenter.embedding_space()
                                 if self._cfg["embeddings.enabled"] else "")
        self._create_interfaces()
        self._publish_vocabulary(self._segmenter.vocabulary)
        return TransitionCallbackReturn.SUCCESS

    def _warm_up(self, size: Optional[Tuple[int, int]]) -> Optional[WarmupReport]:
        """One prediction at ``warmup_size`` before any frame (core/warmup.py): with
        torch_compile the image path compiles here, not on the first camera frame."""
        if size is None:
            return None
        try:
            return warm_up(self._segmenter, size, batch=len(self._camera_names))
        except Exception as exc:
            raise RuntimeError(f"the warm-up prediction at warmup_size {size[0]}x{size[1]} "
                               f"failed ({type(exc).__name__}: {exc}); set warmup_size: '' "
                               "to start without it") from exc

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        # the lifecycle publishers first: the worker's first frame must find them enabled
        result = super().on_activate(state)
        if result != TransitionCallbackReturn.SUCCESS:
            return result
        capacity = self._cfg["max_queue"] if self._cfg["process_every_frame"] else 1
        self._frames = FrameQueues(self._camera_names, capacity)
        for cam in self._cameras.values():
            cam.stall.reset()
        self._reset_tracks("activated", now=True)    # the worker is not running yet
        self._start_worker()
        self._activated_at = time.monotonic()
        self._active = True
        for cam in self._cameras.values():
            self.get_logger().info(
                f"active: camera {cam.label} on {cam.image_topic} ({cam.reliability}, depth "
                f"{cam.depth})" + (f" and {cam.image_topic}/compressed" if cam.compressed else "")
                + ("; process_every_frame (queue %d)" % capacity if capacity > 1 else
                   "; latest frame only")
                + (f"; depth on {cam.depth_topic}" if cam.depth_enabled else ""))
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._stop_worker()                  # no frame in flight: then disable the publishers
        self._reset_tracks("deactivated", now=True)
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_interfaces()
        self._free_model()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._active = False
        self._stop_worker()
        self._destroy_interfaces()
        self._free_model()
        return TransitionCallbackReturn.SUCCESS

    def _free_model(self) -> None:
        """Drop every reference to the Segmenter (and its torch modules): the cameras'
        latest frames hold predictions, the frame queues hold images; then collect, so the
        memory goes back before a new configure loads the next model (docs/node.md)."""
        self._segmenter = None
        self._warmup = None
        self._frames = None
        for cam in self._cameras.values():
            cam.outputs = None
        gc.collect()
        _return_freed_heap()

    # --- topics and services ---------------------------------------------------------------
    def _create_interfaces(self) -> None:
        from ovseg_ros.msg import Vocabulary
        from ovseg_ros.srv import SetVocabulary

        for cam in self._cameras.values():
            cam.create_interfaces(self, on_frame=self._on_frame,
                                  on_camera_info=lambda cam, msg: cam.store_camera_info(msg),
                                  on_incompatible_qos=self._on_incompatible_qos,
                                  group=self._input_group,
                                  embeddings=bool(self._cfg["embeddings.enabled"]))
        self._vocab_pub = self.create_publisher(Vocabulary, VOCABULARY_TOPIC, latched_qos())
        self._srv_vocab = self.create_service(SetVocabulary, "set_vocabulary",
                                              self._on_set_vocabulary, qos_profile=service_qos(),
                                              callback_group=self._vocab_group)
        self._create_locate_service()
        timeout = float(self._cfg["input_timeout"])
        if timeout > 0:
            # a stall is reported within a quarter of the timeout (at most 0.5 s late)
            self._stall_timer = self.create_timer(max(0.05, min(0.5, timeout / 4)),
                                                  self._check_stalls)

    def _destroy_interfaces(self) -> None:
        for cam in self._cameras.values():
            cam.destroy_interfaces(self)
        if self._vocab_pub is not None:
            self.destroy_publisher(self._vocab_pub)
            self._vocab_pub = None
        if self._srv_vocab is not None:
            self.destroy_service(self._srv_vocab)
            self._srv_vocab = None
        if self._stall_timer is not None:
            self.destroy_timer(self._stall_timer)
            self._stall_timer = None
        self._destroy_locate_service()

    def _on_incompatible_qos(self, cam: Camera, info) -> None:
        text = (f"a publisher on {cam.image_topic} has incompatible QoS (policy "
                f"{info.last_policy_kind}): nothing will arrive. Camera drivers usually publish "
                "best effort; keep image_reliability: best_effort (see docs/node.md)")
        cam.problem(text)
        self._problems.report(f"qos:{cam.name}", text)

    # --- callbacks: store only ----------------------------------------------------------------
    def _on_frame(self, cam: Camera, kind: str, msg) -> None:
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

    def _check_stalls(self) -> None:
        if not (self._active and self._enabled):
            return
        now = time.monotonic()
        for cam in self._cameras.values():
            silence = cam.stall.check(now)
            if silence is not None:
                # objects seen before the stall may have moved: their ids start afresh
                if cam.outputs is not None:
                    cam.outputs.request_reset(f"input stalled for {silence:.1f} s")
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
            self._reset_tracks("paused by the enable service")
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

    def _no_image_yet(self, cam: Camera) -> bool:
        return (self._active and self._enabled and cam.last_frame_time is None
                and time.monotonic() - (self._activated_at or 0) > NO_IMAGE_WARN_AFTER)

    def _camera_facts(self, cam: Camera, now: float) -> health.CameraFacts:
        frames = self._frames
        waiting = self._no_image_yet(cam)
        outputs = cam.outputs
        tracked = outputs is not None and outputs.tracker is not None
        stalled_since = cam.stall.stalled_since if cam.stall.stalled else None
        return health.CameraFacts(
            label=cam.label, topic=cam.image_topic, rates=cam.stats.snapshot(),
            processed=cam.stats.processed,
            received=frames.received[cam.name] if frames is not None else 0,
            dropped=frames.dropped[cam.name] if frames is not None else 0,
            bad_inputs=cam.bad_inputs, errors=cam.errors,
            frames_clamped=cam.frames_clamped, frames_refused=cam.frames_refused,
            stalled_for=None if stalled_since is None else now - stalled_since,
            stall_timeout=cam.stall.timeout,
            last_frame_age=(now - cam.last_frame_time) if cam.last_frame_time else -1.0,
            waiting=waiting,
            publishers=self.count_publishers(cam.image_topic) if waiting else 0,
            settings={"image_reliability": cam.reliability, "image_depth": cam.depth,
                      "subscribe_compressed": cam.compressed,
                      "depth_enabled": cam.depth_enabled},
            depth=cam.depth_facts(),
            outputs_published=cam.outputs_published,
            last_problem=(now - cam.last_problem[0], cam.last_problem[1])
            if cam.last_problem else None,
            tracks=outputs.live_tracks if tracked else None,
            track_resets=outputs.track_resets if tracked else 0)

    def _node_facts(self) -> health.NodeFacts:
        seg = self._segmenter
        model: Dict[str, Any] = {}
        if seg is not None:
            info = seg.describe()
            model = {"engine": info.get("engine"), "backend": info.get("backend"),
                     "device": info.get("device"), "precision": info.get("precision"),
                     # which stages run in that precision (the rest stay fp32)
                     "stage_precision": ", ".join(
                         f"{k}={v}" for k, v in info.get("stage_precision", {}).items()),
                     "vocabulary_version": seg.vocabulary.version,
                     "num_classes": seg.vocabulary.num_classes}
        problems = self._problems
        return health.NodeFacts(
            active=self._active, enabled=self._enabled, loaded=seg is not None,
            load_error=self._load_error, model=model,
            warmup=dataclasses.asdict(self._warmup) if self._warmup is not None else {},
            random_weights=bool(seg is not None and seg.random_weights),
            counters={"bad_inputs": problems.count_prefix("input:"),
                      "vocabulary_rejected": problems.counts.get("vocabulary", 0),
                      "vocabulary_changes": self._vocab_changes, "errors": self._errors,
                      "batches": self._batches, "frames_batched": self._batched_frames,
                      "locate_answered": self._locate_answered,
                      "locate_refused": self._locate_refused},
            mode="process_every_frame" if self._cfg and self._cfg["process_every_frame"]
            else "latest_frame",
            recent_problem=problems.recent(within=self._recent_within()),
            last_problem=problems.last[2] if problems.last else "",
            embeddings=bool(self._cfg and self._cfg["embeddings.enabled"]),
            tracking=bool(self._cfg and self._cfg["tracking.enabled"]))

    def camera_status(self, cam: Camera):
        """One DiagnosticStatus per camera (the policy: runtime/health.py)."""
        result = health.camera_health(self._camera_facts(cam, time.monotonic()),
                                      active=self._active, recent_within=self._recent_within())
        return diag.status_msg(f"{self.get_name()}: camera {cam.label}",
                               self.get_fully_qualified_name(), result)

    def diagnostic_status(self):
        """The node's DiagnosticStatus (the policy: runtime/health.py)."""
        now = time.monotonic()
        result = health.node_health(self._node_facts(),
                                    [self._camera_facts(c, now) for c in self._cameras.values()])
        return diag.status_msg(f"{self.get_name()}: segmentation",
                               self.get_fully_qualified_name(), result)
