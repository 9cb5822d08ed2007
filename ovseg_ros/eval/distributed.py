"""Evaluation under ``torchrun``: one shard per rank, states reduced with torch.distributed.

torchrun starts ``WORLD_SIZE`` processes and gives each ``RANK`` and
``LOCAL_RANK``. Rank ``r`` of ``w`` evaluates exactly the items of shard
``r/w`` (position ``p`` with ``p % w == r``), so every item is evaluated once,
ranks may get unequal numbers of items (or none), and each rank keeps its own
resumable state file ``state_shard<r>of<w>.npz`` -- the same file ``--shard r/w``
writes, so ``ovseg-eval merge`` of those files gives the same result.

At the end every rank joins one reduction: the item keys and flags travel with
``all_gather_object``; the metric states are summed by torchmetrics' own
``Metric.sync`` (``dist_reduce_fx="sum"`` states, gloo for CPU tensors, NCCL
for CUDA ones). All states are integers (confusion counts, TP/FP/FN, IoU sums
in units of 2**-53), so the sum is exact and the report of rank 0 equals that
of a single-process run bit for bit. A rank that dies makes torchrun stop the
others before the reduction, so no report is written; rerunning with
``--resume`` continues every rank from its state file.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import List, Optional


from .metrics import load_metric_arrays
from .state import EvalState, StateError

#: a rank that waits longer than this for the others gives up (torchrun normally stops the
#: whole group much earlier when one rank fails)
TIMEOUT = timedelta(hours=2)


@dataclass
class DistContext:
    rank: int
    world: int
    local_rank: int
    backend: Optional[str] = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> tuple:
        return self.rank, self.world


def context_from_env() -> Optional[DistContext]:
    """The torchrun rank of this process, or None when not started by torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise StateError("RANK / WORLD_SIZE / LOCAL_RANK must be integers (set by torchrun)") \
            from None
    if world < 1 or not 0 <= rank < world:
        raise StateError(f"RANK {rank} / WORLD_SIZE {world} are inconsistent")
    return DistContext(rank, world, local)


def restart_count() -> int:
    """How often torchrun (``--max-restarts``) restarted the ranks of this job."""
    try:
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def rank_device(device: str, ctx: DistContext) -> str:
    """``cuda`` becomes ``cuda:<LOCAL_RANK>``: one GPU per rank of a node."""
    return f"cuda:{ctx.local_rank}" if device == "cuda" else device


def init(ctx: DistContext, device: str) -> None:
    """Join the process group: gloo for CPU tensors, plus NCCL for CUDA tensors."""
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
        ctx.backend = "cpu:gloo,cuda:nccl"
    else:
        ctx.backend = "gloo"
    dist.init_process_group(backend=ctx.backend, timeout=TIMEOUT)


def close() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _header(state: EvalState) -> dict:
    return {"classes": state.classes, "is_thing": state.is_thing, "source": state.source,
            "shard": list(state.shard), "done": list(state.done), "finished": state.finished,
            "panoptic": state.panoptic, "extra": state.extra, "engine": state.engine}


def _summed_arrays(metric, device: str) -> dict:
    """The metric's states summed over all ranks with torchmetrics' sync; the metric itself
    keeps its own (local) states afterwards."""
    import torch.distributed as dist

    metric.to(device)
    metric.sync(process_group=None, distributed_available=dist.is_initialized)
    summed = {k: getattr(metric, k).detach().cpu().numpy().copy() for k in metric._defaults}
    metric.unsync()
    metric.to("cpu")
    return summed


def reduce_states(state: EvalState, ctx: DistContext, device: str) -> Optional[EvalState]:
    """Collective: every rank calls it. Rank 0 gets the sum of all ranks' states (checked
    like ``ovseg-eval merge``: one evaluation, no item twice); the other ranks get None."""
    import torch.distributed as dist

    headers: List[Optional[dict]] = [None] * ctx.world
    dist.all_gather_object(headers, _header(state))
    sync_dev = device if device.startswith("cuda") else "cpu"
    sem = _summed_arrays(state.semantic_metric, sync_dev)
    pan = _summed_arrays(state.panoptic_metric, sync_dev)
    if not ctx.is_main:
        return None
    parts = [EvalState(**h) for h in headers]     # bookkeeping only: their metrics are empty
    merged = EvalState.merge(parts, [f"rank {h['shard'][0]}" for h in headers])
    load_metric_arrays(merged.semantic_metric, sem)
    load_metric_arrays(merged.panoptic_metric, pan)
    merged.extra["ranks"] = ctx.world
    return merged


def other_world_states(out_dir: Path, world: int) -> List[Path]:
    """State files in ``out_dir`` written by runs with another number of shards/ranks."""
    import re

    found = []
    for p in sorted(Path(out_dir).glob("state_shard*of*.npz")):
        m = re.fullmatch(r"state_shard(\d+)of(\d+)\.npz", p.name)
        if m and int(m.group(2)) != world:
            found.append(p)
    return found


__all__ = ["DistContext", "context_from_env", "restart_count", "rank_device", "init", "close",
           "reduce_states", "other_world_states"]
