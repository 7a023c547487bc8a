"""``nubis node list|get`` and ``--node-label``/``--spread`` as the CLI sends them (stub client)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from nubis.cli import jobs, nodes, render
from nubis.cli.main import app
from nubis.models.jobs import Job
from nubis.models.nodes import Node, NodeDetail, NodeEvent, NodeResources, NodeWorkload

from cli_stubs import StubClient

GPU_NODE = Node(id="0f3a9c2e7b1d4c5a", address="10.0.0.2", alive=False, death_reason="missing heartbeats",
                total=NodeResources(cpu=8, memory=32 * 2**30, gpu=2),
                free=NodeResources(cpu=6, memory=30 * 2**30, gpu=1),
                used=NodeResources(cpu=2, memory=2 * 2**30, gpu=1), labels={"nubis.io/pool": "a100"},
                workloads=[NodeWorkload(kind="replica", id="r1", workspace="default", name="echo",
                                        status="ready")], hidden_workloads=3)


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "out", Console(width=200))


def test_node_list_shows_use_of_total_labels_and_hidden_workloads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nodes, "Client", lambda: StubClient(nodes=SimpleNamespace(list=lambda: [GPU_NODE])))
    result = CliRunner().invoke(app, ["node", "list"])
    assert result.exit_code == 0, result.output
    for text in ("0f3a9c2e7b1d", " no ", "2/8", "2Gi/32Gi", "1/2", "nubis.io/pool=a100",
                 "1 (+3 other)"):
        assert text in result.output
    result = CliRunner().invoke(app, ["node", "list", "--output", "json"])
    assert json.loads(result.output)[0]["labels"] == {"nubis.io/pool": "a100"}


def test_node_get_shows_workloads_and_events(monkeypatch: pytest.MonkeyPatch) -> None:
    detail = NodeDetail(**GPU_NODE.model_dump(), events=[NodeEvent(
        node_id=GPU_NODE.id, kind="lost", message="node 10.0.0.2 was lost: [bold]x[/bold]",
        at=datetime(2026, 1, 1, tzinfo=UTC))])
    monkeypatch.setattr(nodes, "Client", lambda: StubClient(nodes=SimpleNamespace(get=lambda ref: detail)))
    result = CliRunner().invoke(app, ["node", "get", "0f3a"])
    assert result.exit_code == 0, result.output
    assert "[bold]x[/bold]" in result.output and "echo" in result.output


def test_submit_sends_spread_and_node_labels_and_refuses_bad_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: dict[str, Any] = {}

    def submit(command: list[str], **body: Any) -> Job:
        sent.update(body)
        raise SystemExit(0)

    monkeypatch.setattr(jobs, "Client", lambda: StubClient(jobs=SimpleNamespace(submit=submit)))
    args = ["job", "submit", "--no-code", "--workers", "3", "--spread", "--node-label", "nubis.io/pool=a100",
            "--node-label", "zone=eu", "--", "python", "train.py"]
    CliRunner().invoke(app, args)
    assert sent["spread"] is True
    assert sent["node_selector"] == {"nubis.io/pool": "a100", "zone": "eu"}
    result = CliRunner().invoke(app, ["job", "submit", "--no-code", "--node-label", "pool", "--", "python"])
    assert result.exit_code != 0
    assert "use key=value" in str(result.exception) + result.output
