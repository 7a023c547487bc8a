"""The gateway as a pure ASGI app: ``/<workspace>/<deployment>/<path>`` → a ready replica.

No framework on the request path: one dict lookup, a token hash for private deployments, the
pick, then aiohttp's pooled connection to the replica with both bodies streamed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from nubis.errors import BadRequestError, HandlerTimeoutError, NotFoundError, NubisError, PayloadTooLargeError
from nubis.errors import UnauthorizedError as _Unauthorized
from nubis.gateway import replica_metrics
from nubis.gateway.headers import header, request_headers, response_headers
from nubis.gateway.metrics import CONTENT_TYPE, GatewayMetrics
from nubis.gateway.openai_routes import (
    MODELS,
    ROUTED,
    is_openai_path,
    may_use_workspace,
    models_list,
    openai_error_body,
    requested_model,
)
from nubis.gateway.routing import (
    FAILED_BACKOFF_S,
    REPLACEMENT_WAIT_S,
    Deployment,
    Replica,
    Router,
    split_path,
)
from nubis.models.routes import DEFAULT_MAX_BODY_BYTES
from nubis.photon.runtime import REPLICA_KEY_HEADER

log = logging.getLogger("nubis.gateway")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Startup = Callable[["GatewayApp"], Awaitable[list[asyncio.Task[None]]]]

BUFFER_BYTES = 1024 * 1024  # bodies up to this size are read whole (one write each way)
JSON_HEADERS = [(b"content-type", b"application/json")]
WORKSPACE_V1 = "v1"  # /<workspace>/v1/...: the workspace's OpenAI base URL (RESERVED_NAMES: no deployment's)


class NoReplicaError(NubisError):
    """No ready replica took the request (none ready within the hold, or all refused)."""

    code = "no_replica"
    http_status = 503


class UpstreamError(NubisError):
    """The replica broke the connection or answered with something that is not HTTP."""

    code = "upstream_error"
    http_status = 502


@dataclass(frozen=True)
class GatewaySettings:
    max_tries: int = 3
    unknown_wait_s: float = 1.5  # an unlisted deployment waits for one more table (> 1 poll) before 404
    connections_per_host: int = 256
    gateway_id: str = "gateway"
    metrics_token_sha256: str | None = None  # /metrics needs this token (none: /metrics refused)


class _BodyTooLarge(Exception):
    pass


class _ClientGone(Exception):
    """The client disconnected before its request body ended: nothing is sent on, nothing
    answered; counted as status 499 (as nginx logs it), never logged as an error."""


CLIENT_GONE = 499


class GatewayApp:
    """ASGI callable. ``startup`` (given the app, in its loop) returns background tasks to run."""

    def __init__(
        self,
        router: Router,
        metrics: GatewayMetrics,
        settings: GatewaySettings | None = None,
        *,
        startup: Startup | None = None,
    ) -> None:
        self.router = router
        self.metrics = metrics
        self.settings = settings or GatewaySettings()
        self.session: aiohttp.ClientSession | None = None
        self._startup = startup
        self._tasks: list[asyncio.Task[None]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self.lifespan(receive, send)

    # ── lifespan ─────────────────────────────────────────────────────────────────────────────

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=0, limit_per_host=self.settings.connections_per_host,
            keepalive_timeout=30, ttl_dns_cache=60,
        )
        self.session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            timeout=aiohttp.ClientTimeout(total=None),
        )
        if self._startup is not None:
            self._tasks = await self._startup(self)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.session is not None:
            await self.session.close()

    # ── requests ─────────────────────────────────────────────────────────────────────────────

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        parsed = split_path(scope.get("raw_path") or scope["path"].encode())
        if parsed is None or scope["path"].startswith(replica_metrics.PREFIX):
            await self._own_paths(scope, send)
            return
        workspace, name, rest = parsed
        if name == WORKSPACE_V1:
            await self._workspace_v1(workspace, rest, scope, receive, send)
            return
        authorization = header(scope["headers"], b"authorization")
        dep = await self._admit(lambda: self.router.get(workspace, name), authorization)
        if dep is None:
            self.metrics.unrouted.labels("401").inc()
            await _send_error(send, _Unauthorized(
                f"no deployment {workspace}/{name} that this caller may use: check the name and, "
                "for a private deployment, send 'Authorization: Bearer <token>' with a token of "
                "its workspace", details={"workspace": workspace, "deployment": name}),
                openai=is_openai_path(rest))
            return
        await self._counted(dep, self._serve(dep, rest, scope, receive, send))

    async def _counted(self, dep: Deployment, serving: Awaitable[int]) -> None:
        started = time.perf_counter()
        status = 500
        try:
            status = await serving
        finally:
            dep.count(status, time.perf_counter() - started)

    async def _admit(self, find: Callable[[], Deployment | None],
                     authorization: bytes | None) -> Deployment | None:
        """The deployment ``find`` gives if it is listed and the caller may use it; else None,
        after waiting once for the next table (a deployment or token created a moment ago is one
        poll away). An unknown deployment and a refused token take the same path, so the answer
        and its timing do not tell whether a private deployment exists."""
        dep = find()
        if dep is not None and dep.allows(authorization, now=time.time()):
            return dep
        if not await self.router.wait_table(self.settings.unknown_wait_s):
            return None
        dep = find()
        if dep is not None and dep.allows(authorization, now=time.time()):
            return dep
        return None

    async def _workspace_v1(self, workspace: str, rest: bytes, scope: Scope, receive: Receive,
                            send: Send) -> None:
        """``/<workspace>/v1/...``: the workspace's OpenAI base URL (``openai_routes``)."""
        authorization = header(scope["headers"], b"authorization")
        if rest == MODELS and scope["method"] == "GET":
            deps = self.router.in_workspace(workspace)
            if not may_use_workspace(deps, authorization, now=time.time()):
                await self.router.wait_table(self.settings.unknown_wait_s)
                deps = self.router.in_workspace(workspace)
                if not may_use_workspace(deps, authorization, now=time.time()):
                    await self._refuse_workspace(workspace, send)
                    return
            await _send_body(send, 200, JSON_HEADERS,
                             models_list(workspace, deps, authorization, now=time.time()))
            return
        if rest not in ROUTED or scope["method"] != "POST":
            self.metrics.unrouted.labels("404").inc()
            await _send_error(send, NotFoundError(
                f"no route {scope['method']} /{workspace}/v1{rest.decode('latin-1')}: the workspace's "
                "base URL serves POST /v1/chat/completions, POST /v1/completions and GET /v1/models"),
                openai=True)
            return
        try:
            body = await _read_body(receive, DEFAULT_MAX_BODY_BYTES)
        except _ClientGone:
            return
        except _BodyTooLarge:
            body = _StreamedBody(b"", receive, 0)
        if isinstance(body, _StreamedBody):
            await _send_error(send, PayloadTooLargeError(
                f"the workspace's base URL takes JSON bodies up to {BUFFER_BYTES} bytes: call the "
                "deployment's own base URL, /<workspace>/<deployment>/v1, for larger ones"), openai=True)
            return
        model = requested_model(body)
        if model is None:
            await _send_error(send, BadRequestError(
                "the body needs a 'model' field: the name of an LLM deployment of this workspace "
                f"(GET /{workspace}/v1/models lists them)"), openai=True, param="model")
            return
        dep = await self._admit(lambda: self.router.llm(workspace, model), authorization)
        if dep is None:
            if not may_use_workspace(self.router.in_workspace(workspace), authorization, now=time.time()):
                await self._refuse_workspace(workspace, send)
                return
            self.metrics.unrouted.labels("404").inc()
            await _send_error(send, NotFoundError(
                f"the model {model!r} does not exist in workspace {workspace!r}: GET /{workspace}/v1/models "
                "lists the LLM deployments you may call", details={"model": model}),
                openai=True, param="model", code="model_not_found")
            return
        await self._counted(dep, self._send_on(dep, b"/v1" + rest, scope, body, receive, send))

    async def _refuse_workspace(self, workspace: str, send: Send) -> None:
        self.metrics.unrouted.labels("401").inc()
        await _send_error(send, _Unauthorized(
            f"send 'Authorization: Bearer <token>' with a token of workspace {workspace!r}",
            details={"workspace": workspace}), openai=True, code="invalid_api_key")

    async def _own_paths(self, scope: Scope, send: Send) -> None:
        path = scope["path"]
        if path == "/healthz":
            body = json.dumps({"status": "ok", "routes_version": self.router.version}).encode()
            await _send_body(send, 200, JSON_HEADERS, body)
            return
        if path == "/metrics":
            if not self._may_read_metrics(header(scope["headers"], b"authorization")):
                await _send_error(send, _Unauthorized(
                    "the gateway's /metrics needs 'Authorization: Bearer <the gateway's token>' "
                    "(the token it was started with, --token-file)"))
                return
            self._set_gauges()
            await _send_body(send, 200, [(b"content-type", CONTENT_TYPE.encode())],
                             self.metrics.render())
            return
        replica_id = replica_metrics.replica_id_of(path)
        if replica_id is not None:
            await self._replica_metrics(replica_id, header(scope["headers"], b"authorization"), send)
            return
        err = NotFoundError(f"no deployment at {path}: use /<workspace>/<deployment>/<path>",
                            details={"path": path})
        self.metrics.unrouted.labels("404").inc()
        await _send_error(send, err)

    async def _replica_metrics(self, replica_id: str, authorization: bytes | None, send: Send) -> None:
        """One replica's /metrics, read with its key (see ``replica_metrics``)."""
        found = replica_metrics.find(self.router, replica_id)
        gateway_token = self._may_read_metrics(authorization)
        if not gateway_token and not replica_metrics.token_may_read(found, authorization, now=time.time()):
            await _send_error(send, _Unauthorized(
                "a replica's metrics need 'Authorization: Bearer <token>': the gateway's token, or a "
                "token of the replica's workspace (a replica that is not routed looks the same)",
                details={"replica": replica_id}))
            return
        if found is None:
            await _send_error(send, NotFoundError(
                f"no replica {replica_id} in the gateway's routing table: it stopped, or is not ready yet",
                details={"replica": replica_id}))
            return
        assert self.session is not None
        try:
            status, content_type, body = await replica_metrics.scrape(self.session, found[1])
        except (aiohttp.ClientError, TimeoutError) as exc:
            message = f"replica {replica_id} did not answer its /metrics: {exc!r}"
            await _send_error(send, UpstreamError(message, details={"replica": replica_id}))
            return
        await _send_body(send, status, [(b"content-type", content_type)], body)

    def _set_gauges(self) -> None:
        for dep in self.router.live():
            dep.metrics.in_flight.set(dep.in_flight)
            dep.metrics.queued.set(dep.queued)

    def _may_read_metrics(self, authorization: bytes | None) -> bool:
        expected = self.settings.metrics_token_sha256
        if expected is None or not authorization or authorization[:7].lower() != b"bearer ":
            return False
        digest = hashlib.sha256(authorization[7:].strip()).hexdigest()
        return hmac.compare_digest(digest, expected)

    async def _serve(
        self, dep: Deployment, rest: bytes, scope: Scope, receive: Receive, send: Send
    ) -> int:
        route = dep.route
        headers = scope["headers"]
        length = header(headers, b"content-length")
        if length is not None and length.isdigit() and int(length) > route.max_body_bytes:
            return await _send_error(send, _too_large(dep))
        try:
            body = await _read_body(receive, route.max_body_bytes)
        except _BodyTooLarge:
            return await _send_error(send, _too_large(dep))
        except _ClientGone:
            log.debug("%s: the client left before the end of its request body", dep.label)
            return CLIENT_GONE
        return await self._send_on(dep, rest, scope, body, receive, send)

    async def _send_on(self, dep: Deployment, rest: bytes, scope: Scope, body: bytes | _StreamedBody,
                       receive: Receive, send: Send) -> int:
        """Hold until a replica is ready (scale from zero), then forward ``body``."""
        route = dep.route
        headers = scope["headers"]
        if not isinstance(body, _StreamedBody) and len(body) > route.max_body_bytes:
            return await _send_error(send, _too_large(dep))
        if not dep.ready and not await dep.wait_ready(route.hold_s):
            return await _send_error(send, NoReplicaError(
                f"{dep.label} has no ready replica (waited {route.hold_s:g} s): it may be "
                "starting, scaling from zero or failing; try again shortly",
                details={"deployment": dep.label, "waited_s": route.hold_s}))
        query = scope.get("query_string") or b""
        target = rest + b"?" + query if query else rest
        client = scope.get("client")
        forwarded = request_headers(
            headers, client=client[0] if client else None, host=header(headers, b"host"),
            scheme=scope.get("scheme", "http"), strip_authorization=route.access == "private",
        )
        watch = None if isinstance(body, _StreamedBody) else receive
        return await self._forward(dep, scope["method"], target, forwarded, body, send, watch)

    async def _forward(
        self, dep: Deployment, method: str, target: bytes, headers: list[tuple[str, str]],
        body: bytes | _StreamedBody, send: Send, watch: Receive | None,
    ) -> int:
        """Send to the picked replica, retrying others while connections are refused. ``watch``
        (the client's ``receive``, once its body is read) tells a streamed answer to stop early."""
        assert self.session is not None
        tried: list[Replica] = []
        timeout = dep.client_timeout
        path = target.decode("latin-1")
        waited = False
        while True:
            replica = dep.pick(tried, now=time.monotonic())
            if replica is None or len(tried) >= self.settings.max_tries:
                if tried and not waited and await dep.wait_update(min(dep.route.hold_s, REPLACEMENT_WAIT_S)):
                    waited, tried = True, []  # every replica refused: try the next table's
                    continue
                return await _send_error(send, NoReplicaError(
                    f"{dep.label}: no replica accepted a connection ({len(tried)} tried)",
                    details={"deployment": dep.label, "tried": [r.replica_id for r in tried]}))
            if tried:
                dep.metrics.retries.inc()
            tried.append(replica)
            replica.outstanding += 1
            dep.in_flight += 1
            try:
                data = body.iterate() if isinstance(body, _StreamedBody) else body
                sent = [*headers, (REPLICA_KEY_HEADER, replica.key)] if replica.key else headers
                async with self.session.request(
                    method, URL(replica.endpoint + path, encoded=True), headers=sent,
                    data=data, timeout=timeout, allow_redirects=False,
                ) as resp:
                    return await _relay(resp, send, watch)
            except aiohttp.ClientConnectorError:
                replica.failed_until = time.monotonic() + FAILED_BACKOFF_S
                continue
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                # The replica closed the connection before answering (a draining replica closes
                # its idle keep-alive connections): a buffered body can go to another replica.
                replica.failed_until = time.monotonic() + FAILED_BACKOFF_S
                if isinstance(body, _StreamedBody):
                    return await _send_error(send, UpstreamError(
                        f"{dep.label}: replica {replica.replica_id} closed the connection",
                        details={"deployment": dep.label, "replica": replica.replica_id}))
                continue
            except (TimeoutError, aiohttp.ServerTimeoutError):
                return await _send_error(send, HandlerTimeoutError(
                    f"{dep.label}: the replica sent nothing for {dep.route.timeout_s:g} s",
                    details={"deployment": dep.label, "timeout_s": dep.route.timeout_s}))
            except _ResponseStarted as started:
                return started.status
            except aiohttp.ClientError as exc:
                if isinstance(body, _StreamedBody) and body.too_large:
                    return await _send_error(send, _too_large(dep))
                if isinstance(body, _StreamedBody) and body.client_gone:
                    log.debug("%s: the client left while its body streamed", dep.label)
                    return CLIENT_GONE
                return await _send_error(send, UpstreamError(
                    f"{dep.label}: replica {replica.replica_id} failed: {type(exc).__name__}",
                    details={"deployment": dep.label, "replica": replica.replica_id}))
            finally:
                replica.outstanding -= 1
                dep.in_flight -= 1


