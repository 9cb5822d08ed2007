"""The node's worker thread: take the waiting frames, convert, ``predict_batch``, publish.

Subscription callbacks only store the newest frame of their camera (FrameQueues);
this thread takes the waiting frame of every camera (round robin), converts them,
runs them through ``predict_batch`` (one vocabulary version per batch), hands each
result to its camera's output path (``core/camera_outputs.py``) and publishes.
Runtime parameter changes are queued by the parameter callback and applied here,
between two batches.

``Worker`` is a mixin of ``OvsegNode`` (``lifecycle.py``): it reads the node's
segmenter, frame queues, cameras and problem log, which the lifecycle creates.
"""
from __future__ import annotations

import threading
import time
import traceback

from ..config import ConfigError
from ..core.depth import DepthError
from ..core.products import WITHOUT_CONFIDENCE, needs_confidence
from ..segmenter import InputLimitError
from ..ros import messages as build
from ..ros.messages_3d import KEYS_3D, messages_3d
from ..ros.image_conv import ImageConversionError, compressed_to_rgb, image_to_rgb
from .camera import Camera


class Worker:
    def _start_worker(self) -> None:
        self._stop.clear()
        self._worker = threading.Thread(target=self._work, name="ovseg_worker", daemon=True)
        self._worker.start()

    def _stop_worker(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._frames is not None:
            self._frames.close()
        if self._worker is not None:
            self._worker.join(timeout=timeout)   # daemon: a late frame never blocks the exit
            self._worker = None

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

    def _convert(self, cam: Camera, kind: str, msg):
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
        t_taken = time.monotonic()
        items = []
        for name, (kind, msg, t_received) in batch:
            cam = self._cameras[name]
            t_dec = time.monotonic()
            rgb = self._convert(cam, kind, msg)
            if rgb is not None:
                # stages timed for the diagnostics: where the latency goes besides the model
                stages = {"wait": t_taken - t_received, "decode": time.monotonic() - t_dec}
                items.append((cam, msg, rgb, t_received, stages))
        if not items:
            return
        seg = self._segmenter
        # the confidence costs every synonym at every pixel (ProxyCLIP): asked for only
        # when an output, the tracker or locate of one of these cameras uses it
        confidence = any(needs_confidence(self._wanted(cam),
                                          tracking=cam.outputs is not None
                                          and cam.outputs.tracker is not None,
                                          embeddings=seg.engine.embeddings_enabled)
                         for cam, *_ in items)
        t0 = time.monotonic()
        try:
            preds = seg.predict_batch([it[2] for it in items], confidence=confidence)
        except Exception as exc:
            if not self.context.ok():
                raise
            if len(items) == 1:
                self._frame_failed(items[0][0], exc)
                return
            # one camera's frame must not cost the others theirs: one at a time
            preds = []
            for cam, _, rgb, _, _ in items:
                try:
                    preds.append(seg.predict(rgb, confidence=confidence))
                except Exception as exc1:
                    if not self.context.ok():
                        raise
                    self._frame_failed(cam, exc1)
                    preds.append(None)
        t_inf = time.monotonic() - t0
        self._batches += 1
        if len(items) > 1:
            self._batched_frames += len(items)
        for (cam, msg, rgb, t_received, stages), pred in zip(items, preds):
            if pred is not None:
                if pred.clamped:
                    self._frame_clamped(cam, pred)
                stages.update(self._publish_outputs(cam, msg.header, rgb, pred))
                cam.stats.record(time.monotonic() - t_received, t_inf, stages=stages)

    def _frame_clamped(self, cam: Camera, pred) -> None:
        """A frame the engine scaled below its nominal size to keep the work bounded (an
        elongated or huge frame, usually a driver problem): processed, counted, logged."""
        cam.frames_clamped += 1
        text = f"camera {cam.label}: {pred.notes[0]}"
        cam.problem(text)
        self._problems.report(f"clamp:{cam.name}", text)

    def _frame_failed(self, cam: Camera, exc: Exception) -> None:
        if isinstance(exc, InputLimitError):
            # refused before any work (max_input_pixels / max_input_side): the message names
            # the shape, the setting and the limit; no traceback, it is not a bug
            cam.frames_refused += 1
            text = f"camera {cam.label}: frame refused: {exc}"
            cam.problem(text)
            self._problems.report(f"refused:{cam.name}", text)
            return
        cam.errors += 1
        self._errors += 1
        text = (f"processing a frame of camera {cam.label} failed: {type(exc).__name__}: {exc}\n"
                f"{traceback.format_exc(limit=4)}")
        cam.problem(text)
        self._problems.report(f"error:{cam.name}", text)

    def _publish_outputs(self, cam: Camera, header, rgb, pred) -> dict:
        """One output path (``ovseg_ros.core.camera_outputs``): what bag inference and
        ovseg-segment write is what the node publishes. Returns the seconds spent building
        the outputs (products and messages) and publishing them.

        Lazy, like image_proc: an output nobody subscribes to is neither built nor
        published (the colour overlay is the costliest product; every image is a copy
        per message), and the next frame after a subscriber appears has it."""
        t_start = time.monotonic()
        t_publish = 0.0
        wanted = self._wanted(cam)
        if pred.confidence is None:
            # predicted without it (no subscriber then): what needs it waits for the next
            # frame, which has it
            wanted &= WITHOUT_CONFIDENCE
        cam.outputs_published = ",".join(sorted(wanted))
        depth = self._paired_depth(cam, header, rgb, wanted)
        # the tracker sees every frame, and locate searches the latest, subscribers or not
        if wanted or cam.outputs.tracker is not None or pred.embeddings is not None:
            cam.outputs.overlay_alpha = float(self.get_parameter("overlay_alpha").value)
            products = cam.outputs.process(pred, rgb, header.stamp, wanted=wanted, depth=depth,
                                           frame_id=header.frame_id)
            t_publish += _publish(cam, build.product_messages(products, header, wanted,
                                                              space=self._embedding_space))
            if depth is not None:
                life = float(self.get_parameter("marker_lifetime").value)
                t_publish += _publish(cam, messages_3d(products, header, wanted, cam.markers,
                                                       depth.stamp, life))
        info = cam.camera_infos.get(header.frame_id)
        if info is not None:
            t_publish += _publish(cam, {"camera_info": build.camera_info_for(info, header)})
        return {"outputs": time.monotonic() - t_start - t_publish, "publish": t_publish}

    def _wanted(self, cam: Camera) -> set:
        """The camera's outputs with subscribers (``confidence`` only while
        publish_confidence is on)."""
        wanted = {key for key, pub in cam.pubs.items()
                  if key != "camera_info" and pub.get_subscription_count() > 0}
        if not self.get_parameter("publish_confidence").value:
            wanted.discard("confidence")
        return wanted

    def _paired_depth(self, cam: Camera, header, rgb, wanted):
        """The camera's depth frame for this colour frame, or None: no depth topic, no
        partner (counted by the pairing, with its reason), or refused (a DepthError, logged
        rate-limited per camera and code). Every colour frame is matched, 3D wanted or not,
        so the pairing's counts and queue follow the stream; decoding only when a 3D output
        is wanted or the tracker / locate use the segments' centroids."""
        if not cam.depth_enabled:
            return None
        msg = cam.pair_depth(header)
        uses_centroids = cam.outputs is not None and (
            cam.outputs.tracker is not None or self._embedding_space != "")
        if msg is None or not (wanted & set(KEYS_3D) or uses_centroids):
            return None
        try:
            return cam.depth_frame(msg, header, rgb.shape[:2],
                                   bool(self.get_parameter("depth_rectified").value))
        except DepthError as exc:
            self._problems.report(f"depth:{exc.code}:{cam.name}", cam.depth_failed(exc))
            return None


def _publish(cam: Camera, messages: dict) -> float:
    """Publish each output message on the camera's publisher; the seconds it took."""
    t0 = time.monotonic()
    for key, msg in messages.items():
        cam.pubs[key].publish(msg)
    return time.monotonic() - t0
