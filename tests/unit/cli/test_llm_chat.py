"""``nubis llm chat``: the conversation is kept turn after turn, answers are printed as they stream,
Ctrl-D or /exit ends it; ``--message`` is one turn."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from nubis.cli import llm
from nubis.cli.main import app

from cli_stubs import StubClient


class FakeLLM:
    def __init__(self) -> None:
        self.seen: list[list[dict[str, str]]] = []

    def stream_chat(self, name: str, messages: list[dict[str, str]], **params: Any) -> Iterator[str]:
        self.seen.append([dict(m) for m in messages])
        yield from (f"answer {len(self.seen)}", " to ", messages[-1]["content"])


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeLLM:
    api = FakeLLM()
    monkeypatch.setattr(llm, "Client", lambda *a, **k: StubClient(llm=api))
    return api


def test_the_conversation_is_kept_and_exit_ends_it(fake: FakeLLM) -> None:
    result = CliRunner().invoke(app, ["llm", "chat", "smol", "--system", "be brief"],
                                input="hello\n\nand then?\n/exit\nnever sent\n")
    assert result.exit_code == 0, result.output
    assert "answer 1 to hello\n" in result.output and "answer 2 to and then?\n" in result.output
    assert fake.seen[1] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"},
                            {"role": "assistant", "content": "answer 1 to hello"},
                            {"role": "user", "content": "and then?"}]
    assert len(fake.seen) == 2


def test_end_of_input_ends_it(fake: FakeLLM) -> None:
    result = CliRunner().invoke(app, ["llm", "chat", "smol"], input="hi\n")
    assert result.exit_code == 0 and len(fake.seen) == 1


def test_one_message(fake: FakeLLM) -> None:
    result = CliRunner().invoke(app, ["llm", "chat", "smol", "--message", "hi"])
    assert result.exit_code == 0
    assert result.output == "answer 1 to hi\n"