class _ResponseStarted(Exception):
    """The upstream broke after the client got the status line: nothing left to answer."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


async def _relay(resp: aiohttp.ClientResponse, send: Send, watch: Receive | None) -> int:
    headers = response_headers(resp.raw_headers)
    length = resp.content_length
    if length is not None and length <= BUFFER_BYTES:
        data = await resp.read()
        await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        await send({"type": "http.response.body", "body": data})
        return resp.status
    await send({"type": "http.response.start", "status": resp.status, "headers": headers})
    gone = asyncio.ensure_future(_disconnected(watch)) if watch is not None else None
    try:
        async for chunk in resp.content.iter_any():
            if gone is not None and gone.done():
                resp.close()  # the client left: let the replica see it (a generator stops)
                return resp.status
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.debug("upstream broke mid-response: %r", exc)
        raise _ResponseStarted(resp.status) from exc
    finally:
        if gone is not None:
            gone.cancel()
    await send({"type": "http.response.body", "body": b""})
    return resp.status


async def _disconnected(receive: Receive) -> None:
    """Returns once the client has gone (the request body was read before)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class _StreamedBody:
    """A request body too big to buffer: the buffered head, then the rest as it arrives."""

    def __init__(self, head: bytes, receive: Receive, limit: int) -> None:
        self.head = head
        self.receive = receive
        self.limit = limit
        self.size = len(head)
        self.too_large = False
        self.client_gone = False
        self._used = False

    async def iterate(self) -> AsyncIterator[bytes]:
        if self._used:
            raise RuntimeError("a streamed body can be sent once")
        self._used = True
        yield self.head
        more = True
        while more:
            message = await self.receive()
            if message["type"] != "http.request":
                self.client_gone = True
                raise aiohttp.ClientPayloadError("the client went away")
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            self.size += len(chunk)
            if self.size > self.limit:
                self.too_large = True
                raise aiohttp.ClientPayloadError("request body over the limit")
            if chunk:
                yield chunk


async def _read_body(receive: Receive, limit: int) -> bytes | _StreamedBody:
    message = await receive()
    if message["type"] != "http.request":
        raise _ClientGone
    body = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise _BodyTooLarge
        return body
    parts = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] != "http.request":
            raise _ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        parts.append(chunk)
        if size > BUFFER_BYTES and message.get("more_body", False):
            return _StreamedBody(b"".join(parts), receive, limit)
    return b"".join(parts)


def _too_large(dep: Deployment) -> PayloadTooLargeError:
    limit = dep.route.max_body_bytes
    return PayloadTooLargeError(f"{dep.label} accepts request bodies up to {limit} bytes",
                                details={"max_body_bytes": limit})


async def _send_body(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _send_error(send: Send, exc: NubisError, *, openai: bool = False, param: str | None = None,
                      code: str | None = None) -> int:
    """``exc`` in nubis's error shape, or in OpenAI's (``/v1/`` paths: the ``openai`` client's class)."""
    body = (openai_error_body(exc, param=param, code=code) if openai
            else json.dumps(exc.to_body()).encode())
    await _send_body(send, exc.http_status, JSON_HEADERS, body)
    return exc.http_status
