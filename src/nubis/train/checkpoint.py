"""Per-epoch checkpoints: written atomically by rank 0, read by every rank to resume a retried job.

``checkpoint.pt`` holds only tensors, numbers, strings, lists and dicts (``torch.save`` of a plain
dict), so it loads with ``weights_only=True``. A checkpoint is resumed only when its run key (the
model, data and optimisation arguments) matches the new run's.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nubis.errors import BadRequestError

CHECKPOINT_FILE = "checkpoint.pt"
FAILED_MARKER = ".failed-once"
FAIL_ENV = "NUBIS_TRAIN_FAIL_AT_EPOCH"
FAIL_EXIT_CODE = 3


class CheckpointError(BadRequestError):
    """The workers of one job cannot agree on where to resume."""


@dataclass
class Checkpoint:
    epoch: int
    """Epochs completed (1-based): a resumed run starts at ``epoch + 1``."""
    model: dict[str, Any]
    optimizer: dict[str, Any]
    run_key: dict[str, str]
    seed: int
    history: list[dict[str, Any]] = field(default_factory=list)
    scaler: dict[str, Any] | None = None


def checkpoint_dir(*, env: Mapping[str, str], out: Path) -> Path:
    """``$NUBIS_CHECKPOINT_DIR`` (kept across retries of a job), else ``OUT/checkpoints``."""
    configured = env.get("NUBIS_CHECKPOINT_DIR")
    return Path(configured) if configured else Path(out) / "checkpoints"


def save_checkpoint(directory: Path, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint.pt`` atomically (temporary file in the same folder + ``os.replace``)."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / CHECKPOINT_FILE
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{CHECKPOINT_FILE}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(
                {
                    "epoch": checkpoint.epoch,
                    "model": checkpoint.model,
                    "optimizer": checkpoint.optimizer,
                    "run_key": checkpoint.run_key,
                    "rng": {"seed": checkpoint.seed},
                    "history": checkpoint.history,
                    "scaler": checkpoint.scaler,
                },
                fh,
            )
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return final


def load_checkpoint(directory: Path) -> Checkpoint | None:
    """The checkpoint in ``directory``, or None when there is none.

    Raises ValueError when the file exists but cannot be read as a checkpoint.
    """
    file = Path(directory) / CHECKPOINT_FILE
    if not file.is_file():
        return None
    try:
        raw = torch.load(file, map_location="cpu", weights_only=True)
        return Checkpoint(
            epoch=int(raw["epoch"]),
            model=raw["model"],
            optimizer=raw["optimizer"],
            run_key=dict(raw["run_key"]),
            seed=int(raw["rng"]["seed"]),
            history=list(raw["history"]),
            scaler=raw.get("scaler"),
        )
    except Exception as exc:  # unpickling errors have many types; all mean "not usable"
        raise ValueError(f"{file} is not a readable checkpoint: {type(exc).__name__}: {exc}") from None


def should_fail(*, env: Mapping[str, str], rank: int, world_size: int, epoch: int, directory: Path) -> bool:
    """The fault-injection hook: rank 1 (rank 0 alone) fails once, right after epoch K's checkpoint.

    Only when ``NUBIS_TRAIN_FAIL_AT_EPOCH=K`` is set, and only on the first attempt: the marker
    file ``.failed-once`` in the checkpoint folder records that it already failed.
    """
    at = env.get(FAIL_ENV, "").strip()
    if not at.isdigit() or int(at) != epoch:
        return False
    if rank != (1 if world_size > 1 else 0):
        return False
    return not (Path(directory) / FAILED_MARKER).exists()


def mark_failed(directory: Path) -> None:
    Path(directory).mkdir(parents=True, exist_ok=True)
    (Path(directory) / FAILED_MARKER).touch()
