"""One warm-up prediction before the first camera frame (the node runs it at configure).

With ``torch_compile`` the image path compiles on its first call of each input shape
(tens of seconds on a CPU); done on the first camera frame, that stalls the frame loop and
trips the stall and latency diagnostics. A warm-up at the cameras' frame size moves it to
configure, where a slow step is expected and logged. Without compile it still takes the
first frame's one-off costs: the default vocabulary's text encoding, first-call
allocations and oneDNN kernel selection.

The warm-up frame is synthetic (a colour gradient): a compiled graph depends on the input's
shape, never on its content. ``batch`` > 1 (several cameras) also warms the batched call the
node makes when every camera's frame is waiting; other batch sizes compile when first seen.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Tuple

import numpy as np


@dataclass(frozen=True)
class WarmupReport:
    size: Tuple[int, int]          # (width, height) of the warm-up frame
    batches: Tuple[int, ...]       # the batch sizes run (1, then the number of cameras)
    seconds: float                 # prediction time, compile included, text encoding not
    text_encode_s: float           # the default vocabulary's encoding, done on the way
    compiled: bool                 # the image path runs through torch.compile

    def describe(self) -> str:
        what = "compile + first prediction" if self.compiled else "first prediction"
        batches = "" if self.batches == (1,) else f", batches {list(self.batches)}"
        return (f"warm-up at {self.size[0]}x{self.size[1]}{batches}: {what} "
                f"{self.seconds:.2f} s (+ text encoding {self.text_encode_s:.2f} s)")


def warmup_frame(width: int, height: int) -> np.ndarray:
    """A deterministic H x W x 3 uint8 RGB gradient."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([xx / max(1, width - 1), yy / max(1, height - 1),
                    0.5 + 0.5 * np.sin(xx / 13.0 + yy / 29.0)], axis=-1)
    return (img * 255).astype(np.uint8)


def uses_torch_compile(info: dict) -> bool:
    """Whether any backend of a Segmenter's ``describe()`` compiles its image path."""
    return any(b.get("torch_compile") for b in info.get("backends", {}).values())


def warm_up(segmenter, size: Tuple[int, int], batch: int = 1) -> WarmupReport:
    """Run ``segmenter.predict`` (and ``predict_batch`` of ``batch`` frames when > 1) once at
    ``size`` = (width, height); errors propagate (a warm-up that fails means frames would)."""
    w, h = int(size[0]), int(size[1])
    frame = warmup_frame(w, h)
    t0 = time.perf_counter()
    text_s = segmenter.predict(frame).timings.get("text_encode", 0.0)
    batches = (1,)
    if batch > 1:
        preds = segmenter.predict_batch([frame] * batch)
        text_s += preds[0].timings.get("text_encode", 0.0)
        batches = (1, batch)
    seconds = time.perf_counter() - t0 - text_s
    return WarmupReport(size=(w, h), batches=batches, seconds=max(0.0, seconds),
                        text_encode_s=text_s, compiled=uses_torch_compile(segmenter.describe()))


__all__ = ["WarmupReport", "warm_up", "warmup_frame", "uses_torch_compile"]
