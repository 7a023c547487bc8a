"""The autoscaling signal of LLM deployments: each ready replica's waiting and running requests.

The deployment reconciler calls :meth:`QueueSampler.sample` once a round with the LLM deployments'
ready replicas; at most once per ``interval_s`` per deployment it reads every replica's ``/metrics``
(with the replica's key, as the gateway sends it) and records one load sample,
``queue_load(waiting, busy replicas, tokens/s)``: tokens/s is the rate of each replica's
``nubis_llm_generation_tokens_total`` between two readings, summed (a replica read for the first
time, or whose counter went back because it restarted, adds nothing that round). A replica that
does not answer is left out of that sample; when none answers there is no sample (the policy
holds: no data is not no load). Soft state, as the gateway's load book: a restart starts from an
empty history.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from nubis.http_clients import async_client
from nubis.models.deployments import AutoscalingSpec
from nubis.photon.runtime import REPLICA_KEY_HEADER
from nubis.server.scheduler.autoscaling import LoadSample, queue_load

log = logging.getLogger("nubis.reconciler")

WAITING = "nubis_llm_requests_waiting"
RUNNING = "nubis_llm_requests_running"
GENERATED = "nubis_llm_generation_tokens_total"
SCRAPE_TIMEOUT_S = 2.0
WINDOW_S = 600.0


@dataclass(frozen=True)
class ReplicaTarget:
    endpoint: str
    key: str | None


@dataclass(frozen=True)
class QueueReading:
    waiting: float
    running: float
    generated: float = 0.0  # tokens generated since the replica started


def parse_queue(text: str) -> QueueReading | None:
    """The two gauges and the generated-tokens counter from a Prometheus text exposition (each summed
    over its labels); None when the replica exports neither gauge (not an LLM replica, or an older one)."""
    values = {WAITING: 0.0, RUNNING: 0.0, GENERATED: 0.0}
    seen = False
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_part, _, rest = line.partition(" ")
        name = name_part.split("{", 1)[0]
        if name not in values:
            continue
        try:
            values[name] += float(rest.split()[0])
        except (ValueError, IndexError):
            continue
        seen = seen or name != GENERATED
    return QueueReading(values[WAITING], values[RUNNING], values[GENERATED]) if seen else None


async def read_queue(client: httpx.AsyncClient, target: ReplicaTarget) -> QueueReading | None:
    headers = {REPLICA_KEY_HEADER: target.key} if target.key else {}
    try:
        response = await client.get(f"{target.endpoint}/metrics", headers=headers)
    except httpx.HTTPError:
        return None
    return parse_queue(response.text) if response.status_code == 200 else None


class QueueSampler:
    """Load samples of LLM deployments, by deployment id."""

    def __init__(self, *, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self._samples: dict[str, deque[LoadSample]] = {}
        self._last: dict[str, float] = {}
        self._generated: dict[str, dict[str, tuple[float, float]]] = {}  # id → endpoint → (t, total)

    def samples(self, deployment_id: str) -> tuple[LoadSample, ...]:
        return tuple(self._samples.get(deployment_id, ()))

    def forget_others(self, deployment_ids: set[str]) -> None:
        for gone in (set(self._samples) | set(self._last)) - deployment_ids:
            self._samples.pop(gone, None)
            self._last.pop(gone, None)
            self._generated.pop(gone, None)

    async def sample(self, wanted: dict[str, tuple[AutoscalingSpec, Sequence[ReplicaTarget]]],
                     now: float | None = None) -> None:
        """Scrape the deployments in ``wanted`` (id → autoscaling spec, ready replicas) that are due."""
        now = time.time() if now is None else now
        due = {d: w for d, w in wanted.items() if now - self._last.get(d, -1e18) >= self.interval_s}
        if not due:
            return
        async with async_client(timeout=SCRAPE_TIMEOUT_S) as client:
            readings = await asyncio.gather(*(
                asyncio.gather(*(read_queue(client, t) for t in targets)) for _, targets in due.values()))
        for (deployment_id, (spec, targets)), found in zip(due.items(), readings, strict=True):
            self._last[deployment_id] = now
            answered = [(t.endpoint, r) for t, r in zip(targets, found, strict=True) if r is not None]
            if not answered:  # none ready, or none exported its queue: no data, not no load
                log.debug("no replica of LLM deployment %s exported its queue", deployment_id)
                continue
            waiting = sum(r.waiting for _, r in answered)
            busy = sum(1 for _, r in answered if r.running > 0 or r.waiting > 0)
            rate = self._tokens_per_s(deployment_id, answered, now)
            self.record(deployment_id, (now, queue_load(spec, waiting=waiting, busy_replicas=busy,
                                                        tokens_per_s=rate)))

    def _tokens_per_s(self, deployment_id: str, answered: list[tuple[str, QueueReading]],
                      now: float) -> float:
        before = self._generated.get(deployment_id, {})
        rate = 0.0
        for endpoint, reading in answered:
            if endpoint in before:
                t, total = before[endpoint]
                if now > t and reading.generated >= total:
                    rate += (reading.generated - total) / (now - t)
        self._generated[deployment_id] = {e: (now, r.generated) for e, r in answered}
        return rate

    def record(self, deployment_id: str, sample: LoadSample) -> None:
        book = self._samples.setdefault(deployment_id, deque())
        book.append(sample)
        while book and book[0][0] < sample[0] - WINDOW_S:
            book.popleft()
