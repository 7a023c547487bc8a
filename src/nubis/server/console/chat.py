"""The chat box of an LLM deployment: the conversation goes from the control plane to the gateway
(``/<workspace>/<deployment>/v1/chat/completions``, streamed, with the session's token) and the
answer's pieces come back to the browser as Server-Sent Events as they are generated. The answer's
length is the deployment's default (what fits the model's context)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

from nubis.http_clients import async_client
from nubis.server.console.live import sse

TIMEOUT = httpx.Timeout(connect=10.0, read=600.0, write=60.0, pool=10.0)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=32_000)


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[ChatMessage] = Field(min_length=1, max_length=100)


def deltas(line: str) -> list[str]:
    """The text pieces of one upstream SSE line (``data: {...}`` of a chat.completion.chunk)."""
    if not line.startswith("data:"):
        return []
    data = line[5:].strip()
    if not data or data == "[DONE]":
        return []
    try:
        chunk = json.loads(data)
    except ValueError:
        return []
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    pieces = []
    for choice in choices or []:
        content = (choice.get("delta") or {}).get("content") if isinstance(choice, dict) else None
        if isinstance(content, str) and content:
            pieces.append(content)
    return pieces


def upstream_error(status: int, body: bytes) -> str:
    try:
        found = json.loads(body)
        message = found.get("error", {}).get("message") if isinstance(found, dict) else None
    except ValueError:
        message = None
    return f"HTTP {status}: {message or body[:300].decode(errors='replace')}"


async def relay(endpoint: str, model: str, request: ChatRequest, token: str) -> AsyncIterator[str]:
    """``delta`` events with each piece (JSON strings), then ``done``; or one ``failed`` event."""
    body = {"model": model, "stream": True, "messages": [m.model_dump() for m in request.messages]}
    headers = {"authorization": f"Bearer {token}"}
    try:
        async with async_client(timeout=TIMEOUT) as http, \
                http.stream("POST", f"{endpoint}/v1/chat/completions", json=body, headers=headers) as r:
            if r.status_code != 200:
                yield sse("failed", json.dumps(upstream_error(r.status_code, await r.aread())))
                return
            async for line in r.aiter_lines():
                for piece in deltas(line):
                    yield sse("delta", json.dumps(piece))
    except httpx.HTTPError as exc:
        yield sse("failed", json.dumps(f"the gateway could not be reached: {exc}"))
        return
    yield sse("done", "")
