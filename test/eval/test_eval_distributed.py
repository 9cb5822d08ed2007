"""Rank bookkeeping without launching torchrun: environment, per-rank device, stale states."""
from pathlib import Path

import pytest

from ovseg_ros.eval import distributed as D
from ovseg_ros.eval.cli import engine_config
from ovseg_ros.eval.state import StateError

TINY = str(Path(__file__).resolve().parents[1] / "configs" / "tiny_proxyclip.yaml")


def test_context_from_env(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert D.context_from_env() is None
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    ctx = D.context_from_env()
    assert (ctx.shard, ctx.local_rank, ctx.is_main) == ((3, 4), 1, False)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(StateError, match="inconsistent"):
        D.context_from_env()


def test_cuda_device_per_local_rank():
    ctx = D.DistContext(rank=5, world=8, local_rank=1)
    assert engine_config(TINY, ["device=cuda"], ctx)["device"] == "cuda:1"
    assert engine_config(TINY, ["device=cuda:0"], ctx)["device"] == "cuda:0"   # explicit: kept
    assert engine_config(TINY, [], ctx)["device"] == "cpu"
    assert engine_config(TINY, ["device=cuda"])["device"] == "cuda"


def test_states_of_another_split_are_found(tmp_path):
    for name in ("state_shard0of2.npz", "state_shard1of2.npz", "state_shard0of3.npz",
                 "state_merged.npz"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in D.other_world_states(tmp_path, 2)] == ["state_shard0of3.npz"]
    assert len(D.other_world_states(tmp_path, 3)) == 2


def test_rank_refuses_shard_option_and_states_of_another_split(tmp_path, monkeypatch, capsys):
    """Both are refused before the process group and the engine are set up."""
    import numpy as np
    import cv2

    from ovseg_ros.eval.cli import main

    (tmp_path / "i").mkdir()
    (tmp_path / "l").mkdir()
    cv2.imwrite(str(tmp_path / "i" / "a.png"), np.zeros((4, 4, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "l" / "a.png"), np.zeros((4, 4), np.uint8))
    (tmp_path / "c.txt").write_text("x\n")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    argv = ["dataset", "--config", TINY, "--kind", "folder", "--images", str(tmp_path / "i"),
            "--labels", str(tmp_path / "l"), "--classes", str(tmp_path / "c.txt"), "--out",
            str(tmp_path / "out"), "--quiet"]
    assert main([*argv, "--shard", "0/2"]) == 2
    assert "--shard and torchrun both split the items" in capsys.readouterr().err
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "state_shard1of3.npz").write_bytes(b"")
    assert main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "split 3 ways (state_shard1of3.npz), not 2" in err
    # a rank's own state is not overwritten without --resume (unless torchrun restarted it)
    (tmp_path / "out" / "state_shard1of3.npz").unlink()
    (tmp_path / "out" / "state_shard0of2.npz").write_bytes(b"")
    assert main(argv) == 2
    assert "state_shard0of2.npz exists from an earlier run; pass --resume" in \
        capsys.readouterr().err
