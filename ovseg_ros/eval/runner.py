"""The evaluation loop: shard selection, resume, metric updates, periodic state saves.

Sources (datasets, bags) become a sequence of :class:`EvalItem` in a fixed
order; shard ``i/n`` takes the items whose position ``p`` has ``p % n == i``.
The state file of a shard is saved every ``save_every`` items and at the end,
so an interrupted run resumes where it stopped (done items are skipped).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence, Tuple

import numpy as np

from ..core.class_names import ClassList
from .datasets import Dataset, Target
from .metrics import LabelError
from .state import EvalState, StateError, write_json_atomic


@dataclass
class EvalItem:
    position: int
    key: str
    load_image: Callable[[], np.ndarray]
    load_target: Callable[[], Target]


def dataset_items(ds: Dataset) -> Iterable[EvalItem]:
    for pos, s in enumerate(ds.samples):
        yield EvalItem(pos, s.key, s.load_image, s.load_target)


def state_path(out_dir: Path, shard: Tuple[int, int]) -> Path:
    return Path(out_dir) / f"state_shard{shard[0]}of{shard[1]}.npz"


def class_vocabulary(classes: ClassList) -> Tuple[list, Optional[list]]:
    return list(classes.names), (list(classes.is_thing) if classes.is_thing else None)


def open_state(out_dir: Path, classes: ClassList, is_thing: Sequence[bool], source: dict,
               shard: Tuple[int, int], panoptic: bool, resume: bool,
               engine: Optional[dict] = None) -> EvalState:
    path = state_path(out_dir, shard)
    fresh = EvalState(classes=list(classes.names), is_thing=list(is_thing), source=source,
                      shard=list(shard), panoptic=panoptic, engine=dict(engine or {}))
    if not path.exists():
        return fresh
    if not resume:
        raise StateError(f"{path} exists from an earlier run; pass --resume to continue it or "
                         "choose another --out directory")
    st = EvalState.load(path)
    if st.fingerprint() != fresh.fingerprint():
        raise StateError(f"{path} belongs to another evaluation (class list, source or engine "
                         "differ); choose another --out directory")
    st.finished = False
    return st


def run_evaluation(segmenter, items: Iterable[EvalItem], state: EvalState, out_dir: Path, *,
                   total: Optional[int] = None, limit: Optional[int] = None,
                   save_every: int = 25, num_samples: int = 4, progress: bool = True,
                   on_item: Optional[Callable[[EvalItem, object, Target], None]] = None
                   ) -> EvalState:
    """Evaluate the items of ``state.shard`` not yet done; returns the updated state.

    ``limit`` caps the number of items this shard has done (resumed ones count).
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    i, n = state.shard
    spath = state_path(out_dir, (i, n))
    sample_dir = out_dir / "samples"
    since_save = 0
    exhausted = True
    bar = tqdm(total=(None if total is None else (total - i + n - 1) // n), disable=not progress,
               desc=f"eval shard {i}/{n}", unit="img", initial=len(state.done))
    try:
        for item in items:
            if item.position % n != i:
                continue
            if state.is_done(item.key):
                continue
            if limit is not None and len(state.done) >= limit:
                exhausted = False
                break
            rgb = item.load_image()
            target = item.load_target()
            if target.semantic.shape != rgb.shape[:2]:
                raise LabelError(f"{item.key}: label {target.semantic.shape[::-1]} and image "
                                 f"{rgb.shape[1::-1]} differ in size")
            pred = segmenter.predict(rgb)
            try:
                state.semantic_metric.update(pred.semantic, target.semantic)
                if target.panoptic is not None:
                    state.panoptic_metric.update(pred.panoptic,
                                                 {s.id: s.class_id for s in pred.segments},
                                                 target.panoptic, target.segments)
            except LabelError as exc:
                raise LabelError(f"{item.key}: {exc}") from exc
            if len(state.done) < num_samples:
                _save_sample(sample_dir, len(state.done), item.key, rgb, pred.semantic,
                             target.semantic)
            if on_item is not None:
                on_item(item, pred, target)
            state.mark_done(item.key)
            bar.update(1)
            since_save += 1
            if since_save >= save_every:
                state.save(spath)
                since_save = 0
    except BaseException:
        if since_save:      # keep what was done when an error or Ctrl-C stops the run
            state.save(spath)
        raise
    finally:
        bar.close()
    state.finished = exhausted
    if state.done:          # an empty run leaves no state behind
        state.save(spath)
    return state


def _save_sample(folder: Path, idx: int, key: str, rgb, pred, gt) -> None:
    """Image | prediction overlay | ground-truth overlay, for the report."""
    import cv2

    from ..core.palette import overlay
    from .metrics import IGNORE
    from ..core.types import UNLABELED

    folder.mkdir(parents=True, exist_ok=True)
    gt_vis = np.where(gt == IGNORE, UNLABELED, gt)
    row = np.concatenate([rgb, overlay(rgb, pred), overlay(rgb, gt_vis)], axis=1)
    cv2.imwrite(str(folder / f"sample_{idx:02d}.png"), cv2.cvtColor(row, cv2.COLOR_RGB2BGR))
    (folder / f"sample_{idx:02d}.txt").write_text(key + "\n")


def finish(state: EvalState, out_dir: Path, report: bool = True) -> dict:
    """results.json and the report from a state, written under temporary names and renamed.
    An unfinished run (--limit, or stopped) writes results_partial.json instead, and its
    report says so, so a partial run never looks complete."""
    res = state.results()
    out_dir = Path(out_dir)
    i, n = state.shard
    if n > 1:      # one shard of several: the report comes from `ovseg-eval merge`
        write_json_atomic(out_dir / f"results_shard{i}of{n}.json", res)
        return res
    write_json_atomic(out_dir / ("results.json" if state.finished else "results_partial.json"),
                      res)
    if state.finished:   # a resumed run is complete now: drop the earlier partial numbers
        (out_dir / "results_partial.json").unlink(missing_ok=True)
    if report and state.done:
        from .report import write_report

        write_report(res, out_dir, state.semantic_metric.confusion.numpy())
    return res


__all__ = ["EvalItem", "dataset_items", "state_path", "open_state", "run_evaluation", "finish",
           "class_vocabulary"]
