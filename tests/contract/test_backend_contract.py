"""The backend contract (``nubis.backends.base``), the same checks on every backend.

Each backend is driven only through the contract, as the reconcilers drive it: nodes; a replica
from a storage artifact (fetched by the control plane for backends without ``NodeFetchCapability``)
that becomes ready, answers with its key and stops; a gang started as one call whose ranks get
torchrun's env from their placement and whose exit codes come back. The Ray backend joins the
parametrisation with ``contract_backends.py``'s simulated cluster.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from nubis.backends.artifacts import Artifact, ArtifactCache
from nubis.backends.base import (
    Backend,
    GangSpec,
    JobsCapability,
    LogsCapability,
    NodeFetchCapability,
    ReplicaHandle,
    ReplicaProbe,
    ReplicaSpec,
)
from nubis.models.resources import Resources
from nubis.photon.runtime import REPLICA_KEY_HEADER
from nubis.storage import ObjectStore

from contract_backends import BACKENDS, Harness, make_harness
from polling import until_probe

pytestmark = pytest.mark.timeout(600)
WAIT_S = 120.0
PRINT_ENV = ("import os; keys = ('RANK', 'LOCAL_RANK', 'NODE_RANK', 'WORLD_SIZE', 'LOCAL_WORLD_SIZE', "
             "'MASTER_ADDR', 'MASTER_PORT', 'NUBIS_NODE_IPS'); "
             "print(' '.join(f'{k}={os.environ.get(k)}' for k in keys), flush=True)")


@pytest.fixture(params=BACKENDS)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    async with make_harness(request.param, request, tmp_path) as h:
        yield h


async def settled(backend: Backend, handle: ReplicaHandle, accept: Callable[[ReplicaProbe], bool],
                  what: str) -> ReplicaProbe:
    return await until_probe(backend, handle, accept, what, WAIT_S)


def replica_spec(h: Harness, replica_id: str) -> ReplicaSpec:
    spec = ReplicaSpec(replica_id=replica_id, deployment="echo", workspace="default", bundle=None,
                       content_hash=h.artifact.digest, artifact=h.artifact, node=h.node,
                       resources=Resources(cpu=0.25, memory="128Mi"))
    if not isinstance(h.backend, NodeFetchCapability):
        cache = ArtifactCache(ObjectStore.from_url(h.storage), h.tmp / "cache")
        spec = replace(spec, bundle=cache.fetch(h.artifact))
    return spec


async def test_nodes_are_reported(harness: Harness) -> None:
    nodes = await asyncio.to_thread(harness.backend.nodes)
    alive = [n for n in nodes if n.alive]
    assert alive and all(n.total.cpu >= n.free.cpu >= 0 for n in alive)
    assert harness.node is None or harness.node in {n.id for n in alive}


async def test_a_replica_from_storage_serves_with_its_key_and_stops(harness: Harness) -> None:
    backend = harness.backend
    handle = await backend.start_replica(replica_spec(harness, "contract-r1"))
    probe = await settled(backend, handle, lambda p: p.ready or not p.alive, "the replica is ready")
    assert probe.ready, probe.last_error_lines
    endpoint = handle.endpoint or probe.endpoint
    assert endpoint
    async with httpx.AsyncClient(timeout=10) as client:
        refused = await client.post(f"{endpoint}/echo", json={"text": "hi"})
        answer = await client.post(f"{endpoint}/echo", json={"text": "hi"},
                                   headers={REPLICA_KEY_HEADER: handle.ref["replica_key"]})
    assert refused.status_code == 401
    assert answer.status_code == 200 and "hi" in answer.text
    await backend.stop_replica(handle, grace_s=5)
    assert not (await backend.probe(handle)).alive
    await backend.stop_replica(handle, grace_s=5)  # stopping what is gone is not an error
    assert await backend.adopt(handle) is False


async def test_a_gang_gets_torchrun_s_env_from_its_placement_and_exit_codes(harness: Harness) -> None:
    backend = harness.backend
    assert isinstance(backend, JobsCapability) and isinstance(backend, LogsCapability)
    nodes = (harness.node,) * 2 if harness.node else ("local", "local")
    gang = GangSpec(job_id="contract-j1", attempt=1, workspace="default", nodes=nodes,
                    command=("python", "-c", f"{PRINT_ENV}; raise SystemExit(int(os.environ['RANK']) * 3)"),
                    resources=Resources(cpu=0.25, memory="128Mi"))
    handles = await backend.start_gang(gang)
    assert [h.replica_id for h in handles] == [gang.worker_id(0), gang.worker_id(1)]
    probes = [await settled(backend, h, lambda p: not p.alive, f"rank {rank} exits")
              for rank, h in enumerate(handles)]
    assert [p.exit_code for p in probes] == [0, 3]
    lines = [" ".join(backend.read_logs(h, tail=20)) for h in handles]
    for rank, text in enumerate(lines):
        assert f"RANK={rank} LOCAL_RANK={rank} NODE_RANK=0 WORLD_SIZE=2 LOCAL_WORLD_SIZE=2" in text, text
        assert "MASTER_PORT=None" not in text and "NUBIS_NODE_IPS=None" not in text
    for h in handles:
        await backend.stop_replica(h, grace_s=2)
    backend.forget_job(gang.job_id)


async def test_an_artifact_changed_in_storage_is_refused(harness: Harness) -> None:
    bad = Artifact(harness.artifact.workspace, "photons", harness.artifact.path, "0" * 64)
    spec = replace(replica_spec(harness, "contract-r2"), artifact=bad, content_hash=bad.digest)
    if not isinstance(harness.backend, NodeFetchCapability):
        pytest.skip("the control plane fetches for this backend: ArtifactCache's own tests cover it")
    handle = await harness.backend.start_replica(spec)
    probe = await settled(harness.backend, handle, lambda p: not p.alive, "the replica is refused")
    assert "expected 000000000000" in " ".join(probe.last_error_lines)
