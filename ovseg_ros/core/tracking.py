"""Per-camera tracking: thing segments keep one id across frames (ROS-free).

``Tracker(config).update(panoptic, segments, stamp, ...) -> TrackUpdate`` matches the
frame's thing segments to the camera's tracks with one optimal assignment
(``scipy.optimize.linear_sum_assignment``) on an affinity that is the weighted mean of
the cues the frame has:

* mask IoU (weight 1) between the segment and the track's last mask, shifted by the
  track's constant-velocity prediction (so objects that cross or come back from an
  occlusion are looked for where they went, not where they were);
* 3D proximity ``max(0, 1 - distance / depth_distance)`` of the centroids, when both
  have one (``tracking.depth_weight``);
* embedding cosine clipped at 0, when both have one (``tracking.embedding_weight``);

minus ``tracking.class_change_penalty`` when the classes differ. Pairs below
``tracking.min_affinity`` never match. A track is born (gets published) after
``min_hits`` matched frames and dies after ``max_misses`` unmatched ones; a tentative
track that misses dies at once. Track ids start above ``STUFF_ID_LIMIT`` so they can
never equal a stuff id (class id + 1). Tracks remember class *names*: after a
vocabulary change a track whose name survives keeps its id (its class id is
remapped), the others die. A stamp going backwards or a gap over ``tracking.reset_gap``
seconds resets the tracks (camera restart, bag loop, stall).

``apply_tracks(pred, update)`` rewrites a ``Prediction`` with the result, so the node,
bag->bag inference and ``ovseg-segment`` publish the same ids.
"""
from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Deque, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from scipy.optimize import linear_sum_assignment

from .types import Prediction, Segment

#: stuff segments get ids class_id + 1 <= 65535; track ids start above
STUFF_ID_LIMIT = 1 << 16
_INFEASIBLE = 1e6
# the largest affinity a detection can get from lying inside a track's predicted whole
# mask (occlusion recovery); a true mask IoU above it always wins
_AMODAL_WEIGHT = 0.5


def stuff_id(class_id: int) -> int:
    """The panoptic id of a stuff class while tracking is on (stable across frames)."""
    return int(class_id) + 1


@dataclass(frozen=True)
class TrackerSettings:
    """The ``tracking.*`` config group, typed."""

    min_hits: int = 1
    max_misses: int = 10
    min_affinity: float = 0.1
    class_change_penalty: float = 0.5
    depth_weight: float = 1.0
    depth_distance: float = 0.5
    embedding_weight: float = 1.0
    reset_gap: float = 2.0
    label_smoothing: int = 0

    @classmethod
    def from_config(cls, cfg) -> "TrackerSettings":
        return cls(**{f.name: cfg[f"tracking.{f.name}"] for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class TrackUpdate:
    """What one frame's ``update`` decided.

    ids:     frame segment id -> published id (track id for things, ``stuff_id`` for stuff,
             0 for a tentative thing not published yet)
    classes: frame segment id -> class id, only where label smoothing changed the class
    """

    ids: Dict[int, int]
    classes: Dict[int, int] = field(default_factory=dict)


@dataclass
class _Track:
    id: int
    name: str
    class_id: int
    mask: np.ndarray                   # bool crop of the last mask at bbox
    bbox: Tuple[int, int, int, int]    # x, y, w, h of the last mask
    area: int
    center: np.ndarray                 # 2D centroid of the last mask (x, y)
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))
    centroid: Optional[np.ndarray] = None    # 3D centroid [m]
    embedding: Optional[np.ndarray] = None
    # the last mask seen whole (area >= 90 % of the largest seen): occlusion recovery looks
    # for the object where this mask would be now, since the last visible sliver of an
    # object that went behind something says little about where it comes out
    full_mask: Optional[np.ndarray] = None
    full_bbox: Tuple[int, int, int, int] = (0, 0, 0, 0)
    full_center: np.ndarray = field(default_factory=lambda: np.zeros(2))
    full_age: int = 0                  # frames since full_mask was seen
    full_area: int = 0                 # the largest area seen
    hits: int = 1
    misses: int = 0
    confirmed: bool = False
    votes: Deque[Tuple[str, float]] = field(default_factory=deque)


@dataclass
class _Detection:
    seg: Segment
    name: str
    mask: np.ndarray
    center: np.ndarray
    centroid: Optional[np.ndarray]
    embedding: Optional[np.ndarray]


def _crop(panoptic: np.ndarray, seg: Segment) -> np.ndarray:
    x, y, w, h = seg.bbox
    return panoptic[y:y + h, x:x + w] == seg.id


