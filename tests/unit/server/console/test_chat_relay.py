"""The chat relay's reading of the gateway's stream: OpenAI chat.completion.chunk lines → pieces."""

from __future__ import annotations

import json

from nubis.server.console.chat import deltas, upstream_error


def chunk(*contents: str | None) -> str:
    return "data: " + json.dumps({"object": "chat.completion.chunk", "choices": [
        {"index": i, "delta": {} if c is None else {"content": c}} for i, c in enumerate(contents)]})


def test_pieces_come_from_the_deltas_content() -> None:
    assert deltas(chunk("Par", "is")) == ["Par", "is"]
    assert deltas(chunk(None)) == []  # the role-only first chunk, or the last with finish_reason
    assert deltas(chunk("")) == []


def test_other_lines_give_nothing() -> None:
    for line in ("", ": keep-alive", "data: [DONE]", "data: not json", "event: x", 'data: {"choices": null}',
                 "data: []"):
        assert deltas(line) == [], line


def test_an_upstream_error_says_its_status_and_message() -> None:
    body = json.dumps({"error": {"message": "model 'x' not found", "type": "invalid_request_error"}}).encode()
    assert upstream_error(404, body) == "HTTP 404: model 'x' not found"
    assert upstream_error(502, b"bad gateway") == "HTTP 502: bad gateway"
