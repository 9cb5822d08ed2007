#!/usr/bin/env python3
"""The node's `locate` service timed from a client: cold (a query the node never saw: its
text encoded with every prompt template) and warm (the same query again: the LRU),
round trip over DDS, with frames flowing.

The node runs the tiny random-weight ProxyCLIP (test/node_harness.py's TINY_PARAMS,
tracking and embeddings on) with a camera stream at 5 Hz: the cold figure is the
service path plus the tiny text tower's 80-template encoding, not a ViT-B-16's (that
one is in docs/benchmarks/tracking.md, measured in-process by measure_tracking.py).

    python scripts/measure_locate_node.py [--queries 5] [--repeats 20]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "test"))

import numpy as np  # noqa: E402

from ovseg_ros.tools.bench import cpu_model, matmul_ceiling  # noqa: E402


def call(srv, request, timeout: float = 60.0):
    """(seconds, response) of one service call, timed to its done callback (the test
    harness's Client.call polls every 10 ms, too coarse for a warm call)."""
    done = threading.Event()
    t0 = time.perf_counter()
    fut = srv.call_async(request)
    fut.add_done_callback(lambda _: done.set())
    if not done.wait(timeout):
        raise RuntimeError(f"no answer from {srv.srv_name} within {timeout} s")
    return time.perf_counter() - t0, fut.result()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--queries", type=int, default=5, help="distinct cold queries")
    ap.add_argument("--repeats", type=int, default=20, help="warm calls per query")
    args = ap.parse_args(argv)
    from node_harness import TINY_PARAMS, CameraStream, Client, NodeUnderTest

    from ovseg_ros.msg import Segments
    from ovseg_ros.srv import Locate

    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs; node: 1 torch thread, fp32, tiny "
          f"random ProxyCLIP; load average {os.getloadavg()[0]:.2f}; fp32 matmul ceiling "
          f"{matmul_ceiling('fp32', 'cpu'):.0f} GFLOP/s, bf16 "
          f"{matmul_ceiling('bf16', 'cpu'):.0f} GFLOP/s (this process, 2 threads)")
    params = {**TINY_PARAMS, "tracking.enabled": True, "embeddings.enabled": True,
              "tracking.reset_gap": 1000.0}
    with tempfile.TemporaryDirectory() as tmp:
        node = NodeUnderTest(Path(tmp), params, namespace="/bench_locate")
        client = Client("/bench_locate")
        stream = None
        try:
            client.record(Segments, "segments")
            srv = client.node.create_client(Locate, "locate")
            client.wait_for(lambda: srv.service_is_ready(), 120, node, "the locate service")
            rgb = np.random.default_rng(0).integers(0, 255, (90, 130, 3), np.uint8)
            stream = CameraStream(client, "image", "cam", rgb, sec_base=100, rate=5.0).start()
            client.wait_for(lambda: client.msgs("segments"), 60, node, "the first frame")
            cold, warm = [], []
            for q in range(args.queries):
                query = f"a small object number {q}"
                dt, r = call(srv, Locate.Request(query=query, top_k=3))
                assert r.success, r.message
                cold.append(dt)
                for _ in range(args.repeats):
                    dt, r = call(srv, Locate.Request(query=query, top_k=3))
                    assert r.success, r.message
                    warm.append(dt)
            frames = len(client.msgs("segments"))
        finally:
            if stream is not None:
                stream.stop()
            client.close()
            node.stop()

    def row(name, xs):
        xs = sorted(xs)
        print(f"| {name} | {len(xs)} | {statistics.median(xs) * 1e3:.1f} | "
              f"{xs[int(0.9 * (len(xs) - 1))] * 1e3:.1f} |")
    print("\n| locate through the node (round trip) | calls | median ms | p90 ms |\n"
          "|---|---:|---:|---:|")
    row("cold (new query: 80 templates through the tiny text tower)", cold)
    row("warm (the LRU)", warm)
    print(f"\nframes published meanwhile: {frames}; load average at the end "
          f"{os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
