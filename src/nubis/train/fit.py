"""``python -m nubis.train fit``: train a classifier on one or many workers and write its model directory.

Every worker loads the data and makes the same seeded split; rank 0 evaluates the held-out set
each epoch, reports metrics, writes the checkpoint and, at the end, the model directory.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nubis.train import distributed
from nubis.train.archs import DEFAULT_LR, build_network, default_arch_config
from nubis.train.checkpoint import (
    FAIL_ENV,
    FAIL_EXIT_CODE,
    Checkpoint,
    CheckpointError,
    checkpoint_dir,
    load_checkpoint,
    mark_failed,
    save_checkpoint,
    should_fail,
)
from nubis.train.data import Dataset, Split, load_dataset, standardization, stratified_split
from nubis.train.distributed import WorkerEnv
from nubis.train.evaluation import score_version
from nubis.train.loop import Trainer, build_trainer, cpu_state, predict_classes, train_epoch
from nubis.train.modeldir import (
    MODEL_JSON,
    RESULT_JSON,
    ModelInfo,
    ModelMetrics,
    Result,
    check_destination,
    save_heldout,
    staging_dir,
    write_json,
)
from nubis.train.predictor import open_predictor
from nubis.train.reporting import MetricReporter


@dataclass(frozen=True)
class FitConfig:
    model: str
    data: str
    epochs: int
    out: Path
    batch_size: int = 64
    lr: float | None = None
    amp: bool = False
    seed: int = 0
    label_column: str = "label"
    test_fraction: float = 0.2
    name: str | None = None

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.model]

    def run_key(self) -> dict[str, str]:
        """What must match for a checkpoint to be resumed (the epoch count may grow)."""
        return {
            "model": self.model,
            "data": self.data,
            "label_column": self.label_column,
            "test_fraction": repr(self.test_fraction),
            "seed": str(self.seed),
            "batch_size": str(self.batch_size),
            "lr": repr(self.learning_rate),
            "amp": str(self.amp),
        }

    def model_name(self) -> str:
        if self.name:
            return self.name
        stem = self.data.removeprefix("builtin:").rsplit("/", 1)[-1].rsplit(".", 1)[0]
        return re.sub(r"[^a-z0-9\-]+", "-", f"{stem}-{self.model}".lower()).strip("-")[:63] or "model"


@dataclass(frozen=True)
class Prepared:
    dataset: Dataset
    split: Split
    mean: np.ndarray
    std: np.ndarray
    arch_config: dict[str, Any]

    def standardized(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.std).astype(np.float32)


def prepare(config: FitConfig, *, env: Mapping[str, str]) -> Prepared:
    """Load and split the data and pick the architecture's config (the same on every worker)."""
    dataset = load_dataset(config.data, label_column=config.label_column, env=env)
    arch_config = default_arch_config(
        config.model,
        input_dim=dataset.input_dim,
        input_shape=list(dataset.input_shape) if dataset.input_shape else None,
        num_classes=len(dataset.classes),
    )
    split = stratified_split(dataset, test_fraction=config.test_fraction, seed=config.seed)
    mean, std = standardization(split.x_train)
    return Prepared(dataset=dataset, split=split, mean=mean, std=std, arch_config=arch_config)


def run_fit(config: FitConfig, *, env: Mapping[str, str]) -> int:
    """Train; rank 0 writes the model directory. Returns the process exit code."""
    worker = WorkerEnv.from_env(env)
    prepared = prepare(config, env=env)
    if worker.is_main:
        check_destination(config.out)
    device = distributed.pick_device(worker)
    threads_before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(distributed.cpu_threads(env))
    try:
        distributed.start(worker, device)
        fit_and_write(config, prepared=prepared, worker=worker, device=device, env=env)
        distributed.barrier(worker)  # rank 0 wrote the model: no rank leaves while another works
    finally:
        distributed.stop(worker)  # the trainer is gone by now (see distributed.stop)
        torch.set_num_threads(threads_before)  # for callers that train in-process (tests)
    return 0


def fit_and_write(
    config: FitConfig, *, prepared: Prepared, worker: WorkerEnv, device: torch.device, env: Mapping[str, str]
) -> None:
    """Build the (DDP) trainer, train, and on rank 0 write the model directory."""
    torch.manual_seed(config.seed)
    network = build_network(config.model, prepared.arch_config)
    trainer = build_trainer(
        network,
        x_train=prepared.standardized(prepared.split.x_train),
        y_train=prepared.split.y_train,
        worker=worker,
        device=device,
        batch_size=config.batch_size,
        lr=config.learning_rate,
        amp=config.amp,
        seed=config.seed,
    )
    history = train(config, prepared=prepared, trainer=trainer, worker=worker, env=env)
    if worker.is_main:
        metrics = write_model(config, prepared=prepared, network=trainer.network, history=history)
        print(f"held-out accuracy {metrics.accuracy:.4f} on {len(prepared.split.y_test)} rows; "
              f"model written to {config.out}", flush=True)


def resume(config: FitConfig, *, trainer: Trainer, directory: Path, worker: WorkerEnv) -> Checkpoint | None:
    """Load a matching checkpoint into the trainer (every rank), or None to start from scratch."""
    try:
        checkpoint = load_checkpoint(directory)
    except ValueError as exc:
        _say(worker, f"warning: {exc}; starting from scratch", err=True)
        return None
    if checkpoint is None:
        return None
    if checkpoint.run_key != config.run_key():
        changed = sorted(k for k, v in config.run_key().items() if checkpoint.run_key.get(k) != v)
        _say(worker, f"warning: ignoring the checkpoint in {directory}: it was written for other "
                     f"arguments ({', '.join(changed)}); starting from scratch", err=True)
        return None
    trainer.network.load_state_dict(checkpoint.model)
    trainer.optimizer.load_state_dict(checkpoint.optimizer)
    if trainer.scaler is not None and checkpoint.scaler:
        trainer.scaler.load_state_dict(checkpoint.scaler)
    _say(worker, f"resuming from epoch {checkpoint.epoch}")
    return checkpoint


