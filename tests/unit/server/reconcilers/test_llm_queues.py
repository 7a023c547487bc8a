"""Reading LLM replicas' queues for the autoscaler: /metrics with the replica key, one sample a second."""

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from nubis.models.deployments import AutoscalingSpec
from nubis.photon.runtime import REPLICA_KEY_HEADER
from nubis.server.reconcilers.llm_queues import QueueSampler, ReplicaTarget, parse_queue
from nubis.server.scheduler.autoscaling import queue_load

SPEC = AutoscalingSpec(max_replicas=3, target_waiting=2)

EXPOSITION = """# HELP nubis_llm_requests_waiting Requests waiting for a slot in the batch
# TYPE nubis_llm_requests_waiting gauge
nubis_llm_requests_waiting{model="smol"} 3.0
# TYPE nubis_llm_requests_running gauge
nubis_llm_requests_running{model="smol"} 4.0
nubis_llm_prompt_tokens_total{model="smol"} 120.0
"""


def test_parse_queue_reads_the_two_gauges() -> None:
    reading = parse_queue(EXPOSITION)
    assert reading is not None and (reading.waiting, reading.running) == (3.0, 4.0)
    assert parse_queue("nubis_requests_total 5\n") is None  # not an LLM replica: no data


async def serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def replica() -> AsyncIterator[str]:
    async def metrics(request: web.Request) -> web.Response:
        if request.headers.get(REPLICA_KEY_HEADER) != "k1":
            return web.Response(status=403)
        return web.Response(text=EXPOSITION)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    async for url in serve(app):
        yield url


async def test_one_sample_per_interval_from_every_ready_replica(replica: str) -> None:
    sampler = QueueSampler(interval_s=1.0)
    targets = [ReplicaTarget(replica, "k1"), ReplicaTarget(replica, "k1")]
    await sampler.sample({"d1": (SPEC, targets)}, now=100.0)
    await sampler.sample({"d1": (SPEC, targets)}, now=100.5)  # not due yet
    await sampler.sample({"d1": (SPEC, targets)}, now=101.0)
    # 6 waiting over 2 busy replicas: max(6, 2 × 2)
    assert sampler.samples("d1") == ((100.0, 6.0), (101.0, 6.0))


async def test_a_replica_without_its_key_or_gone_gives_no_sample(replica: str) -> None:
    sampler = QueueSampler()
    await sampler.sample({"d1": (SPEC, [ReplicaTarget(replica, "wrong")]),
                          "d2": (SPEC, [ReplicaTarget("http://127.0.0.1:9", None)]),
                          "d3": (SPEC, [])}, now=1.0)
    assert sampler.samples("d1") == sampler.samples("d2") == sampler.samples("d3") == ()


def test_deleted_deployments_are_forgotten() -> None:
    sampler = QueueSampler()
    sampler.record("d1", (1.0, 2.0))
    sampler.record("d2", (1.0, 2.0))
    sampler.forget_others({"d2"})
    assert sampler.samples("d1") == () and sampler.samples("d2") == ((1.0, 2.0),)


def test_parse_queue_reads_the_generated_tokens_counter() -> None:
    reading = parse_queue(EXPOSITION + 'nubis_llm_generation_tokens_total{model="smol"} 250.0\n')
    assert reading is not None and reading.generated == 250.0
    assert parse_queue('nubis_llm_generation_tokens_total{model="smol"} 250.0\n') is None  # no gauges


@pytest.fixture
async def generating() -> AsyncIterator[tuple[str, list[float]]]:
    """A replica with nothing waiting whose generated-tokens counter the test sets."""
    total = [0.0]

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=f"nubis_llm_requests_waiting 0\nnubis_llm_requests_running 1\n"
                                 f"nubis_llm_generation_tokens_total {total[0]}\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    async for url in serve(app):
        yield url, total


async def test_tokens_per_second_is_a_second_signal(generating: tuple[str, list[float]]) -> None:
    url, total = generating
    spec = AutoscalingSpec(max_replicas=3, target_waiting=2, target_tokens_per_s=20)
    sampler = QueueSampler(interval_s=1.0)
    wanted = {"d1": (spec, [ReplicaTarget(url, None)])}
    total[0] = 1_000.0  # generated before the first reading: no rate yet, one busy replica
    await sampler.sample(wanted, now=10.0)
    total[0] = 1_050.0  # 50 tokens/s over 1 s: 2.5 replicas' worth at 20 tokens/s each
    await sampler.sample(wanted, now=11.0)
    total[0] = 10.0  # the replica restarted: its counter went back, no rate this round
    await sampler.sample(wanted, now=12.0)
    assert sampler.samples("d1") == ((10.0, 2.0), (11.0, 5.0), (12.0, 2.0))
    waiting_only = AutoscalingSpec(max_replicas=3, target_waiting=2)
    assert queue_load(waiting_only, waiting=0, busy_replicas=1, tokens_per_s=50) == 2.0
