"""``ovseg-eval tracking``: MOTA, IDF1 and ID switches of the tracker on a sequence.

Sources: the synthetic sequence (``eval/tracking_sequence.py``, in memory) or a bag with
ground-truth instance ids (an image topic, a 32SC1 panoptic topic whose ids persist
across frames, and an ``ovseg_ros/msg/Segments`` topic giving each id's class; the sample
data's ``tracking_bag`` is one). Predictions come from an engine (``--config``) or, to
measure the tracker alone, from the ground-truth masks themselves (``--oracle``),
optionally with detector-like noise (``--noise erode|dilate|split|merge``). Either way
they go through ``core/tracking.py`` and ``apply_tracks``, the path the node publishes
from. Stuff is not scored. The report lists where the ID switches happen (frame, ids)
and plots the published id of every ground-truth object over the frames.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Set

import numpy as np

from ..core.tracking import STUFF_ID_LIMIT, Tracker, TrackerSettings, apply_tracks
from ..core.types import Prediction, UNLABELED
from .tracking_metrics import TrackingEvaluator, format_summary, switches_outside
from .tracking_sequence import (CLASSES, IS_THING, frame_segments, perturb,
                                synthetic_sequence)

#: topics of the sample tracking bag (scripts/make_tracking_sequence.py)
BAG_TOPICS = {"image": "/synthetic_tracks/image_raw", "panoptic": "/synthetic_tracks/instances",
              "segments": "/synthetic_tracks/segments"}


@dataclass
class TrackFrame:
    rgb: np.ndarray
    instances: np.ndarray                  # H x W ground-truth instance ids (0 = none)
    classes: Dict[int, int]                # instance id -> class id
    stamp: float                           # seconds
    occluded: Set[int] = field(default_factory=set)


def synthetic_frames(frames: int = 60, rate: float = 10.0) -> List[TrackFrame]:
    return [TrackFrame(f.rgb, f.instances, f.classes, i / rate, f.occluded)
            for i, f in enumerate(synthetic_sequence(frames))]


def oracle_predictor(names: Sequence[str], is_thing: Sequence[bool], noise: str = "none",
                     seed: int = 0) -> Callable[[TrackFrame], Prediction]:
    """Predictions made of the ground-truth masks (frame-local ids in random order, so the
    tracker learns nothing from them), with ``noise`` applied."""
    rng = np.random.default_rng(seed)

    def predict(frame: TrackFrame) -> Prediction:
        inst, classes = perturb(frame.instances, frame.classes, noise, rng)
        pan, segs = frame_segments(inst, classes, rng, is_thing=is_thing)
        sem = np.full(pan.shape, UNLABELED, np.int32)
        for s in segs:
            sem[pan == s.id] = s.class_id
        return Prediction(semantic=sem, panoptic=pan, segments=segs, vocabulary=tuple(names),
                          vocabulary_version=1, random_weights=False, engine="oracle",
                          confidence=np.ones(pan.shape, np.float32))

    return predict


def evaluate_tracking(frames: Iterable[TrackFrame], predict: Callable[[TrackFrame], Prediction],
                      settings: TrackerSettings, stuff_gt: Callable[[int], bool]
                      ) -> Dict[str, object]:
    """Track every frame's prediction and score it; the summary holds the metrics, the
    switches (all and outside occlusions) and, per frame, the published id of each
    ground-truth object (for the plot)."""
    tracker = Tracker(settings)
    ev = None
    occluded: List[Set[int]] = []
    timeline: List[Dict[int, int]] = []
    for frame in frames:
        pred = predict(frame)
        update = tracker.update(pred.panoptic, pred.segments, frame.stamp,
                                embeddings=pred.embeddings, vocabulary=pred.vocabulary)
        tracked = apply_tracks(pred, update)
        pred_ids = np.where(tracked.panoptic >= STUFF_ID_LIMIT, tracked.panoptic, 0)
        if ev is None:
            ignore = {i for i, c in frame.classes.items() if stuff_gt(c)}
            ev = TrackingEvaluator(ignore_gt=ignore)
        ev.ignore_gt |= {i for i, c in frame.classes.items() if stuff_gt(c)}
        ev.add_frame(frame.instances, pred_ids)
        occluded.append(set(frame.occluded))
        timeline.append(_owners(frame.instances, pred_ids, ev.ignore_gt))
    if ev is None:
        raise ValueError("the sequence has no frames")
    summary = ev.summary()
    summary["switches_outside_occlusion"] = switches_outside(summary["switches"], occluded)
    summary["timeline"] = [{str(k): v for k, v in t.items()} for t in timeline]
    return summary


def _owners(gt: np.ndarray, pred: np.ndarray, ignore: Set[int]) -> Dict[int, int]:
    """Ground-truth id -> the published id covering most of it (0 = none)."""
    out = {}
    for g in np.unique(gt).tolist():
        if g == 0 or g in ignore:
            continue
        ids, counts = np.unique(pred[gt == g], return_counts=True)
        out[int(g)] = int(ids[np.argmax(counts)])
    return out


def write_report(out: Path, summary: Dict[str, object], title: str,
                 settings: TrackerSettings) -> Path:
    """results.json, report.md and (matplotlib) ids.png under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    data = dict(summary, title=title, tracker=settings.__dict__)
    (out / "results.json").write_text(json.dumps(data, indent=1))
    lines = [f"# {title}", "", "```", format_summary(summary), "```", ""]
    outside = summary["switches_outside_occlusion"]
    lines.append(f"ID switches outside occlusions: {len(outside)}")
    plot = _plot(out / "ids.png", summary)
    if plot:
        lines += ["", f"![published id per ground-truth object]({plot.name})"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return out / "report.md"


def _plot(path: Path, summary: Dict[str, object]) -> Optional[Path]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    timeline = summary["timeline"]
    objects = sorted({int(k) for t in timeline for k in t})
    fig, ax = plt.subplots(figsize=(8, 0.5 + 0.4 * max(len(objects), 1)))
    for row, g in enumerate(objects):
        frames = [(f, t[str(g)]) for f, t in enumerate(timeline) if str(g) in t]
        ids = sorted({i for _, i in frames if i})
        for f, i in frames:
            colour = "lightgrey" if i == 0 else f"C{ids.index(i) % 10}"
            ax.barh(row, 1, left=f, color=colour, edgecolor="none")
    for s in summary["switches"]:
        ax.plot(s["frame"] + 0.5, objects.index(s["gt_id"]), "kx")
    ax.set_yticks(range(len(objects)), [f"object {g}" for g in objects])
    ax.set_xlabel("frame (colour = published id, grey = none, x = ID switch)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


# --- bags -----------------------------------------------------------------------------------
def bag_frames(bag: Path, image_topic: str, panoptic_topic: str, segments_topic: str,
               occlusions: Optional[Dict[int, List[int]]] = None) -> Iterator[TrackFrame]:
    """Frames of a bag with ground-truth instance ids (see the module docstring)."""
    from .bag_sources import BagTopics, bag_targets, check_encodings, iter_synced
    from .bags import frame_rgb, stamp_ns
    from .preflight import open_checked

    topics = BagTopics(image=image_topic, panoptic=panoptic_topic, segments=segments_topic)
    reader = open_checked(Path(bag))
    stats: dict = {}
    try:
        for pos, (frame, got) in enumerate(iter_synced(reader, topics, stats)):
            check_encodings(got, topics)
            target = bag_targets(frame, got, None)
            yield TrackFrame(rgb=frame_rgb(frame), instances=target.panoptic.astype(np.int32),
                             classes={i: c for i, (c, _) in target.segments.items()},
                             stamp=stamp_ns(frame.msg.header) * 1e-9,
                             occluded=set((occlusions or {}).get(pos, ())))
    finally:
        reader.close()


def write_sequence_bag(path: Path, frames: Sequence[TrackFrame], names: Sequence[str] = CLASSES,
                       is_thing: Sequence[bool] = IS_THING, storage: str = "mcap") -> Path:
    """The sequence as a bag: rgb8 images, 32SC1 instance ids, Segments (id -> class)."""
    from rosbags.rosbag2 import Writer

    from .bag_infer import SEGMENTS_TYPE
    from .bags import (IMAGE_TYPE, make_typestore, numpy_to_image, playback_image_qos,
                       rename_storage_files, storage_plugin)

    path = Path(path)
    store = make_typestore()
    T = store.types
    tmp = path.with_name(path.name + ".partial")
    w = Writer(tmp, version=9, storage_plugin=storage_plugin(storage))
    w.open()
    qos = [playback_image_qos()]
    conns = {role: w.add_connection(topic, SEGMENTS_TYPE if role == "segments" else IMAGE_TYPE,
                                    typestore=store, offered_qos_profiles=qos)
             for role, topic in BAG_TOPICS.items()}
    roi = T["sensor_msgs/msg/RegionOfInterest"]
    for f in frames:
        ns = int(round(f.stamp * 1e9))
        hdr = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](
            sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000), frame_id="synthetic_camera")
        _, segs = frame_segments(f.instances, f.classes, keep_ids=True, is_thing=is_thing)
        msgs = [T["ovseg_ros/msg/Segment"](
            id=s.id, class_id=s.class_id, class_name=names[s.class_id], is_thing=s.is_thing,
            score=1.0, area=s.area, bbox=roi(x_offset=s.bbox[0], y_offset=s.bbox[1],
                                             width=s.bbox[2], height=s.bbox[3], do_rectify=False))
            for s in segs]
        for role, msg, mtype in (
                ("image", numpy_to_image(store, f.rgb, "rgb8", hdr), IMAGE_TYPE),
                ("panoptic", numpy_to_image(store, f.instances.astype(np.int32), "32SC1", hdr),
                 IMAGE_TYPE),
                ("segments", T[SEGMENTS_TYPE](header=hdr, vocabulary_version=1, segments=msgs),
                 SEGMENTS_TYPE)):
            w.write(conns[role], ns, store.serialize_cdr(msg, mtype))
    w.close()
    rename_storage_files(tmp, tmp.name, path.name)
    tmp.rename(path)
    return path


def switch_frames(frames: Sequence[TrackFrame]) -> Dict[int, List[int]]:
    """frame index -> occluded ground-truth ids (the bag's side file)."""
    return {i: sorted(f.occluded) for i, f in enumerate(frames) if f.occluded}


__all__ = ["TrackFrame", "synthetic_frames", "oracle_predictor", "evaluate_tracking",
           "write_report", "bag_frames", "write_sequence_bag", "switch_frames", "BAG_TOPICS"]

