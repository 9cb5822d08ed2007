"""``ovseg-eval``: evaluate an engine on rosbags or benchmark datasets, merge shards, bag -> bag.

    ovseg-eval bag      --config cfg.yaml --bag BAG --image-topic /cam/image \\
                        --label-topic /cam/labels --classes ade150 --out out/eval
    ovseg-eval dataset  --config cfg.yaml --kind ade150 --root data/ADEChallengeData2016 \\
                        --out out/ade --shard 0/4 [--limit 50] [--resume]
    ovseg-eval merge    out/ade/state_shard*of4.npz --out out/ade
    ovseg-eval infer-bag --config cfg.yaml --bag BAG --image-topic /cam/image --out BAG_OUT
    ovseg-eval infer-bags --config cfg.yaml --bags DIR --image-topic /cam/image \\
                        --out-dir OUT [--workers 2]
    ovseg-eval make-bag --images DIR [--labels DIR] --out BAG
    ovseg-eval tracking (--synthetic | --bag BAG --image-topic T --panoptic-topic P \
                        --segments-topic S) (--oracle [--noise split] | --config cfg.yaml) \
                        --out out/tracking

Under torchrun (``torchrun --nproc-per-node N -m ovseg_ros.eval dataset ...``)
every rank evaluates shard RANK/WORLD_SIZE and rank 0 writes the report of
the exactly reduced states (see ovseg_ros/eval/distributed.py).

One module per subcommand (its options and its run function); what they
share is in ``common``.

Cheap checks (paths, bag metadata, topics, class files, existing states)
run before the engine is built.

Errors (missing topics, wrong encodings, class files that do not fit the
labels, unreadable files) are printed as one line naming the problem, and
the exit status is 2. Results are written under temporary names and renamed
only when complete.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from ..bags import BagError
from ..datasets import DatasetError
from ..engine_args import CliError, engine_config  # noqa: F401  (ovseg_ros.tools.segment, tests)
from ..metrics import LabelError
from ..state import StateError
from . import bag, dataset, infer_bag, infer_bags, make_bag, merge, tracking
from .common import check_counts, load_engine  # noqa: F401  (load_engine: ovseg_ros.tools.segment)

PROG = "ovseg-eval"
#: the subcommands in the order of ``--help``; each module adds its parser and run function
COMMANDS = (bag, dataset, merge, infer_bag, infer_bags, make_bag, tracking)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return ap


def user_errors() -> tuple:
    from ...config import ConfigError
    from ...core.vocabulary import VocabularyError
    from ...segmenter import InputError

    from ..tracking_metrics import TrackingEvalError

    errs = [CliError, BagError, DatasetError, LabelError, StateError, ConfigError,
            VocabularyError, InputError, FileNotFoundError, TrackingEvalError]
    try:
        from ...weights import WeightsError
        errs.append(WeightsError)
    except ImportError:
        pass
    return tuple(errs)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_counts(args)
        return args.func(args)
    except user_errors() as exc:
        # one line, whatever the underlying library put in its message
        text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        print(f"{PROG}: error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; the saved state allows --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
