#!/usr/bin/env python3
"""Resident memory (RSS) of the node process across lifecycle transitions: before
configure, after configure (model loaded), after cleanup (model freed; the script checks that
nothing still references the Segmenter), and after a second
configure/cleanup cycle (no growth from one cycle to the next).

    python scripts/measure_node_memory.py                # tiny preset and cpu_realtime
    python scripts/measure_node_memory.py --preset tiny

Each preset runs in a fresh process (an in-process OvsegNode, no DDS peers needed), with
random weights of the preset's real architecture (no download). Prints a markdown table
with the machine, threads and load average.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PRESETS = {
    # the test/demo preset (ovseg_ros/presets.py)
    "tiny": {"proxyclip.clip_model": "ovseg-tiny-ViT",
             "proxyclip.vfm_model": "ovseg_tiny_vit_patch8", "proxyclip.short_side": 112,
             "proxyclip.crop_size": 112, "proxyclip.stride": 56},
    # config/cpu_realtime.yaml's models: CLIP ViT-B/16 + DINO ViT-S/16, random weights
    "cpu_realtime": {"proxyclip.clip_model": "ViT-B-16", "proxyclip.clip_pretrained": "",
                     "proxyclip.vfm_model": "vit_small_patch16_224.dino",
                     "proxyclip.short_side": 224, "proxyclip.crop_size": 224,
                     "proxyclip.stride": 112, "proxyclip.sliding_window": False},
}


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(preset: str) -> dict:
    import gc
    import weakref

    import rclpy
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from ovseg_ros.node import OvsegNode

    values = {"engine": "proxyclip", "device": "cpu", "num_threads": 1, "random_init": True,
              "text_cache_dir": "", "autostart": False, **PRESETS[preset]}
    rclpy.init(args=[])
    node = OvsegNode(parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
    out = {}
    gc.collect()
    out["before configure"] = rss_mib()
    for cycle in (1, 2):
        if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise RuntimeError(f"configure failed: {node._load_error}")
        out[f"after configure {cycle}"] = rss_mib()
        freed = weakref.ref(node._segmenter)
        node.trigger_cleanup()
        out[f"after cleanup {cycle}"] = rss_mib()
        if freed() is not None:    # something still holds the model: the figures would lie
            raise RuntimeError(f"cleanup left the Segmenter referenced: "
                               f"{[type(r).__name__ for r in gc.get_referrers(freed())]}")
    node.destroy_node()
    rclpy.try_shutdown()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), action="append")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child)))
        return 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    rows = {}
    for preset in args.preset or list(PRESETS):
        done = subprocess.run([sys.executable, __file__, "--child", preset], env=env,
                              capture_output=True, text=True, check=True)
        rows[preset] = json.loads(done.stdout.strip().splitlines()[-1])
    cpu = next((ln.split(":", 1)[1].strip() for ln in
                Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")),
               platform.processor())
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"{cpu}, {os.cpu_count()} CPUs visible, torch threads 1, fp32 weights, "
          f"load average {load}\n")
    cols = list(next(iter(rows.values())))
    print("| preset | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for preset, vals in rows.items():
        print(f"| {preset} | " + " | ".join(f"{vals[c]:.0f} MiB" for c in cols) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
