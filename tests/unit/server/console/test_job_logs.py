"""A job's ranks on one event stream: batched rank-N events, escaped lines, keep-alive comments while
quiet, the end once every rank ended, one rank's failure ending only its own pane."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from nubis.server.console import job_logs


async def collect(ranks: list[int]) -> list[str]:
    return [item async for item in job_logs.follow_ranks(None, "job", ranks, tail=10)]  # type: ignore[arg-type]


@pytest.fixture
def followers(monkeypatch: pytest.MonkeyPatch) -> dict[int, Any]:
    made: dict[int, Any] = {}

    def follow_logs(ctx: object, job_id: str, *, worker: int, tail: int) -> AsyncIterator[str]:
        return made[worker]()

    monkeypatch.setattr(job_logs.jobs, "follow_logs", follow_logs)
    return made


async def test_lines_of_each_rank_come_escaped_under_its_event(followers: dict[int, Any]) -> None:
    async def rank0() -> AsyncIterator[str]:
        yield "a <b>"
        yield "c\r"

    async def rank1() -> AsyncIterator[str]:
        await asyncio.sleep(0.05)
        yield "d & e"

    followers.update({0: rank0, 1: rank1})
    events = await collect([0, 1])
    assert events == ["event: rank-0\ndata: <div>a &lt;b&gt;</div><div>c</div>\n\n",
                      "event: rank-1\ndata: <div>d &amp; e</div>\n\n"]


async def test_quiet_ranks_send_keep_alive_comments(followers: dict[int, Any],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(job_logs, "KEEP_ALIVE_S", 0.02)

    async def slow() -> AsyncIterator[str]:
        await asyncio.sleep(0.2)
        yield "late"

    followers[0] = slow
    events = await collect([0])
    assert events[0] == job_logs.KEEP_ALIVE and events[-1] == "event: rank-0\ndata: <div>late</div>\n\n"


async def test_a_failing_rank_ends_alone(followers: dict[int, Any]) -> None:
    async def broken() -> AsyncIterator[str]:
        yield "before"
        raise RuntimeError("backend gone")

    async def fine() -> AsyncIterator[str]:
        await asyncio.sleep(0.05)
        yield "still here"

    followers.update({0: broken, 1: fine})
    events = await collect([0, 1])
    assert "event: rank-0\ndata: <div>before</div>\n\n" in events
    assert events[-1] == "event: rank-1\ndata: <div>still here</div>\n\n"
