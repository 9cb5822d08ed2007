#!/usr/bin/env python3
"""bf16 against fp32 for a mask-classification engine (FC-CLIP, MAFT+) on photos.

With random weights these engines give every pixel the same class, so the label
agreement that ``ovseg-bench`` reports is 100 % whatever the arithmetic. This
script compares what the labels and panoptic segments are built from, per query:
the binarised masks (mask logit > 0), each query's best class, the relative
difference of the mask logits and the largest class-probability difference, on
scikit-image's photos resized to 640x480.

    python scripts/measure_bf16_fidelity.py fcclip --set fcclip.short_side=512 \
        --set fcclip.max_size=853 --threads 1

Weights are random unless the config names checkpoints (``--set`` KEY=VALUE).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("engine", choices=("fcclip", "maftplus"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--size", default="640x480", help="photo size WxH")
    args = p.parse_args(argv)

    import cv2
    import numpy as np
    import skimage.data
    import torch
    import yaml

    from ovseg_ros import load_segmenter

    torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.split("x"))
    cfg = {"engine": args.engine, "random_init": True, "num_threads": args.threads,
           "text_cache_dir": ""}
    for item in args.set:
        key, _, value = item.partition("=")
        cfg[key.strip()] = yaml.safe_load(value)
    segs = {prec: load_segmenter(dict(cfg, precision=prec)) for prec in ("fp32", "bf16")}
    rows = []
    for name in PHOTOS:
        rgb = cv2.resize(np.ascontiguousarray(getattr(skimage.data, name)()[..., :3]), (w, h),
                         interpolation=cv2.INTER_AREA)
        got = {}
        for prec, seg in segs.items():
            eng = seg.engine
            x, _ = eng.preprocess(rgb)
            t0 = time.perf_counter()
            with torch.inference_mode():
                outs = tuple(o.float() for o in eng.backend(x))
                cls = eng.classify(outs, seg.vocabulary)[0].softmax(-1)[:, :-1]
            got[prec] = (outs[0][0], cls, time.perf_counter() - t0)
        (ma, ca, ta), (mb, cb, tb) = got["fp32"], got["bf16"]
        rows.append({"photo": name,
                     "mask_pixels_equal_pct": 100 * float(((ma > 0) == (mb > 0)).float().mean()),
                     "query_class_equal_pct": 100 * float((ca.argmax(-1) == cb.argmax(-1))
                                                          .float().mean()),
                     "mask_logit_rel_diff": float((ma - mb).norm() / ma.norm()),
                     "max_class_prob_diff": float((ca - cb).abs().max()),
                     "fp32_s": ta, "bf16_s": tb})
        print(json.dumps(rows[-1]), flush=True)
    keys = [k for k in rows[0] if k != "photo"]
    print(json.dumps({"engine": args.engine, "mean": {k: float(np.mean([r[k] for r in rows]))
                                                      for k in keys},
                      "worst": {k: (min if k.endswith("pct") else max)(r[k] for r in rows)
                                for k in keys if not k.endswith("_s")}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
