"""The playground of a deployment: an example body from each handler's request schema, the same
call as curl and Python, and the call itself made by the control plane through the gateway with
the session's token (the browser only ever talks to the control plane)."""

from __future__ import annotations

import contextlib
import json
import shlex
from dataclasses import dataclass
from typing import Any

import httpx

from nubis.errors import ValidationError
from nubis.http_clients import async_client
from nubis.models.photons import HandlerInfo

CALL_TIMEOUT_S = 60.0
SHOWN_BYTES = 64 * 1024
EXAMPLES: dict[str, Any] = {"string": "hello", "integer": 1, "number": 1.0, "boolean": True, "array": [],
                            "object": {}}


def example(schema: dict[str, Any]) -> dict[str, Any]:
    """A body to start from: each property's default, else a value of its type."""
    body: dict[str, Any] = {}
    for name, prop in (schema.get("properties") or {}).items():
        if "default" in prop:
            body[name] = prop["default"]
        elif prop.get("examples"):
            body[name] = prop["examples"][0]
        else:
            types = [prop.get("type"), *(p.get("type") for p in prop.get("anyOf", []))]
            body[name] = EXAMPLES.get(next((t for t in types if t), "string"))
    return body


@dataclass(frozen=True)
class Playground:
    handler: HandlerInfo
    url: str
    body: str

    @property
    def curl(self) -> str:
        if self.handler.method == "GET":
            return f'curl {shlex.quote(self.url)} -H "Authorization: Bearer $NUBIS_TOKEN"'
        return (f'curl -X POST {shlex.quote(self.url)} -H "Authorization: Bearer $NUBIS_TOKEN" \\\n'
                f"  -H 'Content-Type: application/json' -d {shlex.quote(compact(self.body))}")

    @property
    def python(self) -> str:
        call = "get" if self.handler.method == "GET" else "post"
        body = "" if self.handler.method == "GET" else f", json={compact(self.body)}"
        return ("import os, httpx\n\n"
                f'r = httpx.{call}("{self.url}"{body},\n'
                '    headers={"Authorization": "Bearer " + os.environ["NUBIS_TOKEN"]}, timeout=60)\n'
                "print(r.json())")


def compact(body: str) -> str:
    try:
        return json.dumps(json.loads(body), separators=(",", ":"))
    except ValueError:
        return body


def llm_examples(model: str) -> dict[str, dict[str, Any]]:
    """An LLM deployment's OpenAI routes take free-form bodies: a short request of each kind."""
    return {"/v1/chat/completions": {"model": model, "messages": [{"role": "user", "content": "Hi"}],
                                     "max_tokens": 32},
            "/v1/completions": {"model": model, "prompt": "Once upon a time", "max_tokens": 32}}


def playgrounds(handlers: list[HandlerInfo], endpoint: str, *,
                llm_model: str | None = None) -> list[Playground]:
    known = llm_examples(llm_model) if llm_model is not None else {}
    return [Playground(h, f"{endpoint}{h.path}", json.dumps(known.get(h.path) or example(h.request_schema),
                                                            indent=2))
            for h in handlers if not h.file_params and not h.binary_response]


@dataclass(frozen=True)
class CallResult:
    status: int
    body: str
    seconds: float


async def call(handler: HandlerInfo, url: str, body: str, token: str) -> CallResult:
    """The handler through the gateway, as a client of the deployment would call it."""
    headers = {"authorization": f"Bearer {token}"}
    try:
        payload = json.loads(body or "{}")
    except ValueError as exc:
        raise ValidationError(f"the body is not JSON: {exc}") from exc
    async with async_client(timeout=CALL_TIMEOUT_S) as http:
        try:
            if handler.method == "GET":
                r = await http.get(url, headers=headers)
            else:
                r = await http.post(url, json=payload, headers=headers)
        except httpx.HTTPError as exc:
            return CallResult(status=502, body=f"the gateway could not be reached: {exc}", seconds=0.0)
    text = r.text[:SHOWN_BYTES]
    with contextlib.suppress(ValueError):
        text = json.dumps(r.json(), indent=2)[:SHOWN_BYTES]
    return CallResult(status=r.status_code, body=text, seconds=r.elapsed.total_seconds())
