"""Test a photon in-process: the real ASGI app, its lifespan and init(), over httpx.

    async with nubis.photon.testing.photon_http(Echo) as http:
        r = await http.post("/echo", json={"text": "hi"})
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx

from nubis.photon.app import build_app
from nubis.photon.photon import Photon
from nubis.photon.runtime import PhotonState, ServeSettings


@contextlib.asynccontextmanager
async def photon_http(
    photon_cls: type[Photon],
    settings: ServeSettings | None = None,
    *,
    wait_ready: bool = True,
    timeout: float = 60.0,
) -> AsyncIterator[httpx.AsyncClient]:
    """Start the photon's app (running init()) and yield an httpx client bound to it."""
    app = build_app(photon_cls, settings)
    runtime = app.state.runtime
    async with app.router.lifespan_context(app):
        if wait_ready:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while runtime.state is PhotonState.starting and loop.time() < deadline:
                await asyncio.sleep(0.01)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://photon") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client
