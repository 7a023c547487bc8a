"""Resources as the schedulers count them: ``Demand`` in cores, bytes and GPUs, compared as
integers (``Vec``: millicores, bytes, GPUs) so that float sums do not drift."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Vec = tuple[int, int, int]  # (millicores, bytes, GPUs)

GIB = 2**30


@dataclass(frozen=True, kw_only=True)
class Demand:
    """Resources: what a worker needs, and also what is free, used, or there in all."""

    cpu: float = 0.0  # cores
    memory: int = 0  # bytes
    gpu: int = 0

    def __post_init__(self) -> None:
        if not math.isfinite(self.cpu):
            raise ValueError(f"cpu must be a finite number of cores, got {self.cpu}")


def millicores(cpu: float) -> int:
    """Cores → millicores, rounded up; ``round`` first so that 0.1 * 3 stays 300."""
    return math.ceil(round(cpu * 1000, 6))


def format_resources(amounts: Vec, dims: Sequence[int] = (0, 1, 2)) -> str:
    """``(2000, 4 * 2**30, 1)`` → ``2 CPU, 4.00 GiB, 1 GPU`` (only the resources in ``dims``)."""
    parts = [FORMATS[i](max(0, amounts[i])) for i in dims]
    return ", ".join(parts) if parts else "nothing"


FORMATS = (
    lambda m: f"{m / 1000:g} CPU",
    lambda b: f"{b / GIB:.2f} GiB",
    lambda g: f"{g} GPU",
)