def train(
    config: FitConfig, *, prepared: Prepared, trainer: Trainer, worker: WorkerEnv, env: Mapping[str, str]
) -> list[dict[str, Any]]:
    """Run the remaining epochs; returns the per-epoch metrics (complete on rank 0)."""
    directory = checkpoint_dir(env=env, out=config.out)
    checkpoint = resume(config, trainer=trainer, directory=directory, worker=worker)
    history = list(checkpoint.history) if checkpoint else []
    first = checkpoint.epoch + 1 if checkpoint else 1
    starts = distributed.sum_across([float(first)], worker=worker, device=trainer.device)
    if starts[0] != first * worker.world_size:
        raise CheckpointError(
            f"the workers found different checkpoints in {directory}: every worker of a job must see "
            "the same checkpoint folder (one machine, or a shared NUBIS_CHECKPOINT_DIR)"
        )
    x_test = prepared.standardized(prepared.split.x_test)
    reporter = MetricReporter(env) if worker.is_main else None
    started = time.perf_counter()
    try:
        for epoch in range(first, config.epochs + 1):
            record = run_epoch(trainer, epoch=epoch, epochs=config.epochs, worker=worker, started=started)
            if worker.is_main and reporter is not None:
                predicted = predict_classes(trainer.network, x_test, device=trainer.device)
                record["val_accuracy"] = round(float(np.mean(predicted == prepared.split.y_test)), 6)
                history.append(record)
                reporter.report(record)
                save_checkpoint(directory, _checkpoint(config, trainer=trainer, epoch=epoch, history=history))
            distributed.barrier(worker)  # the checkpoint is on disk before anyone goes on (or fails)
            fail_if_asked(env=env, worker=worker, epoch=epoch, directory=directory)
    finally:
        if reporter is not None:
            reporter.close()
    return history


def run_epoch(
    trainer: Trainer, *, epoch: int, epochs: int, worker: WorkerEnv, started: float
) -> dict[str, Any]:
    begin = time.perf_counter()
    local = train_epoch(trainer, epoch=epoch)
    loss_sum, correct, seen = distributed.sum_across(list(local), worker=worker, device=trainer.device)
    now = time.perf_counter()
    return {
        "epoch": epoch,
        "epochs": epochs,
        "loss": round(loss_sum / seen, 6),
        "accuracy": round(correct / seen, 6),
        "val_accuracy": None,
        "samples_per_s": round(seen / (now - begin), 1),
        "elapsed_s": round(now - started, 3),
    }


def _checkpoint(
    config: FitConfig, *, trainer: Trainer, epoch: int, history: list[dict[str, Any]]
) -> Checkpoint:
    return Checkpoint(
        epoch=epoch,
        model=cpu_state(trainer.network),
        optimizer=trainer.optimizer.state_dict(),
        run_key=config.run_key(),
        seed=config.seed,
        history=history,
        scaler=trainer.scaler.state_dict() if trainer.scaler is not None else None,
    )


def fail_if_asked(*, env: Mapping[str, str], worker: WorkerEnv, epoch: int, directory: Path) -> None:
    """The fault-injection test hook (``NUBIS_TRAIN_FAIL_AT_EPOCH``): exit 3 once, after the checkpoint."""
    if not should_fail(env=env, rank=worker.rank, world_size=worker.world_size, epoch=epoch,
                       directory=directory):
        return
    mark_failed(directory)
    print(f"{FAIL_ENV}={epoch}: rank {worker.rank} exits with code {FAIL_EXIT_CODE} (test hook)",
          file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(FAIL_EXIT_CODE)  # like a killed worker: no clean-up, no process-group shutdown


def write_model(
    config: FitConfig, *, prepared: Prepared, network: torch.nn.Module, history: list[dict[str, Any]]
) -> ModelMetrics:
    """Write ``--out``: weights, held-out set, model.json and result.json, scored as saved."""
    dataset, split = prepared.dataset, prepared.split
    with staging_dir(config.out) as tmp:
        torch.save(cpu_state(network), tmp / "model.pt")
        save_heldout(tmp, x=split.x_test, y=split.y_test)
        info = ModelInfo(
            format="torch-fp32",
            arch=config.model,  # type: ignore[arg-type]
            arch_config=prepared.arch_config,
            input_dim=dataset.input_dim,
            input_shape=list(dataset.input_shape) if dataset.input_shape else None,
            classes=dataset.classes,
            mean=prepared.mean.tolist(),
            std=prepared.std.tolist(),
            weights="model.pt",
            dataset=config.data,
            name=config.model_name(),
            epochs=history,
        )
        predictor = open_predictor(info, tmp, threads=1)
        metrics, _ = score_version(
            predictor.predict, x=split.x_test, y=split.y_test, classes=dataset.classes,
            size_bytes=(tmp / "model.pt").stat().st_size,
        )
        info = info.model_copy(update={"metrics": metrics})
        write_json(tmp / MODEL_JSON, info)
        write_json(tmp / RESULT_JSON, Result(metrics=metrics))
    return metrics


def _say(worker: WorkerEnv, message: str, *, err: bool = False) -> None:
    if worker.is_main:
        print(message, file=sys.stderr if err else sys.stdout, flush=True)
