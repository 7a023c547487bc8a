"""The local backend with real photon server processes: start, ready, call, stop, crash, adopt."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from nubis.backends import (
    Backend,
    GpuCapability,
    LocalBackend,
    LogsCapability,
    ReplicaHandle,
    ReplicaProbe,
    ReplicaSpec,
)
from nubis.errors import EnvironmentPendingError, NoCapacityError, PhotonLoadError
from nubis.models.resources import Resources
from nubis.photon.build import build_bundle

from servers import EXAMPLES, FIXTURES

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")

ENV_PHOTON = '''
import os
import nubis


class Env(nubis.Photon):
    """Answers with one of its environment variables."""

    requirements = REQUIREMENTS

    @nubis.handler
    def env(self, name: str) -> str:
        return os.environ.get(name, "<unset>")
'''
GIB = 2**30


def photon_bundle(folder: Path, source: str, *, requirements: list[str] | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "photon.py").write_text(source.replace("REQUIREMENTS", repr(requirements or [])))
    bundle, _ = build_bundle(str(folder), folder.parent / f"{folder.name}.photon")
    return bundle


@pytest.fixture(scope="module")
def echo_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bundle, _ = build_bundle(str(EXAMPLES / "echo"), tmp_path_factory.mktemp("echo") / "echo.photon")
    return bundle


@pytest.fixture(scope="module")
def env_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return photon_bundle(tmp_path_factory.mktemp("photons") / "env", ENV_PHOTON)


def spec_for(bundle: Path, replica_id: str, *, env: dict[str, str] | None = None,
             **resources: object) -> ReplicaSpec:
    return ReplicaSpec(
        replica_id=replica_id,
        deployment="echo",
        workspace="default",
        bundle=bundle,
        content_hash="",
        env=env or {},
        resources=Resources(**{"cpu": 0.5, "memory": "256Mi", **resources}),
    )


class Replicas:
    """Starts replicas on backends and stops every one of them at the end of the test."""

    def __init__(self) -> None:
        self.started: list[tuple[Backend, ReplicaHandle]] = []

    async def start(self, backend: Backend, spec: ReplicaSpec) -> ReplicaHandle:
        handle = await backend.start_replica(spec)
        self.started.append((backend, handle))
        return handle

    async def stop_all(self) -> None:
        for backend, handle in self.started:
            await backend.stop_replica(handle, grace_s=5)


@pytest.fixture
async def replicas() -> AsyncIterator[Replicas]:
    started = Replicas()
    try:
        yield started
    finally:
        await started.stop_all()


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


async def wait_ready(backend: Backend, handle: ReplicaHandle, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = await backend.probe(handle)
        if not probe.alive:
            raise AssertionError(f"replica exited ({probe.exit_code}):\n" + "\n".join(probe.last_error_lines))
        if probe.ready:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{handle.replica_id} not ready after {timeout} s")


async def wait_exited(backend: Backend, handle: ReplicaHandle, timeout: float = 60) -> ReplicaProbe:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = await backend.probe(handle)
        if not probe.alive:
            return probe
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{handle.replica_id} still alive after {timeout} s")


def keyed(handle: ReplicaHandle) -> dict[str, str]:
    """The header a replica demands (the gateway sends it; a direct call must too)."""
    return {"X-Nubis-Replica-Key": handle.ref["replica_key"]}


async def call_env(handle: ReplicaHandle, name: str) -> str:
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.post(f"{handle.endpoint}/env", json={"name": name}, headers=keyed(handle))
    r.raise_for_status()
    return r.json()


def pid_exists(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


async def test_start_probe_call_stop(state_dir: Path, echo_bundle: Path, replicas: Replicas) -> None:
    backend = LocalBackend(state_dir, cpus=2, memory=4 * GIB, gpus=[])
    handle = await replicas.start(backend, spec_for(echo_bundle, "echo-1", cpu=1.5, memory="1Gi"))
    assert handle.backend == "local"
    assert handle.endpoint is not None and handle.endpoint.startswith("http://127.0.0.1:")
    assert backend.free().cpu == 0.5
    assert backend.free().memory == 3 * GIB

    await wait_ready(backend, handle)
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.post(f"{handle.endpoint}/echo", json={"text": "hi"}, headers=keyed(handle))
    assert r.json() == {"text": "hi"}

    pid = int(handle.ref["pid"])
    await backend.stop_replica(handle, grace_s=10)
    assert not pid_exists(pid)
    probe = await backend.probe(handle)
    assert (probe.alive, probe.ready, probe.exit_code) == (False, False, 0)  # drained on SIGTERM
    assert backend.free() == backend.capacity()
    await backend.stop_replica(handle, grace_s=1)  # already gone: not an error


async def test_init_failure_shows_exit_code_and_error_lines(
    tmp_path: Path, state_dir: Path, replicas: Replicas
) -> None:
    bundle, _ = build_bundle(str(FIXTURES / "photons" / "broken"), tmp_path / "broken.photon")
    backend = LocalBackend(state_dir, cpus=2, memory=4 * GIB, gpus=[])
    handle = await replicas.start(backend, spec_for(bundle, "broken-1"))
    probe = await wait_exited(backend, handle)
    assert (probe.alive, probe.ready, probe.exit_code) == (False, False, 1)
    assert any("weights file 'missing.bin' not found" in line for line in probe.last_error_lines)
    assert len(probe.last_error_lines) <= 20
    assert backend.free() == backend.capacity()  # released on exit, without a stop


async def test_killed_replica_is_reported_dead(
    state_dir: Path, echo_bundle: Path, replicas: Replicas
) -> None:
    backend = LocalBackend(state_dir, cpus=2, memory=4 * GIB, gpus=[])
    handle = await replicas.start(backend, spec_for(echo_bundle, "echo-kill"))
    await wait_ready(backend, handle)
    os.kill(int(handle.ref["pid"]), signal.SIGKILL)
    probe = await wait_exited(backend, handle)
    assert probe.exit_code == -signal.SIGKILL
    assert probe.last_error_lines  # the server's start-up lines
    assert backend.free() == backend.capacity()

    again = await replicas.start(backend, spec_for(echo_bundle, "echo-kill"))  # the id is free again
    await wait_ready(backend, again)
    started = [line for line in backend.read_logs(again) if "photon echo on http" in line]
    assert len(started) == 2  # the log is appended to, not truncated
    await backend.stop_replica(handle, grace_s=1)  # the old handle: leaves the new process alone
    assert (await backend.probe(again)).ready
    assert (await backend.probe(handle)).exit_code == -signal.SIGKILL
    assert backend.free().cpu == backend.capacity().cpu - 0.5


async def test_second_replica_that_does_not_fit_is_refused(
    state_dir: Path, echo_bundle: Path, replicas: Replicas
) -> None:
    backend = LocalBackend(state_dir, cpus=1, memory=4 * GIB, gpus=[])
    first = await replicas.start(backend, spec_for(echo_bundle, "cpu-1", cpu=0.75))
    with pytest.raises(NoCapacityError) as caught:
        await replicas.start(backend, spec_for(echo_bundle, "cpu-2", cpu=0.75))
    assert caught.value.message == "needs 0.75 CPU, 0.25 free"
    assert not backend.log_path("cpu-2").exists()  # nothing was launched
    await backend.stop_replica(first, grace_s=10)
    second = await replicas.start(backend, spec_for(echo_bundle, "cpu-2", cpu=0.75))
    await wait_ready(backend, second)


async def test_gpus_are_given_one_each_through_cuda_visible_devices(
    state_dir: Path, env_bundle: Path, replicas: Replicas, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NUBIS_FAKE_GPUS", "2")
    backend = LocalBackend(state_dir, cpus=4, memory=8 * GIB)
    assert backend.capacity().gpus == (0, 1)
    assert isinstance(backend, GpuCapability)
    handles = [await replicas.start(backend, spec_for(env_bundle, f"gpu-{i}", gpu=1)) for i in range(2)]
    with pytest.raises(NoCapacityError, match="needs 1 GPU, 0 free"):
        await replicas.start(backend, spec_for(env_bundle, "gpu-2", gpu=1))
    cpu_only = await replicas.start(backend, spec_for(env_bundle, "cpu-only"))
    for handle in [*handles, cpu_only]:
        await wait_ready(backend, handle)
    seen = [await call_env(h, "CUDA_VISIBLE_DEVICES") for h in [*handles, cpu_only]]
    assert seen == ["0", "1", ""]
    assert [backend.gpus_of(h) for h in handles] == [(0,), (1,)]


async def test_control_plane_secrets_stay_out_and_spec_env_goes_in(
    state_dir: Path, env_bundle: Path, replicas: Replicas, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NUBIS_TOKEN", "admin-token")
    monkeypatch.setenv("NUBIS_MASTER_KEY", "master")
    backend = LocalBackend(state_dir, cpus=2, memory=4 * GIB, gpus=[])
    handle = await replicas.start(
        backend, spec_for(env_bundle, "env-1", env={"API_KEY": "user-secret", "NUBIS_HOME": "/x"})
    )
    await wait_ready(backend, handle)
    assert await call_env(handle, "NUBIS_TOKEN") == "<unset>"
    assert await call_env(handle, "NUBIS_MASTER_KEY") == "<unset>"
    assert await call_env(handle, "API_KEY") == "user-secret"
    assert await call_env(handle, "NUBIS_REPLICA_ID") == "env-1"
    assert await call_env(handle, "NUBIS_REPLICA_KEY") == "<unset>"  # the server took it out
    work = backend.work_dir("env-1")  # the platform's wins: the replica's own folder
    assert await call_env(handle, "NUBIS_HOME") == str(work / "home")
    assert await call_env(handle, "TMPDIR") == str(work / "tmp")
    assert "user-secret" not in repr(spec_for(env_bundle, "x", env={"API_KEY": "user-secret"}))


async def start_when_built(backend: LocalBackend, replicas: Replicas, spec: ReplicaSpec,
                           timeout: float = 300) -> tuple[ReplicaHandle, list[str]]:
    """Start a replica, retrying while its virtualenv builds (as the reconciler does)."""
    reasons = []
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await replicas.start(backend, spec), reasons
        except EnvironmentPendingError as exc:
            reasons.append(exc.message)
            assert backend.free() == backend.capacity()  # nothing held while waiting
            assert time.monotonic() < deadline, reasons[-1]
            await asyncio.sleep(0.5)


async def test_missing_requirements_get_a_cached_virtualenv(
    tmp_path: Path, state_dir: Path, replicas: Replicas
) -> None:
    backend = LocalBackend(state_dir, cpus=2, memory=4 * GIB, gpus=[])
    init = "    def init(self) -> None:\n        import termcolor\n\n"
    source = ENV_PHOTON.replace("    @nubis.handler\n", init + "    @nubis.handler\n", 1)
    bundle = photon_bundle(tmp_path / "needs", source, requirements=["termcolor"])
    handle, reasons = await start_when_built(backend, replicas, spec_for(bundle, "needs-1"))
    assert reasons and reasons[0].startswith("building a virtualenv for termcolor")
    await wait_ready(backend, handle)
    interpreter = Path(f"/proc/{handle.ref['pid']}/cmdline").read_bytes().split(b"\0")[0].decode()
    assert str(state_dir / "venvs") in interpreter
    again = photon_bundle(tmp_path / "again", source, requirements=["termcolor"])
    other = await replicas.start(backend, spec_for(again, "needs-2"))  # the same set: built already
    await wait_ready(backend, other)


async def test_requirements_that_cannot_install_fail_with_pips_words(
    tmp_path: Path, state_dir: Path, replicas: Replicas
) -> None:
    bundle = photon_bundle(tmp_path / "needs", ENV_PHOTON,
                           requirements=["httpx>=0.1", "nubis-no-such-package==1.0"])
    backend = LocalBackend(state_dir, cpus=2, memory=4 * GIB, gpus=[])
    with pytest.raises(PhotonLoadError) as caught:
        await start_when_built(backend, replicas, spec_for(bundle, "needs-1"))
    assert caught.value.message.startswith("installing nubis-no-such-package==1.0 failed: ")
    assert "nubis-no-such-package" in caught.value.message.split("failed: ", 1)[1]
    assert backend.free() == backend.capacity()


async def test_a_new_backend_adopts_a_running_replica_and_stops_it(
    state_dir: Path, echo_bundle: Path, replicas: Replicas
) -> None:
    first = LocalBackend(state_dir, cpus=2, memory=4 * GIB, gpus=[])
    handle = await replicas.start(first, spec_for(echo_bundle, "echo-adopt", cpu=1.5))
    await wait_ready(first, handle)
    stored = ReplicaHandle.from_dict(handle.to_dict())  # as the reconciler keeps it in the DB

    second = LocalBackend(state_dir, cpus=2, memory=4 * GIB, gpus=[])
    assert await second.adopt(stored)
    assert second.free().cpu == 0.5  # its resources are accounted again
    with pytest.raises(NoCapacityError):
        await second.start_replica(spec_for(echo_bundle, "echo-more", cpu=1))
    assert (await second.probe(stored)).ready

    pid = int(stored.ref["pid"])
    await second.stop_replica(stored, grace_s=10)
    assert not pid_exists(pid)
    assert second.free() == second.capacity()
    assert not await LocalBackend(state_dir, cpus=2, memory=4 * GIB, gpus=[]).adopt(stored)


async def test_adopt_refuses_a_dead_or_reused_pid(
    state_dir: Path, echo_bundle: Path, replicas: Replicas
) -> None:
    first = LocalBackend(state_dir, cpus=2, memory=4 * GIB, gpus=[])
    handle = await replicas.start(first, spec_for(echo_bundle, "echo-dead"))
    await wait_ready(first, handle)
    second = LocalBackend(state_dir, cpus=2, memory=4 * GIB, gpus=[])

    other = ReplicaHandle.from_dict(handle.to_dict() | {"replica_id": "someone-else"})
    assert not await second.adopt(other)  # the pid runs, but it is not that replica
    reused = ReplicaHandle(handle.replica_id, "local", handle.endpoint,
                           handle.ref | {"pid": str(os.getpid()), "start_time": ""})
    assert not await second.adopt(reused)  # a live pid that is no replica at all
    restarted = ReplicaHandle(handle.replica_id, "local", handle.endpoint,
                              handle.ref | {"start_time": "1"})
    assert not await second.adopt(restarted)  # same pid, another process start

    os.kill(int(handle.ref["pid"]), signal.SIGKILL)
    await wait_exited(first, handle)
    assert not await second.adopt(handle)
    assert second.free() == second.capacity()


async def test_logs_tail_and_follow(state_dir: Path, echo_bundle: Path, replicas: Replicas) -> None:
    backend = LocalBackend(state_dir, cpus=2, memory=4 * GIB, gpus=[])
    assert isinstance(backend, LogsCapability)
    handle = await replicas.start(backend, spec_for(echo_bundle, "echo-logs"))
    await wait_ready(backend, handle)
    lines = backend.read_logs(handle, tail=100)
    assert any("photon echo on http://127.0.0.1:" in line for line in lines)
    assert backend.read_logs(handle, tail=1) == lines[-1:]

    followed: list[str] = []

    async def follow() -> None:
        async for line in backend.follow_logs(handle):
            followed.append(line)

    task = asyncio.create_task(follow())
    try:
        await asyncio.sleep(0.3)
        with backend.log_path("echo-logs").open("a") as fh:  # as the replica would write
            fh.write("a new line\nand another\n")
        await backend.stop_replica(handle, grace_s=10)
        await asyncio.wait_for(task, 10)  # ends once the replica has exited and is drained
    finally:
        task.cancel()
    assert followed[:2] == ["a new line", "and another"]
    assert any("stopped after SIGTERM" in line for line in followed)


async def test_follow_from_start_gives_one_run_of_a_replica_started_again(
    state_dir: Path, echo_bundle: Path, replicas: Replicas
) -> None:
    backend = LocalBackend(state_dir, cpus=2, memory=4 * GIB, gpus=[])
    spec = spec_for(echo_bundle, "echo-runs")
    first = await replicas.start(backend, spec)
    await wait_ready(backend, first)
    await backend.stop_replica(first, grace_s=10)
    second = await replicas.start(backend, spec)  # the same replica again: its log goes on
    await wait_ready(backend, second)
    await backend.stop_replica(second, grace_s=10)

    run = [line async for line in backend.follow_logs(second, from_start=True)]  # it exited: drained
    assert second.endpoint is not None and f"photon echo on {second.endpoint} — " in run[0]
    assert [line for line in run if "photon echo on" in line] == run[:1]
    assert "stopped after SIGTERM" in run[-1]
    whole = backend.log_path("echo-runs").read_text().splitlines()
    assert len([line for line in whole if "photon echo on" in line]) == 2
    assert whole[-len(run):] == run
