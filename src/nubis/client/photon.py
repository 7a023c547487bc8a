"""``nubis.PhotonClient``: call a running photon's handlers as methods.

The client reads ``GET /_nubis/manifest`` once and exposes one method per handler::

    c = nubis.PhotonClient("http://127.0.0.1:8080")
    c.echo(text="hi")              # JSON result
    for n in c.count(n=3): ...     # streaming handlers return an iterator
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Generator, Iterator
from email.message import Message
from typing import Any

import httpx

from nubis.errors import ConnectionFailedError, NotFoundError, NubisError, error_from_body
from nubis.models.photons import HandlerInfo, PhotonManifest
from nubis.photon.files import File

MANIFEST_PATH = "/_nubis/manifest"


def _headers(token: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"} if token else {}


def _bind_args(info: HandlerInfo, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
    names = list(info.request_schema.get("properties", {}))
    if len(args) > len(names):
        raise TypeError(f"{info.name}() takes {len(names)} arguments, {len(args)} given")
    bound = dict(zip(names, args, strict=False))
    dup = set(bound) & set(kwargs)
    if dup:
        raise TypeError(f"{info.name}() got multiple values for {sorted(dup)}")
    return {**bound, **kwargs}


def build_request(info: HandlerInfo, params: dict[str, Any]) -> dict[str, Any]:
    """httpx request arguments for one call: query for GET, multipart with files, JSON otherwise."""
    if info.method == "GET":
        return {"method": "GET", "url": info.path, "params": params}
    files = {k: v for k, v in params.items() if isinstance(v, File | bytes | bytearray)}
    if not files:
        return {"method": "POST", "url": info.path, "json": params}
    upload = {}
    for key, value in files.items():
        f = value if isinstance(value, File) else File(bytes(value))
        upload[key] = (f.filename or key, f.data, f.content_type)
    data = {
        k: v if isinstance(v, str) else json.dumps(v)
        for k, v in params.items()
        if k not in files and v is not None
    }
    return {"method": "POST", "url": info.path, "files": upload, "data": data}


def _filename(response: httpx.Response) -> str | None:
    disposition = response.headers.get("content-disposition")
    if not disposition:
        return None
    msg = Message()
    msg["content-disposition"] = disposition
    return msg.get_filename()


def decode_response(response: httpx.Response) -> Any:
    ctype = response.headers.get("content-type", "")
    if response.status_code >= 400:
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        raise error_from_body(response.status_code, body)
    if ctype.startswith("application/json"):
        return response.json()
    return File(response.content, filename=_filename(response), content_type=ctype or None)


class SSEDecoder:
    """Turns Server-Sent Event lines into items; raises the server's error; stops at 'end'."""

    def __init__(self) -> None:
        self.event = "message"
        self.data: list[str] = []
        self.finished = False

    def feed(self, line: str) -> list[Any]:
        """Feed one line (without newline); returns the items completed by it."""
        if line:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                self.event = value
            elif field == "data":
                self.data.append(value)
            return []
        if not self.data and self.event == "message":
            return []
        event, data = self.event, "\n".join(self.data)
        self.event, self.data = "message", []
        if event == "end":
            self.finished = True
            return []
        if event == "error":
            raise error_from_body(500, json.loads(data))
        return [json.loads(data)]


def _unreachable(url: str, exc: Exception) -> ConnectionFailedError:
    return ConnectionFailedError(f"cannot reach the photon at {url}: {exc}")


