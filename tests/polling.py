"""Waiting in async tests: poll a condition, or a backend's probe, with a generous timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from nubis.backends.base import Backend, ReplicaHandle, ReplicaProbe


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 120.0,
                every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        await asyncio.sleep(every)


async def until_probe(backend: Backend, handle: ReplicaHandle, accept: Callable[[ReplicaProbe], bool],
                      what: str, timeout: float = 120.0) -> ReplicaProbe:
    """Probe ``handle`` until ``accept`` takes the probe; that probe."""
    seen: list[ReplicaProbe] = []

    async def check() -> bool:
        seen.append(await backend.probe(handle))
        return accept(seen[-1])

    await until(check, f"{what} (last probe: {seen[-1] if seen else None})", timeout)
    return seen[-1]
