"""``ovseg-bench``: frames per second, latency and memory per engine x backend x precision x size.

    ovseg-bench --quick --out out/bench                      # tiny models, 1-4 minutes
    ovseg-bench --preset proxyclip-b16-dinos8-single336 --random-init \\
                --backends torch,onnxruntime --precisions fp32,bf16 --sizes 640x480
    ovseg-bench --preset proxyclip-tiny --vocab-sizes 10,150,847 --sizes 640x480 \\
                --backends torch --precisions fp32 --iters 3  # the vocabulary axis
    ovseg-bench --node-overhead --sizes 640x480,1280x720      # the node's own work per frame
    ovseg-bench --shapes --threads 2     # elongated, tiny and 4K frames next to 640x480
    ovseg-bench --node --node-config config/cpu_realtime.yaml --random-init --threads 2
                                         # frames through the real node over DDS

Every case builds a Segmenter through the public API (``load_segmenter``),
runs warm-up frames, then times ``predict`` on one synthetic frame. Reported
per case: frames per second (1 / mean latency), latency p50/p95, first-frame
time (build + export + first run: what a user waits for once), peak memory
(process peak RSS on the CPU, ``torch.cuda.max_memory_allocated`` on CUDA),
the engine's per-stage timings (``Prediction.timings``), FLOPs per frame
(``torch.utils.flop_counter.FlopCounterMode`` over one fp32 torch predict:
matmuls, convolutions and attention; element-wise work is not counted), the
achieved GFLOP/s against a matrix-multiplication ceiling measured on this
machine for the case's arithmetic (and reference figures of an AMD EPYC), and how
many pixels get the same label as the fp32 torch run of the same preset.

The vocabulary axis (``--vocab-sizes 10,150,847``) repeats every case with
vocabularies of that many classes (10: a small indoor list, 150: ADE-150,
847: ADE-847, other sizes: the first N of ADE-847) and adds per case: the
first-time text encoding of the vocabulary (a fresh text cache, the configured
templates), its reload from the disk cache (a new embedder on the same cache),
the post-processing time per frame, and the peak RSS while frames run (reset
after the warm-up, so model loading and text encoding are not in it).

Every figure names the machine (CPU model, cores, GPU), the threads, the
precision, the settings and whether the weights were random. Results go to
``<out>/bench.json`` and ``<out>/bench.md``.

One module per mode: ``table`` (the engine table above, with ``vocab``, ``photos`` and
``table_report``), ``node_overhead`` (with the ROS-layer ``node``), ``shapes``, ``cameras``;
``machine`` (machine facts, matmul ceiling, ``cpu_machine_line``) and ``common`` (frames,
sizes, configs, timing and report helpers) are shared. ``main`` below parses the options
and dispatches to a mode.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from ...presets import PRESETS
# not cameras: `python -m ovseg_ros.tools.bench.cameras` runs it as __main__, and runpy warns
# when the package has imported it before
from . import node_overhead, shapes, table
# the helpers measurement scripts (scripts/measure_*.py) and tests import from here
from .common import VOCABULARY, _median_seconds, parse_size, synthetic_frame  # noqa: F401
from .machine import cpu_machine_line, cpu_model, machine_info, matmul_ceiling  # noqa: F401
from .photos import photo_frames  # noqa: F401
from .table import count_flops  # noqa: F401
from .vocab import vocabulary_of_size  # noqa: F401


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="ovseg-bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="out/bench", help="output directory (bench.json, bench.md)")
    p.add_argument("--quick", action="store_true",
                   help="tiny random-weight models, small inputs, few frames "
                        "(1-4 minutes on 2 cores)")
    p.add_argument("--preset", action="append", choices=sorted(PRESETS),
                   help="configuration preset (repeatable); default: the quick set")
    p.add_argument("--backends", default=None, help="comma list: torch,onnxruntime,tensorrt")
    p.add_argument("--precisions", default=None, help="comma list: fp32,bf16,fp16,int8")
    p.add_argument("--sizes", default=None, help="comma list of input frames WxH (640x480)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=0,
                   help="torch / onnxruntime CPU threads (0 = library default)")
    p.add_argument("--iters", type=int, default=None, help="timed frames per case")
    p.add_argument("--warmup", type=int, default=None, help="warm-up frames per case (>= 1)")
    p.add_argument("--max-case-seconds", type=float, default=60.0,
                   help="stop timing a case after this long (at least 2 frames)")
    p.add_argument("--random-init", action="store_true",
                   help="random weights for the real architectures (timing only; no download)")
    p.add_argument("--no-photos", dest="photos", action="store_false",
                   help="skip the label agreement on scikit-image photos (4 extra frames a case)")
    p.add_argument("--no-flops", dest="flops", action="store_false",
                   help="skip FLOP counting (one extra fp32 frame per preset and size)")
    p.add_argument("--cache-dir", default="~/.cache/ovseg_ros/bench",
                   help="engine (ONNX/TensorRT) and text cache used by the cases")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="extra config setting for every case (YAML value), repeatable")
    p.add_argument("--vocab-sizes", default=None,
                   help="comma list of vocabulary sizes (10,150,847): repeat every case per "
                        "size, with first-time text encoding, cached reload, post-processing "
                        "time and frame peak RSS")
    p.add_argument("--cameras", default=None, metavar="N,N",
                   help="also time N cameras' frames in one predict_batch against N "
                        "single-camera runs of the same model (torch backend, first "
                        "precision and size)")
    p.add_argument("--node-overhead", action="store_true",
                   help="only time the node's per-frame work apart from the model (decode, "
                        "output products, messages, publish to a listening process) at "
                        "--sizes (default 640x480,1280x720); needs rclpy")
    p.add_argument("--node-classes", type=int, default=150,
                   help="vocabulary size of the synthetic prediction for --node-overhead")
    p.add_argument("--shapes", action="store_true",
                   help="only time hostile frame shapes (elongated, tiny, 4K; or --sizes) "
                        "next to 640x480 per preset (default: the tiny presets), with frame "
                        "peak memory, model pixels and clamps (ovseg_ros/tools/bench/shapes.py)")
    g = p.add_argument_group("through the node (--node; ovseg_ros/tools/bench/node_e2e.py)")
    g.add_argument("--node", action="store_true",
                   help="drive frames through the real node (its own process) over DDS at "
                        "--rate, per preset and precision (default fp32,auto): FPS, stamp to "
                        "label latency, drops, with the model-only table beside it")
    g.add_argument("--node-config", action="append", metavar="PARAMS.yaml",
                   help="a node params file as a preset (config/cpu_realtime.yaml), repeatable")
    g.add_argument("--rate", type=float, default=15.0, help="camera frames per second")
    g.add_argument("--seconds", type=float, default=20.0, help="timed window per case")
    g.add_argument("--node-warmup", type=int, default=3,
                   help="labels received before the timed window starts")
    g.add_argument("--start-timeout", type=float, default=300.0,
                   help="seconds the node may take to load and answer its first frames")
    g.add_argument("--node-subscriptions", default="labels+segments,all 2D",
                   help="subscription sets to time: labels+segments, all 2D")
    g.add_argument("--encoding", default="rgb8", help="the camera's image encoding")
    g.add_argument("--node-only", action="store_true",
                   help="skip the model-only table beside the node figures")
    args = p.parse_args(argv)
    # the one place where a mode is chosen
    if args.node:
        return node_mode(args, argv)
    if args.node_overhead:
        return node_overhead.run(args, argv)
    if args.shapes:
        return shapes.run(args, argv if argv is not None else sys.argv[1:])
    return table.run(p, args, argv)


def node_mode(args, argv) -> int:
    """``--node``: the ROS layer, so rclpy is imported only for this mode."""
    from . import node_e2e as mode

    return mode.run(args, argv)


if __name__ == "__main__":
    sys.exit(main())