class PhotonClient:
    """Synchronous client of one running photon (or a deployment endpoint)."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=_headers(token), timeout=timeout)
        self._manifest: PhotonManifest | None = None

    def __enter__(self) -> PhotonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, **request: Any) -> httpx.Response:
        try:
            return self._http.request(**request)
        except httpx.TransportError as exc:
            raise _unreachable(self.url, exc) from None

    @property
    def manifest(self) -> PhotonManifest:
        if self._manifest is None:
            data = decode_response(self._send(method="GET", url=MANIFEST_PATH))
            self._manifest = PhotonManifest.model_validate(data)
        return self._manifest

    @property
    def handlers(self) -> list[str]:
        return [h.name for h in self.manifest.handlers]

    def handler_info(self, name: str) -> HandlerInfo:
        for info in self.manifest.handlers:
            if info.name == name:
                return info
        raise NotFoundError(f"the photon has no handler {name!r}; it has: {self.handlers}")

    def call(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        info = self.handler_info(name)
        request = build_request(info, _bind_args(info, args, kwargs))
        if info.streaming:
            return self._stream(request)
        return decode_response(self._send(**request))

    def _stream(self, request: dict[str, Any]) -> Iterator[Any]:
        try:
            with self._http.stream(**request) as response:
                if response.status_code >= 400:
                    response.read()
                    decode_response(response)
                decoder = SSEDecoder()
                for line in response.iter_lines():
                    yield from decoder.feed(line)
                    if decoder.finished:
                        return
        except httpx.TransportError as exc:
            raise _unreachable(self.url, exc) from None
        raise NubisError("the stream ended without its end event (the photon stopped?)")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        info = self.handler_info(name)

        def method(*args: Any, **kwargs: Any) -> Any:
            return self.call(info.name, *args, **kwargs)

        method.__name__ = name
        method.__doc__ = f"{info.method} {info.path}"
        return method

    def __dir__(self) -> list[str]:
        return [*super().__dir__(), *self.handlers]


class AsyncPhotonClient:
    """Async client: ``await c.echo(text="hi")``; ``async for x in c.count(n=3)`` for streams."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(base_url=self.url, headers=_headers(token), timeout=timeout)
        self._manifest: PhotonManifest | None = None

    async def __aenter__(self) -> AsyncPhotonClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, **request: Any) -> httpx.Response:
        try:
            return await self._http.request(**request)
        except httpx.TransportError as exc:
            raise _unreachable(self.url, exc) from None

    async def manifest(self) -> PhotonManifest:
        if self._manifest is None:
            data = decode_response(await self._send(method="GET", url=MANIFEST_PATH))
            self._manifest = PhotonManifest.model_validate(data)
        return self._manifest

    async def handler_info(self, name: str) -> HandlerInfo:
        manifest = await self.manifest()
        for info in manifest.handlers:
            if info.name == name:
                return info
        names = [h.name for h in manifest.handlers]
        raise NotFoundError(f"the photon has no handler {name!r}; it has: {names}")

    async def call(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        info = await self.handler_info(name)
        if info.streaming:
            raise TypeError(f"{name} streams: iterate it with `async for item in client.{name}(...)`")
        request = build_request(info, _bind_args(info, args, kwargs))
        return decode_response(await self._send(**request))

    async def stream(self, name: str, /, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        info = await self.handler_info(name)
        request = build_request(info, _bind_args(info, args, kwargs))
        try:
            async with self._http.stream(**request) as response:
                if response.status_code >= 400:
                    await response.aread()
                    decode_response(response)
                decoder = SSEDecoder()
                async for line in response.aiter_lines():
                    for item in decoder.feed(line):
                        yield item
                    if decoder.finished:
                        return
        except httpx.TransportError as exc:
            raise _unreachable(self.url, exc) from None
        raise NubisError("the stream ended without its end event (the photon stopped?)")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        def method(*args: Any, **kwargs: Any) -> _AsyncCall:
            return _AsyncCall(self, name, args, kwargs)

        method.__name__ = name
        return method


class _AsyncCall:
    """Awaitable for plain handlers, async-iterable for streaming ones."""

    def __init__(self, client: AsyncPhotonClient, name: str, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> None:
        self._client, self._name, self._args, self._kwargs = client, name, args, kwargs

    def __await__(self) -> Generator[Any, None, Any]:
        return self._client.call(self._name, *self._args, **self._kwargs).__await__()

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._client.stream(self._name, *self._args, **self._kwargs).__aiter__()
