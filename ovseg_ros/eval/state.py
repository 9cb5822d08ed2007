"""Saved evaluation state: the metrics' sum states plus which items are done.

One ``.npz`` file per shard (numpy arrays and a JSON header; read with
``allow_pickle=False``, so a state file never executes code). States of
shards of the same evaluation add exactly: merging them gives the numbers of
one single run over all items.
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from .metrics import (PanopticQualityMetric, SemanticSegmentationMetric, load_metric_arrays,
                      metric_arrays)

STATE_VERSION = 2   # 2: exact IoU sums (panoptic iou_fixed)


class StateError(ValueError):
    """A state file cannot be used (unreadable, another evaluation, overlapping shards)."""


@dataclass
class EvalState:
    classes: List[str]
    is_thing: List[bool]
    source: Dict[str, object]              # what is evaluated (kind, path, topics, ...)
    shard: List[int] = field(default_factory=lambda: [0, 1])
    done: List[str] = field(default_factory=list)
    finished: bool = False
    panoptic: bool = False
    extra: Dict[str, object] = field(default_factory=dict)   # e.g. unmatched image counts
    engine: Dict[str, object] = field(default_factory=dict)  # Segmenter.describe()

    def __post_init__(self):
        self.semantic_metric = SemanticSegmentationMetric(len(self.classes))
        self.panoptic_metric = PanopticQualityMetric(self.is_thing)
        self._done_set = set(self.done)

    # --- bookkeeping --------------------------------------------------------------------------
    def is_done(self, key: str) -> bool:
        return key in self._done_set

    def mark_done(self, key: str) -> None:
        self.done.append(key)
        self._done_set.add(key)

    def fingerprint(self) -> dict:
        """What must agree for two states to be resumed or merged."""
        return {"classes": list(self.classes), "is_thing": list(self.is_thing),
                "source": self.source, "engine": engine_identity(self.engine)}

    # --- files ----------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Atomic write: a crash mid-save leaves the previous state intact."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"version": STATE_VERSION, "classes": self.classes, "is_thing": self.is_thing,
                  "source": self.source, "shard": self.shard, "done": self.done,
                  "finished": self.finished, "panoptic": self.panoptic, "extra": self.extra,
                  "engine": self.engine}
        arrays = {f"semantic.{k}": v for k, v in metric_arrays(self.semantic_metric).items()}
        arrays.update({f"panoptic.{k}": v for k, v in metric_arrays(self.panoptic_metric).items()})
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            np.savez(f, header=np.array(json.dumps(header)), **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "EvalState":
        path = Path(path)
        # np.load takes any other file for a pickle and suggests allow_pickle: say what it is
        if path.is_file() and not zipfile.is_zipfile(path):
            raise StateError(f"cannot read evaluation state {path}: not an .npz state written "
                             "by ovseg-eval (state_shard<i>of<n>.npz in an --out directory)")
        try:
            with np.load(path, allow_pickle=False) as z:
                header = json.loads(str(z["header"]))
                arrays = {k: z[k] for k in z.files if k != "header"}
        except (OSError, ValueError, KeyError) as exc:
            raise StateError(f"cannot read evaluation state {path}: {exc}") from exc
        if header.get("version") != STATE_VERSION:
            raise StateError(f"{path}: state version {header.get('version')} is not "
                             f"{STATE_VERSION}")
        st = cls(classes=header["classes"], is_thing=header["is_thing"], source=header["source"],
                 shard=header["shard"], done=header["done"], finished=header["finished"],
                 panoptic=header["panoptic"], extra=header.get("extra", {}),
                 engine=header.get("engine", {}))
        try:
            load_metric_arrays(st.semantic_metric, {k.split(".", 1)[1]: v for k, v in
                                                    arrays.items() if k.startswith("semantic.")})
            load_metric_arrays(st.panoptic_metric, {k.split(".", 1)[1]: v for k, v in
                                                    arrays.items() if k.startswith("panoptic.")})
        except ValueError as exc:
            raise StateError(f"{path}: {exc}") from exc
        return st

    # --- merging --------------------------------------------------------------------------------
    @classmethod
    def merge(cls, states: Sequence["EvalState"], names: Optional[Sequence[str]] = None
              ) -> "EvalState":
        """Sum of shard states; refuses different evaluations and overlapping items."""
        if not states:
            raise StateError("nothing to merge")
        names = list(names or [f"state {i}" for i in range(len(states))])
        first = states[0]
        out = cls(classes=list(first.classes), is_thing=list(first.is_thing),
                  source=first.source, shard=[0, 1], panoptic=first.panoptic,
                  engine=dict(first.engine))
        seen: Dict[str, str] = {}
        for name, st in zip(names, states):
            if st.fingerprint() != first.fingerprint():
                raise StateError(f"{name} evaluates something else than {names[0]} (class list, "
                                 "source or engine differ); merge only shards of one evaluation")
            for key in st.done:
                if key in seen:
                    raise StateError(f"item {key!r} is in both {seen[key]} and {name}: shards "
                                     "overlap")
                seen[key] = name
                out.mark_done(key)
            out.semantic_metric.merge_state(st.semantic_metric)
            out.panoptic_metric.merge_state(st.panoptic_metric)
            out.panoptic = out.panoptic or st.panoptic
            for k, v in st.extra.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    out.extra[k] = out.extra.get(k, 0) + v
        # an earlier merge result stands for the shards it was merged from (its own shard
        # field says 0/1), so merged states can be merged again with the remaining shards
        shards = sorted({tuple(sh) for s in states
                         for sh in (s.extra.get("merged_from") or [s.shard])})
        counts = {n for _, n in shards}
        complete = len(counts) == 1 and {i for i, _ in shards} == set(range(counts.pop()))
        out.finished = complete and all(s.extra.get("merged_shards_finished", s.finished)
                                        for s in states)
        out.extra["merged_from"] = [list(s) for s in shards]
        out.extra["merged_shards_finished"] = all(
            s.extra.get("merged_shards_finished", s.finished) for s in states)
        out.done.sort()
        return out

    # --- results ----------------------------------------------------------------------------------
    def results(self) -> dict:
        res = {"source": self.source, "classes": self.classes, "is_thing": self.is_thing,
               "num_images": len(self.done), "finished": self.finished, "shard": self.shard,
               "extra": self.extra, "engine": self.engine}
        if self.done:
            self.semantic_metric._update_count = max(self.semantic_metric._update_count, 1)
            res["semantic"] = self.semantic_metric.compute()
            if self.panoptic:
                self.panoptic_metric._update_count = max(self.panoptic_metric._update_count, 1)
                res["panoptic"] = self.panoptic_metric.compute()
        return res


#: describe() keys that change the predictions; device, threads, backend details may differ
#: between the machines that run the shards of one evaluation
IDENTITY_KEYS = ("engine", "precision", "random_weights", "clip_model", "vfm_model",
                 "sliding_window", "crop_size", "stride", "short_side", "num_queries",
                 "text_encoder")


def engine_identity(describe: Dict[str, object]) -> Dict[str, object]:
    return {k: v for k, v in describe.items() if k in IDENTITY_KEYS or k.endswith("_weights")}


def write_json_atomic(path: Path, data: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    # NaN is written as null: strict JSON readers accept it
    tmp.write_text(json.dumps(_nan_to_none(data), indent=2))
    os.replace(tmp, path)


def _nan_to_none(x):
    if isinstance(x, float) and x != x:
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_nan_to_none(v) for v in x]
    return x


__all__ = ["EvalState", "StateError", "write_json_atomic"]
