"""Bag -> bag inference over many bags: a bounded pool of worker processes or torchrun ranks.

    ovseg-eval infer-bags --config cfg.yaml --bags recordings/ --image-topic /cam/image \\
        --out-dir labelled/ --workers 2

``--bags`` takes bag directories, folders holding bag directories (those with a
``metadata.yaml``, sorted by name) or ``.txt`` files listing bag paths (one a
line, ``#`` comments). Every bag is checked first (metadata, image topic,
output path) before any model is built. Then bag ``k`` (in that order) goes to
worker ``k % workers`` -- or, under torchrun, to rank ``k % WORLD_SIZE``; each
worker builds the engine once. Each output bag is written as
``<out>.partial`` and renamed when complete (``infer_bag``), so an output is
complete or absent; complete outputs from an earlier run are kept and
reported as ``exists`` unless ``--overwrite``. A bag that fails is reported
and the others go on. ``<out-dir>/summary.json`` (written by the main process
or rank 0) lists every bag with its status, frame count, output and error.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .bags import COMPRESSED_TYPE, IMAGE_TYPE, BagError
from .preflight import check_output_bag, check_prefix_free, require_topics
from .state import write_json_atomic


@dataclass
class BagJob:
    index: int
    bag: Path
    out: Path


def expand_bags(specs: Sequence[str]) -> List[Path]:
    """Bag directories from paths, folders of bags and list files, in a fixed order."""
    bags: List[Path] = []
    for spec in specs:
        p = Path(spec).expanduser()
        if p.is_file() and p.suffix == ".txt":
            for line in p.read_text().splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    q = Path(line).expanduser()
                    bags.append(q if q.is_absolute() else p.parent / q)
        elif p.is_dir() and (p / "metadata.yaml").is_file():
            bags.append(p)
        elif p.is_dir():
            found = sorted(d for d in p.iterdir() if d.is_dir() and (d / "metadata.yaml").is_file()
                           and not d.name.endswith(".partial"))
            if not found:
                raise BagError(f"{p} is neither a bag (no metadata.yaml) nor a folder holding "
                               "bags")
            bags.extend(found)
        elif p.suffix == ".mcap" and p.is_file():
            bags.append(p)
        else:
            raise BagError(f"bag {p} does not exist")
    if not bags:
        raise BagError("no bags given")
    seen: Dict[str, Path] = {}
    for b in bags:
        if b.name in seen:
            raise BagError(f"bags {seen[b.name]} and {b} have the same name {b.name!r}: their "
                           "outputs would collide in --out-dir")
        seen[b.name] = b
    return bags


def plan(bags: Sequence[Path], out_dir: Path, image_topic: str, prefix: str,
         overwrite: bool) -> List[BagJob]:
    """The jobs, after the cheap checks of every bag (no model is built yet)."""
    from .bag_infer import OUTPUT_TOPICS

    jobs = []
    for k, bag in enumerate(bags):
        require_topics(bag, [("image", image_topic, (IMAGE_TYPE, COMPRESSED_TYPE))])
        check_prefix_free(bag, prefix, OUTPUT_TOPICS)
        out = Path(out_dir) / bag.name
        check_output_bag(bag, out, overwrite=True)     # only "output == input" here
        jobs.append(BagJob(k, bag, out))
    return jobs


class _Worker:
    """One engine, many bags (lives in a worker process or a torchrun rank)."""

    def __init__(self, engine_args: dict, ctx=None):
        from .engine_args import engine_config, load_engine_from

        self.opts = engine_args
        cfg = engine_config(engine_args["config"], engine_args["set"], ctx)
        self.segmenter = load_engine_from(cfg, engine_args["classes"])

    def run_all(self, jobs: Sequence[BagJob]) -> List[dict]:
        return [self.run(j) for j in jobs]

    def run(self, job: BagJob) -> dict:
        from .bag_infer import infer_bag

        o = self.opts
        if job.out.exists() and not o["overwrite"]:
            return kept_record(job)
        rec = {"bag": str(job.bag), "output": str(job.out), "index": job.index}
        try:
            info = infer_bag(self.segmenter, job.bag, job.out, o["image_topic"],
                             prefix=o["prefix"], storage=o["storage"], overwrite=o["overwrite"],
                             limit=o["limit"], progress=False)
        except Exception as exc:    # reported per bag; the other bags go on
            rec.update(status="failed", frames=None,
                       error=" ".join(f"{type(exc).__name__}: {exc}".split()))
            return rec
        rec.update(status="ok", frames=info["frames"])
        return rec


def kept_record(job: BagJob) -> dict:
    """An output bag that exists: complete (outputs appear only by the final rename)."""
    return {"bag": str(job.bag), "output": str(job.out), "index": job.index, "status": "exists",
            "frames": None}


_WORKER: Optional[_Worker] = None


def _init_worker(engine_args: dict) -> None:
    global _WORKER
    _WORKER = _Worker(engine_args)


def _run_job(job: BagJob) -> dict:
    return _WORKER.run(job)


def run_jobs(jobs: Sequence[BagJob], engine_args: dict, workers: int) -> List[dict]:
    """All jobs with ``workers`` processes (1 = this process); records in job order."""
    if workers < 1:
        raise BagError(f"--workers must be >= 1, got {workers}")
    workers = min(workers, len(jobs))
    if workers == 1:
        w = _Worker(engine_args)
        return [w.run(j) for j in jobs]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # spawn: a fresh interpreter per worker (no forked torch thread pools)
    from concurrent.futures.process import BrokenProcessPool

    try:
        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                 initializer=_init_worker, initargs=(engine_args,)) as pool:
            return list(pool.map(_run_job, jobs))
    except BrokenProcessPool:
        # the worker printed its own traceback (e.g. missing weights) above
        raise BagError("a worker process stopped (the engine could not be built, or the "
                       "process was killed); complete outputs are kept, rerun to do the "
                       "rest") from None


def run_rank(jobs: Sequence[BagJob], engine_args: dict, ctx) -> Optional[List[dict]]:
    """Under torchrun: this rank's bags (k % world == rank); rank 0 gets all records."""
    import torch.distributed as dist

    from . import distributed as D

    from .engine_args import engine_config

    mine = [j for j in jobs if j.index % ctx.world == ctx.rank]
    D.init(ctx, engine_config(engine_args["config"], engine_args["set"], ctx)["device"])
    recs = _Worker(engine_args, ctx).run_all(mine) if mine else []
    gathered: List[Optional[list]] = [None] * ctx.world
    dist.all_gather_object(gathered, recs)
    if not ctx.is_main:
        return None
    return sorted((r for part in gathered for r in part), key=lambda r: r["index"])


def write_summary(records: Sequence[dict], out_dir: Path) -> dict:
    counts: Dict[str, int] = {}
    for r in records:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    summary = {"bags": len(records), "counts": counts,
               "complete": all(r["status"] in ("ok", "exists") for r in records),
               "records": list(records)}
    write_json_atomic(Path(out_dir) / "summary.json", summary)
    return summary


def print_summary(summary: dict, out_dir: Path, stream=sys.stdout) -> None:
    for r in summary["records"]:
        detail = r.get("error") or (f"{r['frames']} frames" if r.get("frames") is not None
                                    else "kept from an earlier run")
        print(f"{r['status']:7s} {r['bag']} -> {r['output']}: {detail}", file=stream)
    c = summary["counts"]
    print(f"{summary['bags']} bags: " + ", ".join(f"{n} {k}" for k, n in sorted(c.items()))
          + f"  -> {Path(out_dir) / 'summary.json'}", file=stream)


__all__ = ["BagJob", "expand_bags", "plan", "kept_record", "run_jobs", "run_rank", "write_summary",
           "print_summary"]
