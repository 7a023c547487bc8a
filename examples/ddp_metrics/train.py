"""A small DDP training job that reports a metric record each epoch (the console draws them live).

    nubis job submit --workers 2 --workdir examples/ddp_metrics -- python train.py --epochs 12

Each rank trains a linear model on its shard of a synthetic regression set (gloo, CPU) and prints
a line per epoch; rank 0 reports loss and R² with ``nubis.train.reporting.MetricReporter``, which
POSTs to ``/api/v1/jobs/{id}/metrics`` inside a job (and only prints elsewhere).
"""

import argparse
import os
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from nubis.train.reporting import MetricReporter


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--epoch-seconds", type=float, default=0.5, help="pause per epoch, to watch it")
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    x = torch.randn(4096, 16)
    y = x @ torch.randn(16, 1) + 0.1 * torch.randn(4096, 1)
    mine = slice(rank, None, world)
    model = DistributedDataParallel(torch.nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    reporter = MetricReporter(os.environ) if rank == 0 else None
    for epoch in range(1, args.epochs + 1):
        started = time.perf_counter()
        for batch in torch.split(torch.arange(len(x[mine])), 256):
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x[mine][batch]), y[mine][batch])
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            total = torch.nn.functional.mse_loss(model(x), y)
            r2 = 1 - total / y.var()
        print(f"rank {rank}/{world} epoch {epoch}/{args.epochs} loss {total.item():.4f}", flush=True)
        if reporter is not None:
            reporter.report({"epoch": epoch, "epochs": args.epochs, "loss": round(total.item(), 6),
                             "r2": round(r2.item(), 6)})
        time.sleep(max(0.0, args.epoch_seconds - (time.perf_counter() - started)))
    if reporter is not None:
        reporter.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
