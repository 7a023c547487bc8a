"""The playground's pure parts: a body to start from for each handler, and the same call as curl
and Python (what a user copies must run)."""

from __future__ import annotations

import json
import shlex

from nubis.models.photons import HandlerInfo
from nubis.server.console.playground import example, playgrounds

SCHEMA = {"type": "object", "properties": {
    "text": {"type": "string"}, "n": {"type": "integer", "default": 5}, "scale": {"type": "number"},
    "tags": {"type": "array"}, "limit": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
    "mode": {"type": "string", "examples": ["fast"]}}}


def test_each_field_gets_its_default_an_example_or_a_value_of_its_type() -> None:
    assert example(SCHEMA) == {"text": "hello", "n": 5, "scale": 1.0, "tags": [], "limit": 1, "mode": "fast"}
    assert example({}) == {}


def test_file_and_binary_handlers_get_no_json_form() -> None:
    handlers = [HandlerInfo(name="echo", path="/echo", request_schema=SCHEMA),
                HandlerInfo(name="reverse", path="/reverse", file_params=["file"]),
                HandlerInfo(name="image", path="/image", binary_response=True)]
    assert [p.handler.path for p in playgrounds(handlers, "http://gw/ws/echo")] == ["/echo"]


def test_the_curl_snippet_is_one_valid_shell_command_with_the_body() -> None:
    (pg,) = playgrounds([HandlerInfo(name="echo", path="/echo", request_schema=SCHEMA)], "http://gw/ws/echo")
    words = shlex.split(pg.curl.replace("\\\n", " "))
    assert words[:4] == ["curl", "-X", "POST", "http://gw/ws/echo/echo"]
    assert json.loads(words[words.index("-d") + 1]) == example(SCHEMA)
    assert "Bearer $NUBIS_TOKEN" in pg.curl


def test_the_python_snippet_compiles_and_posts_the_body() -> None:
    (pg,) = playgrounds([HandlerInfo(name="echo", path="/echo", request_schema=SCHEMA)], "http://gw/ws/echo")
    compile(pg.python, "<snippet>", "exec")
    assert 'httpx.post("http://gw/ws/echo/echo"' in pg.python and '"text":"hello"' in pg.python


def test_llm_routes_start_from_a_short_openai_request() -> None:
    handlers = [HandlerInfo(name="chat", path="/v1/chat/completions"),
                HandlerInfo(name="m", path="/v1/models", method="GET")]
    chat, models = playgrounds(handlers, "http://gw/ws/tiny", llm_model="tiny")
    assert json.loads(chat.body)["model"] == "tiny" and json.loads(chat.body)["messages"][0]["role"] == "user"
    assert models.curl.startswith("curl http://gw/ws/tiny/v1/models") and "-d" not in models.curl
