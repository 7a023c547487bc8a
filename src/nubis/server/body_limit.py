"""A request-body size limit, as pure ASGI middleware: it runs before routing, parsing and auth.

A declared ``Content-Length`` over the limit is answered 413 at once (the body is never read);
a chunked body is counted as it arrives and cut at the limit: the app sees the client go away,
the caller gets 413. Routes that stream uploads to disk keep their own, larger limits.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nubis.errors import PayloadTooLargeError


class BodySizeLimit:
    def __init__(self, app: ASGIApp, *, max_body: int, streamed: Iterable[tuple[str, str]] = ()) -> None:
        """``streamed``: (method, path or path prefix ending in '/') pairs that are not limited here."""
        self.app = app
        self.max_body = max_body
        self.streamed = tuple(streamed)

    def _is_streamed(self, scope: Scope) -> bool:
        method, path = scope["method"], scope["path"]
        return any(method == m and (path == p or (p.endswith("/") and path.startswith(p)))
                   for m, p in self.streamed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._is_streamed(scope):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body:
            await self._too_large(send)
            return
        received = 0
        started = answered = False

        async def counting_receive() -> Message:
            nonlocal received, answered
            if answered:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    if not started:
                        await self._too_large(send)
                        answered = True
                    return {"type": "http.disconnect"}  # the app stops reading and gives up
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if answered:
                return  # we already answered 413; whatever the app says after is dropped
            started = True
            await send(message)

        await self.app(scope, counting_receive, guarded_send)

    async def _too_large(self, send: Send) -> None:
        error = PayloadTooLargeError(
            f"the request body is larger than {self.max_body // 1024} KiB: "
            "send files through storage (PUT /api/v1/storage/<path>) and refer to their path"
        )
        body = json.dumps(error.to_body()).encode()
        await send({"type": "http.response.start", "status": error.http_status, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None
