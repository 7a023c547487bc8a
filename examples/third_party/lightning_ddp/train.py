"""A PyTorch Lightning script as its docs write one for torchrun: ``strategy="ddp"`` on the CPU, a small
regression model on random data. Lightning sees torchrun's TORCHELASTIC_* variables (a nubis job sets
them too) and joins the process group that the launcher's ranks describe instead of starting its own
processes. ``lightning_logs/`` (metrics and a checkpoint each epoch) goes under ``$NUBIS_OUTPUT_DIR``
when it is set, so it outlives the job, else under the cwd.

    torchrun --standalone --nproc_per_node=2 train.py --epochs 3
    nubis job submit --workers 2 -- python train.py --epochs 3
"""

import argparse
import os

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Regressor(L.LightningModule):
    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(20, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_epoch=True, sync_dist=True)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    L.seed_everything(0)
    x = torch.rand(args.samples, 20)
    data = TensorDataset(x, x.sum(dim=1, keepdim=True) / 10)
    trainer = L.Trainer(
        accelerator="cpu", devices=2, num_nodes=1, strategy="ddp", max_epochs=args.epochs,
        default_root_dir=os.environ.get("NUBIS_OUTPUT_DIR", "."), log_every_n_steps=10,
        enable_progress_bar=False,
    )
    trainer.fit(Regressor(), DataLoader(data, batch_size=args.batch_size))


if __name__ == "__main__":
    main()