def _center(mask: np.ndarray, bbox: Tuple[int, int, int, int]) -> np.ndarray:
    ys, xs = mask.sum(1), mask.sum(0)
    n = max(float(ys.sum()), 1.0)
    return np.array([bbox[0] + float(xs @ np.arange(xs.size)) / n,
                     bbox[1] + float(ys @ np.arange(ys.size)) / n])


def shifted_overlap(track_mask: np.ndarray, track_box: Tuple[int, int, int, int],
                    shift: Tuple[int, int], det_mask: np.ndarray,
                    det_box: Tuple[int, int, int, int]) -> int:
    """Pixels shared by a track's mask moved by ``shift`` (dx, dy) and a detection's mask;
    only the overlap of the two boxes is read."""
    tx, ty = track_box[0] + shift[0], track_box[1] + shift[1]
    x0, y0 = max(tx, det_box[0]), max(ty, det_box[1])
    x1 = min(tx + track_box[2], det_box[0] + det_box[2])
    y1 = min(ty + track_box[3], det_box[1] + det_box[3])
    if x1 <= x0 or y1 <= y0:
        return 0
    a = track_mask[y0 - ty:y1 - ty, x0 - tx:x1 - tx]
    b = det_mask[y0 - det_box[1]:y1 - det_box[1], x0 - det_box[0]:x1 - det_box[0]]
    return int(np.count_nonzero(a & b))


def _predicted_full_box(track: "_Track") -> Tuple[float, float, float, float]:
    """The track's last whole box moved by the prediction, grown by 2 px plus a quarter of
    the predicted travel: the speed estimate is off by some pixels a frame, and the error
    grows with the frames the object was cut or hidden."""
    steps = track.full_age + 1
    vx, vy = float(track.velocity[0]), float(track.velocity[1])
    margin = 2 + 0.25 * math.hypot(vx, vy) * steps
    x, y, w, h = track.full_bbox
    return (x + round(vx * steps) - margin, y + round(vy * steps) - margin, w + 2 * margin,
            h + 2 * margin)


def _edge_step(start0: int, size0: int, start1: int, size1: int) -> float:
    """The larger move of the two edges of a box along one axis."""
    low, high = start1 - start0, (start1 + size1) - (start0 + size0)
    return float(low if abs(low) >= abs(high) else high)


def box_coverage(outer: Tuple[float, float, float, float],
                 box: Tuple[int, int, int, int]) -> float:
    """The fraction of ``box`` (x, y, w, h) inside ``outer``."""
    x0, y0 = max(outer[0], box[0]), max(outer[1], box[1])
    x1 = min(outer[0] + outer[2], box[0] + box[2])
    y1 = min(outer[1] + outer[3], box[1] + box[3])
    if x1 <= x0 or y1 <= y0:
        return 0.0
    return (x1 - x0) * (y1 - y0) / float(max(box[2] * box[3], 1))


def shifted_iou(track_mask: np.ndarray, track_box: Tuple[int, int, int, int], track_area: int,
                shift: Tuple[int, int], det_mask: np.ndarray,
                det_box: Tuple[int, int, int, int], det_area: int) -> float:
    """IoU of a track's mask moved by ``shift`` (dx, dy pixels) and a detection's mask."""
    inter = shifted_overlap(track_mask, track_box, shift, det_mask, det_box)
    return inter / float(track_area + det_area - inter) if inter else 0.0


