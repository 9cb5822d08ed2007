"""The node's ``locate`` service (ovseg_ros/srv/Locate) and the tracks' lifecycle resets.

``LocateService`` is a mixin of ``OvsegNode`` (``lifecycle.py``), like ``Worker``. The
service is node-wide (like ``set_vocabulary``) and runs in its own callback group, so a
cold query, which encodes its text with every prompt template (seconds), never waits
for inference and inference never waits for it: the worker does not use the text
encoder, whose lock ``locate`` shares only with ``set_vocabulary``.

Every request is checked before anything is searched or encoded (query: 1..200
printable characters; top_k: 1..100; camera: one of the node's, or "" for all); a
refused request gets ``success: false`` and a message that names the fact and the
limit, and frames keep flowing.
"""
from __future__ import annotations

import time

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from std_msgs.msg import Header

from ..core.locate import LocateError, check_query, check_top_k
from ..ros import messages as build
from ..ros.qos import service_qos


class LocateService:
    _srv_locate = None
    _locate_answered = 0
    _locate_refused = 0

    def _create_locate_service(self) -> None:
        from ovseg_ros.srv import Locate

        self._locate_group = MutuallyExclusiveCallbackGroup()
        self._srv_locate = self.create_service(Locate, "locate", self._on_locate,
                                               qos_profile=service_qos(),
                                               callback_group=self._locate_group)

    def _destroy_locate_service(self) -> None:
        if self._srv_locate is not None:
            self.destroy_service(self._srv_locate)
            self._srv_locate = None

    def _reset_tracks(self, reason: str, *, now: bool = False) -> None:
        """Forget every camera's tracks (``now``: the worker is stopped; else before each
        camera's next frame, by the worker)."""
        for cam in self._cameras.values():
            if cam.outputs is not None:
                if now:
                    cam.outputs.reset_tracks(reason)
                else:
                    cam.outputs.request_reset(reason)

    def _on_locate(self, req, resp):
        t0 = time.monotonic()
        try:
            matches, searched = self._locate(req)
        except LocateError as exc:
            self._locate_refused += 1
            resp.success = False
            resp.message = f"locate refused: {exc}"
            resp.matches = []
            self._problems.report("locate", resp.message)
            return resp
        self._locate_answered += 1
        resp.success = True
        resp.matches = matches
        resp.message = (f"{len(matches)} matches for {check_query(req.query)!r} in "
                        f"{time.monotonic() - t0:.3f} s; searched {searched}")
        return resp

    def _locate(self, req):
        """(LocatedSegment messages best first, what was searched), or LocateError."""
        seg = self._segmenter
        if seg is None:
            raise LocateError("the node is not configured (model not loaded)")
        if not seg.config["embeddings.enabled"]:
            raise LocateError("segment embeddings are off: set embeddings.enabled to true "
                              "(a read-only parameter: restart the node with it)")
        check_query(req.query)
        check_top_k(req.top_k)
        if req.camera and req.camera not in self._cameras:
            raise LocateError(f"camera {req.camera!r} does not exist; cameras: "
                              f"{sorted(self._cameras)}")
        names = [req.camera] if req.camera else list(self._cameras)
        latest = {}
        for name in names:
            outputs = self._cameras[name].outputs
            latest[name] = outputs.latest if outputs is not None else None
        frames = {name: (None if lf is None else
                         self._cameras[name].outputs.locate_frame(lf))
                  for name, lf in latest.items()}
        found = seg.locate(req.query, frames, top_k=int(req.top_k), camera=req.camera)
        msgs = []
        for m in found:
            lf = latest[m.camera]
            msgs.append(build.located_segment_msg(m, Header(stamp=lf.stamp,
                                                            frame_id=lf.frame_id)))
        searched = ", ".join(
            f"camera {name or '(unnamed)'} " + ("(no frame yet)" if lf is None else
                                               f"(frame stamp {frames[name].stamp:.3f})")
            for name, lf in latest.items())
        return msgs, searched


__all__ = ["LocateService"]
