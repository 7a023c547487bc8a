"""The console's /usage page on the real app in-process: the same figures as GET /api/v1/usage (by
workspace, deployment, job and day, a cost with prices), quota use beside them, each workspace its
own (the platform admin every one on request), bad input a 422 that says why."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from test_console_pages import browser, flash
from test_usage import record

from platform_fixtures import Platform


async def seeded(p: Platform) -> None:
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=1)
    await p.token("member", "team-b")  # makes the workspace
    await record(p, "default", "replica", "web", cpu=2, memory_gib=4, gpu=1,
                 started=midnight - timedelta(hours=1), stopped=midnight + timedelta(hours=2))
    await record(p, "default", "job", "train", cpu=4, memory_gib=8,
                 started=midnight + timedelta(hours=1), stopped=midnight + timedelta(hours=1, minutes=30))
    await record(p, "team-b", "replica", "api", cpu=1, memory_gib=1,
                 started=datetime.now(UTC) - timedelta(hours=1), stopped=None)


def cells(page: str) -> list[list[str]]:
    """The usage table's rows as text cells (header and total included)."""
    table = page.split('<table id="usage">', 1)[1].split("</table>", 1)[0]
    return [[re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)]


async def test_the_page_shows_what_the_api_counts_with_costs_and_quotas(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    await seeded(p)
    r = await p.http.patch("/api/v1/workspaces/default", json={"cpu_quota": 8}, headers=p.admin)
    assert r.status_code == 200, r.text
    prices = {"cpu_hour": "0.5", "memory_gib_hour": "0.25", "gpu_hour": "2"}
    api = (await p.http.get("/api/v1/usage", params={"by": "deployment", **prices}, headers=p.admin)).json()
    async with browser(p, p.admin_token) as (http, _):
        page = (await http.get("/usage")).text
        assert 'href="/usage" aria-current="page"' in page
        rows = cells(page)
        assert rows[0] == ["workspace", "CPU-hours", "GiB-hours", "GPU-hours"]
        assert rows[1] == ["default", "8.000", "16.000", "3.000"]  # web 2 CPU × 3 h + train 4 × 0.5 h, …
        assert rows[-1][0] == "total" and [r[0] for r in rows[1:-1]] == ["default"]
        quotas = page.split('id="quotas"', 1)[1]
        assert "0.0 / 8.0" in quotas and 'role="meter"' in quotas

        page = (await http.get("/usage", params={"by": "deployment", **prices})).text
        rows = cells(page)
        assert rows[0][-1] == "cost" and rows[1][:2] == ["default", "web"]
        assert rows[1][-1] == f"{api['rows'][0]['cost']:.2f}" == "12.00"
        assert '<a href="/deployments/web">web</a>' in page
        assert 'name="cpu_hour" value="0.5"' in page
        assert "nubis usage --since 30d --by deployment --output csv" in page

        daily = cells((await http.get("/usage", params={"by": "job", "daily": "true"})).text)
        assert daily[0][:3] == ["workspace", "job", "day"] and daily[1][:2] == ["default", "train"]

        every = cells((await http.get("/usage", params={"all": "true"})).text)
        assert [r[0] for r in every[1:-1]] == ["default", "team-b"]


async def test_each_workspace_sees_its_own(sqlite_platform: Platform) -> None:
    p = sqlite_platform
    await seeded(p)
    async with browser(p, await p.token("viewer", "team-b")) as (http, _):
        page = (await http.get("/usage", params={"all": "true", "by": "deployment"})).text
        assert [r[:2] for r in cells(page)[1:-1]] == [["team-b", "api"]]  # "all" is the platform admin's
        assert 'name="all"' not in page and "web" not in page


@pytest.mark.parametrize(("params", "says"), [
    ({"since": "yesterday"}, "neither a duration"), ({"since": "2999-01-01"}, "in the future"),
    ({"by": "node"}, "by"), ({"cpu_hour": "-1"}, "cpu_hour"), ({"gpu_hour": "inf"}, "gpu_hour"),
])
async def test_bad_input_is_a_422_that_says_why(sqlite_platform: Platform, params: dict[str, str],
                                                says: str) -> None:
    async with browser(sqlite_platform, sqlite_platform.admin_token) as (http, _):
        r = await http.get("/usage", params=params)
        assert r.status_code == 422 and says in (flash(r.text) or r.text), r.text[-800:]


async def test_a_long_report_shows_its_first_rows_and_how_to_get_all(sqlite_platform: Platform,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from nubis.server.console.pages import usage as page_module

    monkeypatch.setattr(page_module, "MAX_ROWS", 1)
    await seeded(sqlite_platform)
    async with browser(sqlite_platform, sqlite_platform.admin_token) as (http, _):
        page = (await http.get("/usage", params={"by": "deployment", "all": "true"})).text
        rows = cells(page)
        assert [r[:2] for r in rows[1:-1]] == [["default", "web"]] and rows[-1][0] == "total"
        assert "The first 1 of 2 rows" in page and "--by deployment --output csv" in page
