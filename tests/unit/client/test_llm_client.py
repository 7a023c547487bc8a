"""client.llm's reading of OpenAI chat-completion chunks (what `nubis llm chat` prints)."""

import json

from nubis.client.llm import sse_deltas


def chunk(content: str | None, *, usage: bool = False) -> str:
    delta = {} if content is None else {"content": content}
    body = {"object": "chat.completion.chunk", "choices": [] if usage else [{"index": 0, "delta": delta}]}
    if usage:
        body["usage"] = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    return "data: " + json.dumps(body)


def test_text_deltas_up_to_done() -> None:
    lines = [chunk(None), "", chunk("Par"), ": keep-alive", chunk("is"), chunk(""), chunk(None, usage=True),
             "data: [DONE]", chunk("after the end")]
    assert list(sse_deltas(iter(lines))) == ["Par", "is"]
