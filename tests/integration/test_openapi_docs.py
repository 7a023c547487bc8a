"""/docs works offline: Swagger UI's assets are served by nubis itself, for photons and the API."""

from __future__ import annotations

import httpx

from nubis.photon.loader import load_photon
from nubis.photon.testing import photon_http

from platform_fixtures import Platform


async def _check_docs(http: httpx.AsyncClient) -> None:
    page = await http.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower()
    assert "/_nubis/swagger/swagger-ui-bundle.js" in page.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        r = await http.get(f"/_nubis/swagger/{asset}")
        assert r.status_code == 200
        assert len(r.content) > 10_000


async def test_photon_docs_need_no_cdn() -> None:
    async with photon_http(load_photon("examples/echo").cls) as http:
        await _check_docs(http)


async def test_api_docs_need_no_cdn(sqlite_platform: Platform) -> None:
    await _check_docs(sqlite_platform.http)