class Tracker:
    """One camera's tracks. Not thread-safe: one camera's frames arrive in order."""

    def __init__(self, config=None):
        if config is None:
            self.settings = TrackerSettings()
        elif isinstance(config, TrackerSettings):
            self.settings = config
        else:
            self.settings = TrackerSettings.from_config(config)
        self._tracks: List[_Track] = []
        self._next = STUFF_ID_LIMIT        # ids are never reused, not even after a reset
        self._last_stamp: Optional[float] = None
        self._names: Optional[Tuple[str, ...]] = None
        #: why the tracks were last reset ("" = never), for logs and diagnostics
        self.last_reset = ""

    @property
    def tracks(self) -> Dict[int, str]:
        """Live published tracks: id -> class name."""
        return {t.id: t.name for t in self._tracks if t.confirmed}

    def reset(self, reason: str = "reset() called") -> None:
        """Forget every track (camera stall or restart); new objects get new ids."""
        self._tracks = []
        self._last_stamp = None
        self.last_reset = reason

    # --- one frame --------------------------------------------------------------------------
    def update(self, panoptic: np.ndarray, segments: Sequence[Segment], stamp: float, *,
               centroids: Optional[Mapping[int, Sequence[float]]] = None,
               embeddings: Optional[Mapping[int, np.ndarray]] = None,
               vocabulary: Optional[Sequence[str]] = None) -> TrackUpdate:
        """Match one frame's segments to the tracks; returns the published ids.

        ``stamp`` in seconds; ``centroids`` / ``embeddings`` map frame segment ids to a 3D
        centroid [m] / a unit vector (either may miss a segment); ``vocabulary`` the class
        names the segments' class ids index (a change remaps the tracks by name)."""
        self._check_stamp(float(stamp))
        names = self._check_vocabulary(vocabulary)
        ids: Dict[int, int] = {}
        dets: List[_Detection] = []
        for seg in segments:
            if not seg.is_thing:
                ids[seg.id] = stuff_id(seg.class_id)
                continue
            mask = _crop(panoptic, seg)
            dets.append(_Detection(
                seg=seg, name=names[seg.class_id] if names else str(seg.class_id), mask=mask,
                center=_center(mask, seg.bbox),
                centroid=None if centroids is None or centroids.get(seg.id) is None
                else np.asarray(centroids[seg.id], np.float64),
                embedding=None if embeddings is None or seg.id not in embeddings
                else np.asarray(embeddings[seg.id], np.float32)))
        matches = self._assign(dets)
        n_old = len(self._tracks)
        matched_tracks = set()
        classes: Dict[int, int] = {}
        for di, det in enumerate(dets):
            ti = matches.get(di)
            if ti is None:
                track = self._new_track(det)
            else:
                track = self._tracks[ti]
                matched_tracks.add(ti)
                self._refresh(track, det)
            ids[det.seg.id] = track.id if track.confirmed else 0
            smoothed = self._vote(track, det, names)
            if smoothed is not None and smoothed != det.seg.class_id:
                classes[det.seg.id] = smoothed
        self._age(matched_tracks, n_old)
        return TrackUpdate(ids=ids, classes=classes)

    def _check_stamp(self, stamp: float) -> None:
        last = self._last_stamp
        if last is not None:
            if stamp < last:
                self.reset(f"stamp went backwards ({stamp:.3f} s < {last:.3f} s)")
            elif stamp - last > self.settings.reset_gap:
                self.reset(f"stamp gap {stamp - last:.3f} s > tracking.reset_gap "
                           f"{self.settings.reset_gap} s")
        self._last_stamp = stamp

    def _check_vocabulary(self, vocabulary: Optional[Sequence[str]]) -> Optional[Tuple[str, ...]]:
        if vocabulary is None:
            return self._names
        names = tuple(vocabulary)
        if names != self._names:
            if self._names is not None:
                index = {n: i for i, n in enumerate(names)}
                # a track whose class name survives keeps its id under its new class id
                self._tracks = [t for t in self._tracks if t.name in index]
                for t in self._tracks:
                    t.class_id = index[t.name]
                    t.votes = deque((n, s) for n, s in t.votes if n in index)
            self._names = names
        return names

    @staticmethod
    def _search_boxes(track: _Track, full: Tuple[float, float, float, float]) -> list:
        """3 boxes (x0, y0, x1, y1) where the track's object can be now: its last box
        where it was, moved by the prediction, and the predicted whole box ``full``."""
        steps = track.misses + 1
        dx, dy = round(float(track.velocity[0]) * steps), round(float(track.velocity[1]) * steps)
        x, y, w, h = track.bbox
        return [(x, y, x + w, y + h), (x + dx, y + dy, x + w + dx, y + h + dy),
                (full[0], full[1], full[0] + full[2], full[1] + full[3])]

    def _affinity(self, track: _Track, det: _Detection, may_overlap: bool,
                  full: Tuple[float, float, float, float]) -> float:
        s = self.settings
        total = 0.0
        if may_overlap:
            steps = track.misses + 1
            shift = (int(round(track.velocity[0] * steps)),
                     int(round(track.velocity[1] * steps)))
            # the prediction, or no motion at all (an object that stopped)
            total = max(shifted_iou(track.mask, track.bbox, track.area, move, det.mask,
                                    det.seg.bbox, det.seg.area) for move in {shift, (0, 0)})
            if total < _AMODAL_WEIGHT:
                total = max(total, _AMODAL_WEIGHT * box_coverage(full, det.seg.bbox))
        weight = 1.0
        if s.depth_weight > 0 and track.centroid is not None and det.centroid is not None:
            dist = float(np.linalg.norm(track.centroid - det.centroid))
            total += s.depth_weight * max(0.0, 1.0 - dist / s.depth_distance)
            weight += s.depth_weight
        if s.embedding_weight > 0 and track.embedding is not None and det.embedding is not None:
            total += s.embedding_weight * max(0.0, float(track.embedding @ det.embedding))
            weight += s.embedding_weight
        affinity = total / weight
        if track.name != det.name:
            affinity -= s.class_change_penalty
        return affinity

    def _assign(self, dets: List[_Detection]) -> Dict[int, int]:
        """detection index -> track index, optimal over the feasible pairs."""
        if not dets or not self._tracks:
            return {}
        s = self.settings
        # which pairs can overlap at all, from boxes (one vectorised test): the mask IoU of
        # the others is 0, and without a 3D or embedding cue they cannot match
        d = np.array([(x, y, x + w, y + h) for x, y, w, h in (t.seg.bbox for t in dets)],
                     np.float64)[:, None, None, :]
        fulls = [_predicted_full_box(tr) for tr in self._tracks]
        t = np.array([self._search_boxes(tr, f) for tr, f in zip(self._tracks, fulls)],
                     np.float64)[None]
        overlap = ((np.minimum(d[..., 2], t[..., 2]) > np.maximum(d[..., 0], t[..., 0]))
                   & (np.minimum(d[..., 3], t[..., 3]) > np.maximum(d[..., 1], t[..., 1])))
        overlap = overlap.any(-1)
        candidate = overlap.copy()
        if s.depth_weight > 0 or s.embedding_weight > 0:
            det_cue = np.array([d.centroid is not None or d.embedding is not None
                                for d in dets])
            track_cue = np.array([t.centroid is not None or t.embedding is not None
                                  for t in self._tracks])
            candidate |= det_cue[:, None] & track_cue[None, :]
        aff = np.full((len(dets), len(self._tracks)), -_INFEASIBLE)
        for di, ti in zip(*np.nonzero(overlap)):
            a = self._affinity(self._tracks[ti], dets[di], True, fulls[ti])
            if a >= s.min_affinity and a > 0:
                aff[di, ti] = a
        far = candidate & ~overlap
        if far.any():
            # pairs whose boxes cannot overlap have only the 3D and embedding cues: all of
            # them at once (with 30 objects and embeddings on, ~900 pairs a frame)
            cue = self._cue_affinity(dets)
            ok = far & (cue >= s.min_affinity) & (cue > 0)
            aff[ok] = cue[ok]
        rows, cols = linear_sum_assignment(-aff)
        return {int(r): int(c) for r, c in zip(rows, cols) if aff[r, c] > -_INFEASIBLE}

    def _cue_affinity(self, dets: List[_Detection]) -> np.ndarray:
        """detections x tracks: ``_affinity`` of pairs whose masks do not overlap (the 3D
        and embedding cues over their weights, minus the class-change penalty)."""
        s = self.settings
        tracks = self._tracks
        total = np.zeros((len(dets), len(tracks)))
        weight = np.ones_like(total)
        if s.depth_weight > 0:
            dc = [d.centroid is not None for d in dets]
            tc = [t.centroid is not None for t in tracks]
            if any(dc) and any(tc):
                a = np.array([d.centroid if ok else np.zeros(3) for d, ok in zip(dets, dc)])
                b = np.array([t.centroid if ok else np.zeros(3) for t, ok in zip(tracks, tc)])
                dist = np.linalg.norm(a[:, None] - b[None], axis=-1)
                has = np.outer(dc, tc)
                total += np.where(has, s.depth_weight
                                  * np.maximum(0.0, 1.0 - dist / s.depth_distance), 0.0)
                weight += s.depth_weight * has
        if s.embedding_weight > 0:
            de = [d.embedding is not None for d in dets]
            te = [t.embedding is not None for t in tracks]
            if any(de) and any(te):
                dim = next(d.embedding for d in dets if d.embedding is not None).shape[0]
                a = np.array([d.embedding if ok else np.zeros(dim, np.float32)
                              for d, ok in zip(dets, de)], np.float32)
                b = np.array([t.embedding if ok else np.zeros(dim, np.float32)
                              for t, ok in zip(tracks, te)], np.float32)
                has = np.outer(de, te)
                total += np.where(has, s.embedding_weight * np.maximum(0.0, a @ b.T), 0.0)
                weight += s.embedding_weight * has
        differ = np.array([d.name for d in dets])[:, None] != np.array(
            [t.name for t in tracks])[None, :]
        return total / weight - s.class_change_penalty * differ

    def _new_track(self, det: _Detection) -> _Track:
        self._next += 1
        track = _Track(id=self._next, name=det.name, class_id=det.seg.class_id, mask=det.mask,
                       bbox=tuple(det.seg.bbox), area=det.seg.area, center=det.center,
                       centroid=det.centroid, embedding=det.embedding,
                       confirmed=self.settings.min_hits <= 1, full_mask=det.mask,
                       full_bbox=tuple(det.seg.bbox), full_center=det.center,
                       full_area=det.seg.area)
        self._tracks.append(track)
        return track

    def _refresh(self, track: _Track, det: _Detection) -> None:
        # the velocity follows the box edge that moved most: an occluder or the image
        # border holds one edge of a partly hidden object still while the other edge keeps
        # the object's speed (its centroid would move at some fraction of it)
        prev, cur = track.bbox, det.seg.bbox
        step = np.array([_edge_step(prev[0], prev[2], cur[0], cur[2]),
                         _edge_step(prev[1], prev[3], cur[1], cur[3])]) / (track.misses + 1)
        # first match: the observed step; then a running mean that damps mask jitter
        track.velocity = step if track.hits == 1 else 0.5 * (track.velocity + step)
        if det.seg.area >= 0.9 * track.full_area:
            track.full_mask, track.full_bbox = det.mask, tuple(det.seg.bbox)
            track.full_center, track.full_age = det.center, 0
            track.full_area = max(track.full_area, det.seg.area)
        else:
            track.full_age += 1
        track.name, track.class_id = det.name, det.seg.class_id
        track.mask, track.bbox, track.area = det.mask, tuple(det.seg.bbox), det.seg.area
        track.center = det.center
        if det.centroid is not None:
            track.centroid = det.centroid
        if det.embedding is not None:
            track.embedding = det.embedding
        track.hits += 1
        track.misses = 0
        track.confirmed = track.confirmed or track.hits >= self.settings.min_hits

    def _vote(self, track: _Track, det: _Detection,
              names: Optional[Tuple[str, ...]]) -> Optional[int]:
        """Label smoothing: the score-weighted majority class of the last N frames."""
        n = self.settings.label_smoothing
        if n <= 0:
            return None
        track.votes.append((det.name, float(det.seg.score)))
        while len(track.votes) > n:
            track.votes.popleft()
        tally: Dict[str, float] = {}
        for name, score in track.votes:
            tally[name] = tally.get(name, 0.0) + score
        best = max(tally, key=lambda k: (tally[k], k == det.name))
        if names is None:
            return int(best)
        return names.index(best)

    def _age(self, matched: set, n_old: int) -> None:
        """Unmatched old tracks miss a frame; tentative ones die at once, confirmed ones
        after max_misses. Tracks born this frame (index >= n_old) stay."""
        keep = []
        for ti, track in enumerate(self._tracks):
            if ti in matched or ti >= n_old:
                keep.append(track)
                continue
            track.misses += 1
            track.full_age += 1
            if track.confirmed and track.misses <= self.settings.max_misses:
                keep.append(track)
        self._tracks = keep


