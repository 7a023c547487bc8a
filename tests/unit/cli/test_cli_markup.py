"""Server and user text prints literally: never read as Rich markup, never dropped, never a crash."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from nubis.cli import deployments, jobs, render, storage, tokens
from nubis.cli.main import app
from nubis.errors import NotFoundError
from nubis.models.auth import Role, Token
from nubis.models.deployments import Deployment, DeploymentEvent, Replica
from nubis.models.jobs import Job, JobEvent, Worker
from nubis.models.storage import StorageObject
from nubis.models.workspaces import AuditEvent

from cli_stubs import StubClient

MARKUP = ["[/bold]", "[rank 1]", "[red]x[/red]"]
TEXT = " ".join(MARKUP)  # "[/bold] [rank 1] [red]x[/red]"
AT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture(autouse=True)
def wide_consoles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Consoles that write to the (captured) sys.stdout/sys.stderr, wide enough for whole cells."""
    monkeypatch.setattr(render, "out", Console(width=400))
    monkeypatch.setattr(render, "err", Console(width=400, stderr=True))


def printed(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    return captured.out + captured.err


def assert_literal(output: str) -> None:
    for piece in MARKUP:
        assert piece in output, output


def test_tables_lines_and_messages_print_markup_literally(capsys: pytest.CaptureFixture[str]) -> None:
    render.table(f"events of {TEXT}", ["a", "b"], [[TEXT, render.status("failed")], [TEXT, None]])
    render.success(f"x{TEXT}.csv")
    render.line((TEXT, "bold"), f" {TEXT} ", render.status("ready"))
    render.error(NotFoundError(f"no file at {TEXT!r}"))
    audit = AuditEvent(id=1, workspace="default", actor=TEXT, action="x", target=TEXT, details=None, at=AT)
    render.models("audit", [audit], ["at", "actor", "action", "target"], "table")
    render.model(audit, "table")
    out = printed(capsys)
    assert out.count(TEXT) == 11, out  # title 1, rows 2, success, line 2, audit 2+2, error
    assert "x[/bold] [rank 1] [red]x[/red].csv" in out


def test_transfer_description_is_literal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "err", Console(width=200, stderr=True, force_terminal=True))
    with render.transfer("x[/b].csv", 10) as advance:
        advance(10)


def test_status_keeps_its_colour_and_any_unknown_value() -> None:
    assert render.status("failed").style == "red"
    assert render.status("[/bold]").plain == "[/bold]"


def stub(monkeypatch: pytest.MonkeyPatch, module: Any, **apis: Any) -> None:
    monkeypatch.setattr(module, "Client", lambda *a, **k: StubClient(**apis))


def run(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


JOB = Job(id="j1", name="train", status="failed", reason=TEXT, command=["python", "t.py", TEXT],
          worker_status=[Worker(rank=1, status="failed", exit_code=1, reason=TEXT)],
          metrics={"note": TEXT}, model=TEXT, created_at=AT)


def test_job_commands_print_worker_text_literally(monkeypatch: pytest.MonkeyPatch) -> None:
    api = SimpleNamespace(
        list=lambda **k: [JOB], get=lambda ref: JOB,
        events=lambda ref, **k: [JobEvent(at=AT, kind="worker_failed", message=f"worker 1: {TEXT}")],
    )
    stub(monkeypatch, jobs, jobs=api)
    for command in (["job", "events", "train"], ["job", "get", "train"], ["job", "list"]):
        assert_literal(run(*command))


def test_deployment_commands_print_replica_text_literally(monkeypatch: pytest.MonkeyPatch) -> None:
    replica = Replica(id="r1234567890", status="crash_loop", reason=TEXT, photon=TEXT)
    deployment = Deployment(name="echo", photon=TEXT, status="degraded", reason=TEXT, endpoint=TEXT,
                            replicas=[replica])
    event = DeploymentEvent(at=AT, kind="replica_failed", message=TEXT, replica="r1234567890")
    api = SimpleNamespace(list=lambda: [deployment], get=lambda name: deployment,
                          events=lambda name, **k: [event])
    stub(monkeypatch, deployments, deployments=api)
    for command in (["deployment", "get", "echo"], ["deployment", "list"], ["deployment", "events", "echo"]):
        assert_literal(run(*command))


def test_storage_and_token_tables_print_names_literally(monkeypatch: pytest.MonkeyPatch) -> None:
    stub(monkeypatch, storage, storage=SimpleNamespace(list=lambda prefix: [
        StorageObject(path=f"x{TEXT}.csv", size=3, modified=AT)]))
    assert_literal(run("storage", "ls"))
    token = Token(id="t1", name=TEXT, workspace="default", role=Role.member, superuser=False,
                  prefix="nbs_abcdef", created_at=AT, expires_at=None, revoked_at=None)
    stub(monkeypatch, tokens, tokens=SimpleNamespace(list=lambda **k: [token]))
    assert_literal(run("token", "list"))
