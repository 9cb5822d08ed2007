#!/usr/bin/env python3
"""Costs and quality of tracking, segment embeddings and locate (docs/benchmarks/tracking.md).

* tracker: ``Tracker.update`` + ``apply_tracks`` per frame, 640x480, 30 moving thing
  segments (ellipses of 20-80 px on random straight paths, some crossing);
* the same frames through one camera's output path (``CameraOutputs.process``, what the
  node and bag inference run per frame) with tracking and 512-d segment embeddings on,
  against tracking off, without and with a registered depth frame (3D segments built;
  with tracking their statistics are computed once, for the tracker, and reused);
* segment embeddings, the pooling each engine adds when ``embeddings.enabled``:
  ProxyCLIP (stitch-operator pooling of 512-d features, two 336 windows of 21x21),
  FC-CLIP/MAFT+ (mean of 100 mask-pooled 768-d query embeddings), OVSeg (100 proposal
  masks at 640x480, 768-d crop embeddings);
* locate: cold (the query encoded by a ViT-B-16 open_clip text tower with the 80
  ImageNet templates; random weights, same cost), disk-warm (a new locator, the text
  cache on disk answers) and warm (the locator's LRU), over 4 cameras x 30 segments;
* the tracker on the synthetic sequence's ground-truth masks, clean and with each noise.

    python scripts/measure_tracking.py [--threads 2] [--frames 100]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from ovseg_ros.core.locate import LocateFrame, Locator  # noqa: E402
from ovseg_ros.core.preprocess import sliding_windows  # noqa: E402
from ovseg_ros.core.tracking import Tracker, TrackerSettings, apply_tracks  # noqa: E402
from ovseg_ros.core.types import Prediction, Segment  # noqa: E402
from ovseg_ros.core.window_stitch import Layout, WindowStitch  # noqa: E402
from ovseg_ros.engines.fcclip import FCClipEngine  # noqa: E402
from ovseg_ros.engines.ovseg import segment_embeddings as ovseg_pool  # noqa: E402
from ovseg_ros.eval.tracking_eval import (evaluate_tracking, oracle_predictor,  # noqa: E402
                                          synthetic_frames)
from ovseg_ros.eval.tracking_sequence import CLASSES, IS_THING, NOISE  # noqa: E402
from ovseg_ros.tools.bench import cpu_model, matmul_ceiling  # noqa: E402

H, W = 480, 640


def moving_scene(frames: int, n: int = 30, seed: int = 0, identities: bool = False):
    """(panoptic, segments) per frame: n ellipses moving on straight lines, ids shuffled;
    with ``identities`` also {segment id: ellipse index} (what an embedding would know)."""
    rng = np.random.default_rng(seed)
    start = rng.uniform([40, 40], [W - 40, H - 40], (n, 2))
    vel = rng.uniform(-4, 4, (n, 2))
    axes = rng.integers(10, 40, (n, 2))
    for t in range(frames):
        pan = np.zeros((H, W), np.int32)
        order = rng.permutation(n) + 1
        for k in range(n):
            c = start[k] + vel[k] * t
            cv2.ellipse(pan, (int(c[0]) % W, int(c[1]) % H), tuple(int(a) for a in axes[k]),
                        0, 0, 360, int(order[k]), -1)
        segs = []
        for sid in np.unique(pan).tolist():
            if sid == 0:
                continue
            m = pan == sid
            x, y, w, h = cv2.boundingRect(m.astype(np.uint8))
            segs.append(Segment(sid, sid % 5, True, 0.9, int(m.sum()), (x, y, w, h)))
        if identities:
            yield pan, segs, {int(order[k]): k for k in range(n)}
        else:
            yield pan, segs


def stats(times):
    t = sorted(times)
    return statistics.median(t) * 1e3, t[int(0.9 * (len(t) - 1))] * 1e3


def bench_tracker(frames: int):
    scene = list(moving_scene(frames))
    tr = Tracker(TrackerSettings())
    times, nsegs = [], []
    for i, (pan, segs) in enumerate(scene):
        pred = Prediction(semantic=np.zeros_like(pan), panoptic=pan, segments=segs,
                          vocabulary=tuple("abcde"), vocabulary_version=1, random_weights=False,
                          engine="bench", confidence=np.zeros(pan.shape, np.float32))
        t0 = time.perf_counter()
        apply_tracks(pred, tr.update(pan, segs, i * 0.1, vocabulary=pred.vocabulary))
        times.append(time.perf_counter() - t0)
        nsegs.append(len(segs))
    return stats(times[3:]), statistics.mean(nsegs)


def bench_camera_outputs(frames: int):
    """Median / p90 ms of CameraOutputs.process per frame: {(tracking, depth): (med, p90)}."""
    from ovseg_ros.core.camera_outputs import CameraOutputs
    from ovseg_ros.core.depth import DepthFrame, Intrinsics

    scene = list(moving_scene(frames, identities=True))
    rgb = np.zeros((H, W, 3), np.uint8)
    # one fixed unit vector per ellipse (a segment's embedding follows its object), plus a
    # little noise per frame
    dim = 512
    rng = np.random.default_rng(1)
    base = rng.standard_normal((30, dim))
    depth = DepthFrame(np.full((H, W), 2.0, np.float32), Intrinsics(500.0, 500.0, W / 2, H / 2,
                                                                      W, H), "cam", 0)
    out = {}
    for tracking in (False, True):
        for with_depth in (False, True):
            co = CameraOutputs("bench", overlay_alpha=0.5,
                               tracking=TrackerSettings() if tracking else None)
            wanted = {"panoptic", "segments", "embeddings"} | (
                {"segments_3d"} if with_depth else set())
            times = []
            for i, (pan, segs, ident) in enumerate(scene):
                vecs = base[[ident[s.id] for s in segs]] + 0.1 * rng.standard_normal(
                    (len(segs), dim))
                emb = {s.id: (v / np.linalg.norm(v)).astype(np.float32)
                       for s, v in zip(segs, vecs)}
                pred = Prediction(semantic=np.zeros_like(pan), panoptic=pan, segments=segs,
                                  vocabulary=tuple("abcde"), vocabulary_version=1,
                                  random_weights=False, engine="bench",
                                  confidence=np.zeros(pan.shape, np.float32), embeddings=emb)
                t0 = time.perf_counter()
                co.process(pred, rgb, i * 0.1, wanted=wanted,
                           depth=depth if with_depth else None)
                times.append(time.perf_counter() - t0)
            out[(tracking, with_depth)] = stats(times[3:])
    return out


def timed(fn, repeats=20):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return stats(times)


def bench_embeddings(pan, segs):
    out = {}
    # ProxyCLIP at 640x480: resized to short side 336, windows of 336 at stride 224
    rh, rw = 336, 448
    windows = tuple(sliding_windows(rh, rw, 336, 224))
    layout = Layout((21, 21), (336, 336), (0, 0), windows, (rh, rw), (H, W))
    stitch = WindowStitch(layout)
    feats = F.normalize(torch.randn(len(windows), 512, 21, 21), dim=1)
    blocks = stitch.block_matrix(feats)
    out["ProxyCLIP"] = timed(lambda: F.normalize(stitch.segment_means(blocks, pan, segs), dim=-1))
    # FC-CLIP / MAFT+: one query per thing segment
    clip = torch.randn(100, 768)
    owners = {s.id: [i % 100] for i, s in enumerate(segs)}
    out["FC-CLIP / MAFT+"] = timed(lambda: FCClipEngine.segment_embeddings(clip, owners))
    masks = torch.rand(100, H, W)
    crops = F.normalize(torch.randn(100, 768), dim=-1)
    out["OVSeg"] = timed(lambda: ovseg_pool(crops, masks, pan, segs), repeats=5)
    return out


def bench_locate():
    import open_clip

    from ovseg_ros.core.templates import get_templates
    from ovseg_ros.core.text_cache import OpenClipTextEncoder, TextEmbedder

    model = open_clip.create_model("ViT-B-16", pretrained=None).eval()
    enc = OpenClipTextEncoder(model, open_clip.get_tokenizer("ViT-B-16"), "cpu")
    templates = get_templates("imagenet80", [])
    rng = np.random.default_rng(0)
    frames = {}
    for cam in ("front", "left", "right", "rear"):
        segs = [Segment(i + 1, i % 5, True, 0.8, 100, (0, 0, 10, 10)) for i in range(30)]
        emb = {s.id: (v / np.linalg.norm(v)).astype(np.float32)
               for s, v in zip(segs, rng.standard_normal((30, 512)))}
        frames[cam] = LocateFrame(cam, 1.0, segs, emb, tuple("abcde"))
    with tempfile.TemporaryDirectory() as cache:
        def embedder():
            return TextEmbedder(enc, "bench-ViT-B-16-random", "imagenet80", templates,
                                cache_dir=cache)
        text = embedder()
        loc = Locator(lambda q: text.embed_synonyms([q])[0].numpy())
        t0 = time.perf_counter()
        loc.locate("red mug", frames, top_k=3)
        cold = time.perf_counter() - t0
        text2 = embedder()
        loc2 = Locator(lambda q: text2.embed_synonyms([q])[0].numpy())
        t0 = time.perf_counter()
        loc2.locate("red mug", frames, top_k=3)
        disk = time.perf_counter() - t0
        warm = timed(lambda: loc2.locate("red mug", frames, top_k=3), repeats=50)
    return cold * 1e3, disk * 1e3, warm


def bench_quality(frames: int):
    seq = synthetic_frames(frames)
    rows = []
    for noise in NOISE:
        s = evaluate_tracking(seq, oracle_predictor(CLASSES, IS_THING, noise), TrackerSettings(),
                              lambda c: not IS_THING[c])
        rows.append((noise, s))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=100, help="tracker timing frames")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{args.threads} threads, fp32, load average {os.getloadavg()[0]:.2f}; fp32 matmul "
          f"ceiling {matmul_ceiling('fp32', 'cpu'):.0f} GFLOP/s, bf16 "
          f"{matmul_ceiling('bf16', 'cpu'):.0f} GFLOP/s")
    # each per-frame figure at 1 thread and at --threads: on a loaded machine (load average
    # well above the cores) a multi-threaded torch op waits for its second thread to be
    # scheduled, which can cost more than the work itself
    print(f"\n| per-frame work (640x480) | median ms, 1 thread | p90 | median ms, "
          f"{args.threads} threads | p90 |\n|---|---:|---:|---:|---:|")
    pan, segs = next(moving_scene(1))
    rows = {}
    for threads in (1, args.threads):
        torch.set_num_threads(threads)
        (med, p90), n = bench_tracker(args.frames)
        rows.setdefault(f"tracker update + apply_tracks, {n:.1f} thing segments", []).append(
            (med, p90))
        for name, (m, p) in bench_embeddings(pan, segs).items():
            rows.setdefault(f"segment embeddings {name}, {len(segs)} segments", []).append(
                (m, p))
    for name, ((m1, p1), (m2, p2)) in rows.items():
        print(f"| {name} | {m1:.2f} | {p1:.2f} | {m2:.2f} | {p2:.2f} |")
    torch.set_num_threads(1)
    print("\n| CameraOutputs.process, 640x480, 30 segments, 512-d embeddings, 1 thread | "
          "median ms | p90 |\n|---|---:|---:|")
    for (tracking, depth), (m, p) in bench_camera_outputs(args.frames).items():
        print(f"| tracking {'on' if tracking else 'off'}, "
              f"{'depth (segments_3d)' if depth else 'no depth'} | {m:.2f} | {p:.2f} |")
    torch.set_num_threads(args.threads)
    cold, disk, (wm, wp) = bench_locate()
    print("\n| locate, 4 cameras x 30 segments, top 3 | ms |\n|---|---:|")
    print(f"| cold (query encoded: ViT-B-16 text tower, 80 templates) | {cold:.1f} |")
    print(f"| disk-warm (new locator, text cache on disk) | {disk:.2f} |")
    print(f"| warm (LRU), median / p90 | {wm:.3f} / {wp:.3f} |")
    print("\n| masks (synthetic sequence, 60 frames) | MOTA | IDF1 | ID switches | "
          "outside occlusions | FP | misses |\n|---|---:|---:|---:|---:|---:|---:|")
    for noise, s in bench_quality(60):
        print(f"| ground truth, noise {noise} | {s['mota']:.4f} | {s['idf1']:.4f} | "
              f"{s['num_switches']} | {len(s['switches_outside_occlusion'])} | "
              f"{s['num_false_positives']} | {s['num_misses']} |")
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
