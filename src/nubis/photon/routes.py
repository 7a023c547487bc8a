"""The request path of one handler: parse → (batch | call) → encode, with errors and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import json
import logging
import time
import traceback
from collections.abc import AsyncIterator
from typing import Any, get_args

import pydantic
from pydantic_core import PydanticSerializationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from nubis.errors import (
    BadRequestError,
    HandlerError,
    HandlerTimeoutError,
    NotReadyError,
    NubisError,
    PayloadTooLargeError,
    ValidationError,
)
from nubis.photon.batching import Batcher
from nubis.photon.files import File
from nubis.photon.handler import HandlerSpec
from nubis.photon.metrics import HandlerMetrics
from nubis.photon.runtime import PhotonRuntime, PhotonState

log = logging.getLogger("nubis.photon")
CLIENT_GONE = 499  # "client closed request" (nginx): counted in metrics, never sent

JSON = "application/json"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
_END = object()


def error_response(exc: NubisError) -> Response:
    return Response(json.dumps(exc.to_body()), status_code=exc.http_status, media_type=JSON)


def _json_fallback(value: Any) -> Any:
    """Encode what pydantic does not know: numpy arrays and scalars, torch tensors."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return tolist()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def validation_error(exc: pydantic.ValidationError) -> NubisError:
    errors = exc.errors(include_url=False, include_input=False)
    if errors and errors[0]["type"] == "json_invalid":
        return BadRequestError(
            "the request body is not valid JSON: send an object of the handler's parameters, "
            'e.g. {"text": "hello"}'
        )
    details = [
        {
            "field": ".".join(str(p) for p in e["loc"]) or "(body)",
            "message": e["msg"],
            "type": e["type"],
        }
        for e in errors
    ]
    fields = ", ".join(f"{d['field']} ({d['message']})" for d in details)
    return ValidationError(f"invalid request: {fields}", details=details)


