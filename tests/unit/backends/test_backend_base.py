"""The backend contract: registration by subclassing, capabilities by isinstance, handles as JSON."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from nubis.backends import (
    Backend,
    Capacity,
    GpuCapability,
    LocalBackend,
    LogsCapability,
    ReplicaHandle,
    ReplicaProbe,
    ReplicaSpec,
    backend_names,
    get_backend_class,
)


class BareBackend(Backend):
    """Runs nothing; has no capabilities."""

    name = "bare-test"

    async def start_replica(self, spec: ReplicaSpec) -> ReplicaHandle:
        return ReplicaHandle(spec.replica_id, self.name, None)

    async def probe(self, handle: ReplicaHandle) -> ReplicaProbe:
        return ReplicaProbe(alive=False, ready=False)

    async def stop_replica(self, handle: ReplicaHandle, *, grace_s: float = 30.0) -> None:
        return None

    async def adopt(self, handle: ReplicaHandle) -> bool:
        return False

    def capacity(self) -> Capacity:
        return Capacity(cpu=0, memory=0)

    def free(self) -> Capacity:
        return Capacity(cpu=0, memory=0)


class LogsOnly(BareBackend, LogsCapability):
    name = "logs-test"

    def read_logs(self, handle: ReplicaHandle, *, tail: int = 100) -> list[str]:
        return []

    async def follow_logs(self, handle: ReplicaHandle, *, tail: int = 0,
                          from_start: bool = False) -> AsyncIterator[str]:
        for line in ():
            yield line


def test_backends_register_by_subclassing() -> None:
    assert get_backend_class("local") is LocalBackend
    assert get_backend_class("bare-test") is BareBackend
    assert get_backend_class("nope") is None
    assert {"local", "bare-test", "logs-test"} <= set(backend_names())


def test_capabilities_are_checked_with_isinstance() -> None:
    assert issubclass(LocalBackend, LogsCapability) and issubclass(LocalBackend, GpuCapability)
    assert not isinstance(BareBackend(), LogsCapability)
    assert isinstance(LogsOnly(), LogsCapability)
    assert not isinstance(LogsOnly(), GpuCapability)


def test_a_backend_must_implement_every_method() -> None:
    class Half(Backend):
        async def probe(self, handle: ReplicaHandle) -> ReplicaProbe:
            return ReplicaProbe(alive=False, ready=False)

    with pytest.raises(TypeError, match="abstract"):
        Half()  # type: ignore[abstract]


def test_handle_round_trips_through_json() -> None:
    handle = ReplicaHandle("r-1", "local", "http://127.0.0.1:9000", {"pid": "42", "port": "9000"})
    assert ReplicaHandle.from_dict(json.loads(json.dumps(handle.to_dict()))) == handle
    assert ReplicaHandle.from_dict({"replica_id": "r", "backend": "ray"}) == ReplicaHandle("r", "ray", None)
