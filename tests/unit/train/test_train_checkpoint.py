"""Checkpoints round-trip with weights_only loading; the fault hook fires once, on the right rank."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nubis.train.checkpoint import (
    Checkpoint,
    checkpoint_dir,
    load_checkpoint,
    mark_failed,
    save_checkpoint,
    should_fail,
)


def test_round_trip_of_model_optimizer_and_history(tmp_path: Path) -> None:
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    saved = Checkpoint(epoch=4, model=net.state_dict(), optimizer=opt.state_dict(),
                       run_key={"model": "logreg"}, seed=5, history=[{"epoch": 4, "loss": 0.5}])
    path = save_checkpoint(tmp_path / "ck", saved)
    assert path == tmp_path / "ck" / "checkpoint.pt"
    assert [p.name for p in (tmp_path / "ck").iterdir()] == ["checkpoint.pt"]  # no temporary left
    loaded = load_checkpoint(tmp_path / "ck")
    assert loaded is not None
    assert (loaded.epoch, loaded.seed, loaded.run_key, loaded.history) == (4, 5, {"model": "logreg"},
                                                                            [{"epoch": 4, "loss": 0.5}])
    assert torch.equal(loaded.model["weight"], net.state_dict()["weight"])
    fresh = torch.optim.Adam(torch.nn.Linear(3, 2).parameters())
    fresh.load_state_dict(loaded.optimizer)
    assert fresh.state_dict()["state"][0]["step"] == 1


def test_missing_and_unreadable_checkpoints(tmp_path: Path) -> None:
    assert load_checkpoint(tmp_path) is None
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="is not a readable checkpoint"):
        load_checkpoint(tmp_path)


def test_checkpoint_dir_prefers_the_platforms(tmp_path: Path) -> None:
    assert checkpoint_dir(env={"NUBIS_CHECKPOINT_DIR": "/ck"}, out=tmp_path) == Path("/ck")
    assert checkpoint_dir(env={}, out=tmp_path) == tmp_path / "checkpoints"


@pytest.mark.parametrize(
    ("rank", "world", "epoch", "expected"),
    [(1, 2, 2, True), (0, 2, 2, False), (0, 1, 2, True), (1, 2, 1, False), (1, 2, 3, False)],
)
def test_fail_hook_targets_rank_1_or_the_only_rank(
    tmp_path: Path, rank: int, world: int, epoch: int, expected: bool
) -> None:
    env = {"NUBIS_TRAIN_FAIL_AT_EPOCH": "2"}
    assert should_fail(env=env, rank=rank, world_size=world, epoch=epoch, directory=tmp_path) is expected


def test_fail_hook_fires_only_on_the_first_attempt(tmp_path: Path) -> None:
    env = {"NUBIS_TRAIN_FAIL_AT_EPOCH": "1"}
    assert should_fail(env=env, rank=0, world_size=1, epoch=1, directory=tmp_path)
    mark_failed(tmp_path)
    assert (tmp_path / ".failed-once").exists()
    assert not should_fail(env=env, rank=0, world_size=1, epoch=1, directory=tmp_path)
    assert not should_fail(env={}, rank=0, world_size=1, epoch=1, directory=tmp_path / "x")