def apply_tracks(pred: Prediction, update: TrackUpdate) -> Prediction:
    """A copy of ``pred`` with the tracker's ids: panoptic relabelled, segments renumbered
    (tentative ones dropped), embeddings re-keyed; smoothed classes rewrite the segments'
    class ids and their semantic pixels. ``pred`` itself is left unchanged."""
    ids = update.ids
    missing = [s.id for s in pred.segments if s.id not in ids]
    if missing:
        raise ValueError(f"the track update has no id for segments {missing}; it belongs to "
                         "another frame")
    top = int(pred.panoptic.max()) if pred.panoptic.size else 0
    lut = np.zeros(max(top, max(ids, default=0)) + 1, np.int32)
    for old, new in ids.items():
        lut[old] = new
    panoptic = lut[pred.panoptic]
    semantic = pred.semantic
    segments = []
    for seg in pred.segments:
        new_id = ids[seg.id]
        if new_id == 0:
            continue
        cls = update.classes.get(seg.id, seg.class_id)
        if cls != seg.class_id:
            if semantic is pred.semantic:
                semantic = semantic.copy()
            semantic[pred.panoptic == seg.id] = cls
        segments.append(dataclasses.replace(seg, id=new_id, class_id=cls))
    embeddings = None
    if pred.embeddings is not None:
        embeddings = {ids[k]: v for k, v in pred.embeddings.items() if ids.get(k, 0)}
    return dataclasses.replace(pred, panoptic=panoptic, semantic=semantic, segments=segments,
                               embeddings=embeddings)


__all__ = ["Tracker", "TrackerSettings", "TrackUpdate", "apply_tracks", "stuff_id",
           "shifted_iou", "STUFF_ID_LIMIT"]