class HandlerRoute:
    """Serves one handler. ``handle`` is the Starlette endpoint."""

    def __init__(self, spec: HandlerSpec, runtime: PhotonRuntime, metrics: HandlerMetrics) -> None:
        self.spec = spec
        self.runtime = runtime
        self.metrics = metrics
        self.limit = runtime.settings.max_body_size
        self.debug = runtime.settings.debug
        self.batcher: Batcher | None = None
        limit = spec.options.concurrency
        self.sem = asyncio.Semaphore(limit) if limit and not spec.batched else None
        fields = spec.request_model.model_fields
        self.text_params = frozenset(n for n, f in fields.items() if _takes_text(f.annotation))

    def start(self) -> None:
        if self.spec.batched:
            self.batcher = Batcher(
                self._call_batch,
                max_batch_size=self.spec.options.max_batch_size,
                max_wait_ms=self.spec.options.max_wait_ms,
                workers=self.spec.options.concurrency or 1,
                on_batch=self.metrics.batch_sizes().observe,
            )
            self.batcher.start()

    async def stop(self) -> None:
        if self.batcher is not None:
            await self.batcher.stop()

    async def handle(self, request: Request) -> Response:
        start = time.perf_counter()
        self.metrics.in_flight.inc()
        streaming = False
        try:
            response = await self._handle(request)
            streaming = self.spec.streaming and isinstance(response, StreamingResponse)
        except NubisError as exc:
            response = self._failed(exc)
        except ClientDisconnect:  # the caller left during its body: nobody to answer, no error
            log.debug("%s: the client left before the end of its request body", self.spec.name)
            response = Response(status_code=CLIENT_GONE)
        except Exception as exc:  # a bug of ours: still one clean error body
            log.exception("unexpected error in %s", self.spec.name)
            response = self._failed(HandlerError(f"internal error: {type(exc).__name__}"))
        finally:
            if not streaming:
                self.metrics.in_flight.dec()
        self.metrics.done(response.status_code, time.perf_counter() - start)
        return response

    def _failed(self, exc: NubisError) -> Response:
        self.metrics.error(exc.code)
        return error_response(exc)

    async def _handle(self, request: Request) -> Response:
        runtime = self.runtime
        if runtime.state is not PhotonState.ready:
            raise NotReadyError(_not_ready_message(runtime.state))
        kwargs = await self._parse(request)
        if self.spec.streaming:
            return await self._stream(kwargs)
        if self.sem is None:
            result = await self._invoke(kwargs)
        elif self.spec.is_async:
            async with self.sem:
                result = await self._invoke(kwargs)
        else:  # the thread frees the slot (see _in_thread), even after a timeout stopped waiting
            await self.sem.acquire()
            result = await self._invoke(kwargs, self.sem)
        return self._encode(result)

    async def _read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            raise _too_large(self.limit)
        chunks = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.limit:
                raise _too_large(self.limit)
            chunks.append(chunk)
        return b"".join(chunks)

    async def _parse(self, request: Request) -> dict[str, Any]:
        model = self.spec.request_model
        if self.spec.request_param is not None:  # the handler reads the body, within the limit
            declared = request.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > self.limit:
                raise _too_large(self.limit)
            return {self.spec.request_param: Request(request.scope, self._limited(request.receive))}
        try:
            if self.spec.options.method == "GET":
                return model.model_validate(dict(request.query_params)).__dict__
            ctype = request.headers.get("content-type", "")
            if ctype.startswith("multipart/form-data"):
                return model.model_validate(await self._parse_form(request)).__dict__
            body = await self._read_body(request)
            return model.model_validate_json(body or b"{}").__dict__
        except pydantic.ValidationError as exc:
            raise validation_error(exc) from None

    async def _parse_form(self, request: Request) -> dict[str, Any]:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            raise _too_large(self.limit)
        limited = Request(request.scope, self._limited(request.receive))  # chunked bodies too
        try:
            form = await limited.form(max_part_size=self.limit)
        except HTTPException as exc:  # starlette's answer to a malformed multipart body
            raise BadRequestError(f"invalid multipart body: {exc.detail}") from None
        data: dict[str, Any] = {}
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                data[key] = File(await value.read(), value.filename, value.content_type)
            elif key in self.spec.file_params or key in self.text_params:
                data[key] = value  # text stays text, even "123" or "null"
            else:  # form fields are text: numbers, lists and objects come as JSON
                try:
                    data[key] = json.loads(value)
                except ValueError:
                    data[key] = value
        return data

    def _limited(self, receive: Any) -> Any:
        """``receive`` that raises once the body grows past the limit."""
        size = 0

        async def limited_receive() -> Any:
            nonlocal size
            message = await receive()
            size += len(message.get("body", b""))
            if size > self.limit:
                raise _too_large(self.limit)
            return message

        return limited_receive

    async def _invoke(self, kwargs: dict[str, Any], slot: asyncio.Semaphore | None = None) -> Any:
        spec = self.spec
        if self.batcher is not None:
            call = self.batcher.submit(kwargs)
        elif spec.is_async:
            call = spec.func(self.runtime.instance, **kwargs)
        else:
            call = self._in_thread(kwargs, slot)
        try:
            if spec.options.timeout is None:
                return await call
            return await asyncio.wait_for(call, spec.options.timeout)
        except (NubisError, ClientDisconnect):
            raise
        except TimeoutError:
            raise HandlerTimeoutError(
                f"handler {spec.name!r} did not answer within {spec.options.timeout} s"
            ) from None
        except Exception as exc:
            raise self._user_error(exc) from None

    def _in_thread(self, kwargs: dict[str, Any], slot: asyncio.Semaphore | None) -> Any:
        """Run a sync handler in the pool; its ``concurrency`` slot is freed when the thread ends."""
        loop = asyncio.get_running_loop()
        future = self.runtime.executor.submit(
            functools.partial(self.spec.func, self.runtime.instance, **kwargs)
        )
        if slot is not None:
            future.add_done_callback(lambda _: _call_soon(loop, slot.release))
        return asyncio.wrap_future(future, loop=loop)

    async def _call_batch(self, items: list[dict[str, Any]]) -> list[Any]:
        spec = self.spec
        columns = {p: [item[p] for item in items] for p in spec.params}
        if spec.is_async:
            return await spec.func(self.runtime.instance, **columns)
        return await asyncio.get_running_loop().run_in_executor(
            self.runtime.executor, functools.partial(spec.func, self.runtime.instance, **columns)
        )

    def _user_error(self, exc: BaseException) -> NubisError:
        if isinstance(exc, NubisError):
            return exc
        log.error("handler %s raised %s: %s", self.spec.name, type(exc).__name__, exc)
        details = None
        if self.debug:
            details = {"traceback": "".join(traceback.format_exception(exc))}
        return HandlerError(f"{type(exc).__name__}: {exc}", details=details)

    def _encode(self, result: Any) -> Response:
        if isinstance(result, Response):  # the handler answered itself (status, headers, body)
            return result
        spec = self.spec
        if spec.binary_response or not spec.response_annotated:
            file = _as_file(result)
            if file is not None:
                return Response(file.data, media_type=file.content_type, headers=_file_headers(file))
        try:
            body = spec.response_adapter.dump_json(result, warnings=False, fallback=_json_fallback)
        except (PydanticSerializationError, TypeError, ValueError) as exc:
            raise HandlerError(
                f"handler {spec.name!r} returned a value that cannot be sent as JSON: {exc}"
            ) from None
        return Response(body, media_type=JSON)

    async def _stream(self, kwargs: dict[str, Any]) -> StreamingResponse:
        if self.sem is not None:
            await self.sem.acquire()
        try:
            gen = self.spec.func(self.runtime.instance, **kwargs)
        except Exception as exc:
            if self.sem is not None:
                self.sem.release()
            raise self._user_error(exc) from None
        return StreamingResponse(
            self._events(gen), media_type="text/event-stream", headers=SSE_HEADERS
        )

    def _release(self) -> None:
        if self.sem is not None:
            self.sem.release()
        self.metrics.in_flight.dec()

    async def _events(self, gen: Any) -> AsyncIterator[bytes]:
        dump = self.spec.response_adapter.dump_json
        try:
            async for item in self._items(gen):
                yield b"data: " + dump(item, warnings=False, fallback=_json_fallback) + b"\n\n"
            yield b"event: end\ndata: null\n\n"
        except Exception as exc:
            err = self._user_error(exc)
            self.metrics.error(err.code)
            yield b"event: error\ndata: " + json.dumps(err.to_body()).encode() + b"\n\n"
        finally:
            self._release()

    async def _items(self, gen: Any) -> AsyncIterator[Any]:
        if hasattr(gen, "__aiter__"):
            try:
                async for item in gen:
                    yield item
            finally:
                await gen.aclose()
            return
        loop = asyncio.get_running_loop()
        executor = self.runtime.executor
        iterator = iter(gen)
        try:
            while (item := await loop.run_in_executor(executor, next, iterator, _END)) is not _END:
                yield item
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                await loop.run_in_executor(executor, close)


