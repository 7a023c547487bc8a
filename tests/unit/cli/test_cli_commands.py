"""The CLI's surface: what every list/get command takes, and tokens as the table shows them."""

from __future__ import annotations

import inspect
import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from nubis.cli import render, tokens
from nubis.cli.main import app
from nubis.models.auth import Role, Token

READS = {"list", "get", "ls", "events", "audit", "whoami", "usage"}
DOWNLOADS = {("storage", "get")}  # writes files and says where, like `cp`: no document to print


def commands(group: typer.Typer, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    found = [((*path, c.name or c.callback.__name__), c.callback) for c in group.registered_commands]
    for sub in group.registered_groups:
        found += commands(sub.typer_instance, (*path, sub.name))
    return found


def test_every_list_and_get_command_takes_output_json() -> None:
    reads = [(path, callback) for path, callback in commands(app)
             if path[-1] in READS and path not in DOWNLOADS]
    assert {" ".join(p) for p, _ in reads} >= {"job events", "deployment events", "token list", "storage ls"}
    missing = [" ".join(p) for p, callback in reads if "output" not in inspect.signature(callback).parameters]
    assert missing == []


TOKEN = Token(id="0123456789abcdef0123456789abcdef", name="ci", workspace="research", role=Role.member,
              superuser=False, prefix="nbs_abcdef", created_at=datetime(2026, 1, 1, tzinfo=UTC),
              expires_at=None, revoked_at=None)


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    calls: list[tuple[str, Any]] = []

    class StubClient:
        def __init__(self, *args: Any, workspace: str | None = None) -> None:
            calls.append(("workspace", workspace))
            self.tokens = SimpleNamespace(list=lambda: [TOKEN],
                                          revoke=lambda ref: calls.append(("revoke", ref)) or TOKEN)

        def __enter__(self) -> StubClient:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr(tokens, "Client", StubClient)
    monkeypatch.setattr(render, "out", Console(width=60))  # narrow: the id is still whole
    return calls


def test_token_list_shows_the_id_start_revoke_takes_in_any_workspace(seen: list[tuple[str, Any]]) -> None:
    result = CliRunner().invoke(app, ["token", "list", "--workspace", "research"])
    assert result.exit_code == 0, result.output
    assert "tokens of research" in result.output
    assert "│ 01234567 │" in result.output and "0123456789" not in result.output
    assert "nbs_abcdef" in result.output
    result = CliRunner().invoke(app, ["token", "revoke", "01234567", "--workspace", "research"])
    assert result.exit_code == 0, result.output
    assert seen == [("workspace", "research"), ("workspace", "research"), ("revoke", "01234567")]
    listed = json.loads(CliRunner().invoke(app, ["token", "list", "-o", "json"]).output)
    assert listed[0]["id"] == TOKEN.id  # JSON keeps the whole id
