#!/usr/bin/env python3
"""Write the synthetic tracking sequence (moving, crossing and occluding objects with exact
instance ground truth) into data/sample, for `ovseg-eval tracking`:

    data/sample/tracking_bag/                 rosbag2 (MCAP), 10 Hz, 320x240
        /synthetic_tracks/image_raw   sensor_msgs/Image      rgb8
        /synthetic_tracks/instances   sensor_msgs/Image      32SC1 instance id, same id
                                                              in every frame (0 = none)
        /synthetic_tracks/segments    ovseg_ros/msg/Segments instance id -> class id
    data/sample/tracking_bag_classes.txt      class list (line i = class id i; stuff marked)
    data/sample/tracking_bag_occlusions.json  {frame index: [ids hidden there]}

The scene (ovseg_ros/eval/tracking_sequence.py): two discs of one class cross, the nearer
one hiding the other; a square passes fully behind a static pillar; a triangle crosses
diagonally and leaves through the bottom edge; a floor (stuff).

    python scripts/make_tracking_sequence.py [--out data/sample] [--frames 60] [--force]

    ovseg-eval tracking --bag data/sample/tracking_bag \\
        --image-topic /synthetic_tracks/image_raw --panoptic-topic /synthetic_tracks/instances \\
        --segments-topic /synthetic_tracks/segments \\
        --classes data/sample/tracking_bag_classes.txt \\
        --occlusions data/sample/tracking_bag_occlusions.json --oracle --out out/tracking
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ovseg_ros.eval.tracking_eval import (switch_frames, synthetic_frames,  # noqa: E402
                                          write_sequence_bag)
from ovseg_ros.eval.tracking_sequence import CLASSES, IS_THING  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(ROOT / "data" / "sample"))
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--force", action="store_true", help="rewrite an existing bag")
    args = ap.parse_args(argv)
    out = Path(args.out)
    bag = out / "tracking_bag"
    if bag.exists():
        if not args.force:
            print(f"{bag} exists (use --force to rewrite)")
            return 0
        shutil.rmtree(bag)
    out.mkdir(parents=True, exist_ok=True)
    frames = synthetic_frames(args.frames)
    write_sequence_bag(bag, frames)
    # the class-file format of ovseg_ros/core/class_names.py: name <TAB> thing|stuff
    (out / "tracking_bag_classes.txt").write_text(
        "".join(f"{n}\t{'thing' if t else 'stuff'}\n" for n, t in zip(CLASSES, IS_THING)))
    (out / "tracking_bag_occlusions.json").write_text(json.dumps(switch_frames(frames)))
    print(f"wrote {bag}: {len(frames)} frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