def _not_ready_message(state: PhotonState) -> str:
    if state is PhotonState.starting:
        return "the photon is starting: init() has not finished yet; retry shortly or poll /readyz"
    if state is PhotonState.failed:
        return "the photon failed in init(); see its logs"
    return "the photon is shutting down"


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop closed while a timed-out thread ran on
        loop.call_soon_threadsafe(callback)


def _takes_text(annotation: Any) -> bool:
    """A ``str`` (or ``str | None``) parameter takes a form field's text as it is."""
    return annotation is str or str in get_args(annotation)


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"request body is larger than the limit of {limit} bytes; send less, or raise the limit "
        "with --max-body-size / NUBIS_MAX_BODY_SIZE"
    )


def _as_file(result: Any) -> File | None:
    if isinstance(result, File):
        return result
    if isinstance(result, bytes | bytearray | memoryview):
        return File(bytes(result))
    if type(result).__module__.startswith("PIL.") and hasattr(result, "save"):
        buf = io.BytesIO()
        result.save(buf, format="PNG")
        return File(buf.getvalue(), content_type="image/png")
    return None


def _file_headers(file: File) -> dict[str, str] | None:
    if file.filename:
        safe = file.filename.replace('"', "").replace("\r", "").replace("\n", "")
        return {"content-disposition": f'inline; filename="{safe}"'}
    return None
