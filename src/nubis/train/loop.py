"""One worker's training mechanics: the (DDP-wrapped) network, its optimiser, an epoch, an evaluation.

Data is small and already in memory: each worker holds the whole standardised training split and
a ``DistributedSampler`` gives it its share of every epoch (reshuffled by ``set_epoch``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from nubis.train.distributed import WorkerEnv

EVAL_BATCH = 1024


@dataclass
class Trainer:
    network: nn.Module
    """The bare module: what is saved, evaluated and exported."""
    model: nn.Module
    """What the forward pass goes through: the network wrapped in DDP when distributed."""
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    sampler: DistributedSampler
    device: torch.device
    amp: bool
    scaler: torch.amp.GradScaler | None
    seed: int
    rank: int


def build_trainer(
    network: nn.Module,
    *,
    x_train: np.ndarray,
    y_train: np.ndarray,
    worker: WorkerEnv,
    device: torch.device,
    batch_size: int,
    lr: float,
    amp: bool,
    seed: int,
) -> Trainer:
    """Move the network to ``device``, wrap it in DDP when distributed and set up the data."""
    network = network.to(device)
    model: nn.Module = network
    if worker.distributed:
        ids = [device.index] if device.type == "cuda" else None
        model = DistributedDataParallel(network, device_ids=ids)
    data = TensorDataset(torch.from_numpy(x_train), torch.from_numpy(y_train))
    sampler = DistributedSampler(
        data, num_replicas=worker.world_size, rank=worker.rank, shuffle=True, seed=seed
    )
    loader = DataLoader(data, batch_size=batch_size, sampler=sampler)
    use_scaler = amp and device.type == "cuda"
    return Trainer(
        network=network,
        model=model,
        optimizer=torch.optim.Adam(network.parameters(), lr=lr),
        loader=loader,
        sampler=sampler,
        device=device,
        amp=amp,
        scaler=torch.amp.GradScaler("cuda") if use_scaler else None,
        seed=seed,
        rank=worker.rank,
    )


def autocast(device: torch.device, *, enabled: bool) -> Any:
    """bfloat16 autocast on CPUs, float16 on GPUs; a no-op context when disabled."""
    if not enabled:
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_epoch(trainer: Trainer, *, epoch: int) -> tuple[float, int, int]:
    """One pass over this worker's share; returns (summed loss, correct predictions, samples)."""
    trainer.sampler.set_epoch(epoch)
    torch.manual_seed(trainer.seed * 1_000_003 + epoch * 1_009 + trainer.rank)  # dropout masks
    trainer.model.train()
    loss_fn = nn.CrossEntropyLoss()
    loss_sum, correct, seen = 0.0, 0, 0
    for xb, yb in trainer.loader:
        xb, yb = xb.to(trainer.device), yb.to(trainer.device)
        trainer.optimizer.zero_grad(set_to_none=True)
        with autocast(trainer.device, enabled=trainer.amp):
            logits = trainer.model(xb)
            loss = loss_fn(logits.float(), yb)
        if trainer.scaler is not None:
            trainer.scaler.scale(loss).backward()
            trainer.scaler.step(trainer.optimizer)
            trainer.scaler.update()
        else:
            loss.backward()
            trainer.optimizer.step()
        loss_sum += float(loss.detach()) * len(yb)
        correct += int((logits.detach().argmax(dim=1) == yb).sum())
        seen += len(yb)
    return loss_sum, correct, seen


def predict_classes(network: nn.Module, x: np.ndarray, *, device: torch.device) -> np.ndarray:
    """Class indices for standardised rows (eval mode, no autocast, batched)."""
    network.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(x), EVAL_BATCH):
            rows = torch.from_numpy(x[start:start + EVAL_BATCH]).to(device)
            out.append(network(rows).argmax(dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def cpu_state(network: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
