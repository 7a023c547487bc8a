"""What `nubis up` prints first: with a home of its own, the exact line the CLI in another shell needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from nubis.server.main import describe
from nubis.server.settings import ServerSettings


def test_another_home_prints_the_export_the_cli_needs(tmp_path: Path) -> None:
    home = tmp_path / "my home"
    lines = describe(ServerSettings(home=home))
    assert lines[-1] == f"for the CLI in another shell: export NUBIS_HOME='{home}'"
    assert not any("the CLI on this machine reads it" in line for line in lines)


def test_the_default_home_needs_no_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    lines = describe(ServerSettings(home=tmp_path / ".nubis"))
    assert not any("export" in line for line in lines)
    assert any("(the CLI on this machine reads it)" in line for line in lines)


def test_the_console_address_comes_first(tmp_path: Path) -> None:
    settings = ServerSettings(home=tmp_path / "home", port=8400)
    assert describe(settings)[0].startswith("console     http://127.0.0.1:8400/ ")
