"""What the benchmark modes share: the synthetic frame, sizes, the case config of a preset,
peak-RSS readings, median timing and JSON-safe reports.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from ...presets import PRESETS

VOCABULARY = ["person", "chair", "table", "floor", "wall", "ceiling", "window", "door",
              "plant", "sky"]



def synthetic_frame(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A deterministic RGB scene: smooth gradients plus flat shapes (no pure noise, which
    is an unrealistic worst case for the attention threshold and panoptic merging)."""
    import cv2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([xx / max(1, width - 1), yy / max(1, height - 1),
                    0.5 + 0.5 * np.sin(xx / 17.0) * np.cos(yy / 23.0)], axis=-1)
    img = (img * 200 + 20).astype(np.uint8)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(width // 8, width // 3)), y0 + int(rng.integers(
            height // 8, height // 3))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.rectangle(img, (x0, y0), (x1, y1), color, thickness=-1)
    cv2.circle(img, (width // 2, height // 2), max(2, min(width, height) // 6), (240, 240, 240), -1)
    return img


def parse_size(text: str):
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise SystemExit(f"--sizes: {text!r} is not WIDTHxHEIGHT (e.g. 640x480)") from exc
    if w <= 0 or h <= 0:
        raise SystemExit(f"--sizes: {text!r} must be positive")
    return w, h


def build_config(preset: str, backend: str, precision: str, args,
                 vocabulary: Optional[List[str]] = None) -> Dict[str, Any]:
    cfg = dict(PRESETS[preset])
    cfg.update({"backend": backend, "precision": precision, "device": args.device,
                "num_threads": args.threads, "vocabulary": vocabulary or VOCABULARY,
                "graph_cache_dir": str(Path(args.cache_dir).expanduser()),
                "text_cache_dir": str(Path(args.cache_dir).expanduser() / "text")})
    return apply_cli_overrides(cfg, args)


def apply_cli_overrides(cfg: Dict[str, Any], args) -> Dict[str, Any]:
    """``--random-init`` and every ``--set key=value`` (a YAML value) onto ``cfg``."""
    import yaml

    if args.random_init:
        cfg["random_init"] = True
    for item in args.set or []:
        key, _, value = item.partition("=")
        cfg[key.strip()] = yaml.safe_load(value)
    return cfg


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_kib(field_name: str) -> Optional[int]:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _median_seconds(fn, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)

