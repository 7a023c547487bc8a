"""``nubis workspace …`` prints quotas for people: memory and storage in units, not bytes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from nubis.cli import render, workspaces
from nubis.cli.main import app
from nubis.models.workspaces import Workspace

from cli_stubs import StubClient

WS = Workspace(id="w1", name="research", storage_quota_bytes=10 * 2**30, cpu_quota=1.5,
               memory_quota=4 * 2**30, gpu_quota=None, created_at=datetime(2026, 1, 2, tzinfo=UTC))


@pytest.fixture(autouse=True)
def stub(monkeypatch: pytest.MonkeyPatch) -> None:
    api = SimpleNamespace(list=lambda: [WS], get=lambda name: WS, set_quota=lambda *a, **k: WS)
    monkeypatch.setattr(workspaces, "Client", lambda *a, **k: StubClient(workspaces=api))
    monkeypatch.setattr(render, "out", Console(width=300))


def run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


@pytest.mark.parametrize("command", [["workspace", "list"], ["workspace", "get", "research"],
                                     ["workspace", "quota", "research", "--memory", "4Gi"]])
def test_quotas_print_sizes_in_units(command: list[str]) -> None:
    out = run(*command)
    assert "4Gi" in out and "10Gi" in out and "1.5" in out, out
    assert str(4 * 2**30) not in out and str(10 * 2**30) not in out


def test_json_keeps_bytes() -> None:
    data: dict[str, Any] = json.loads(run("workspace", "get", "research", "--output", "json"))
    assert data["memory_quota"] == 4 * 2**30 and data["storage_quota_bytes"] == 10 * 2**30
