"""``@nubis.handler``: turns a photon method into an HTTP endpoint described by a ``HandlerSpec``."""

from __future__ import annotations

import collections.abc
import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin, overload

from pydantic import BaseModel, ConfigDict, TypeAdapter, create_model
from starlette.requests import Request
from starlette.responses import Response

from nubis.errors import PhotonDefinitionError
from nubis.models.photons import HandlerInfo
from nubis.photon.files import File

RESERVED_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/docs", "/openapi.json", "/redoc"})
_PATH = re.compile(r"^/[A-Za-z0-9_\-./]*$")
_STREAM_ORIGINS = {
    collections.abc.Iterator,
    collections.abc.Iterable,
    collections.abc.Generator,
    collections.abc.AsyncIterator,
    collections.abc.AsyncIterable,
    collections.abc.AsyncGenerator,
}
_BINARY_TYPES = (bytes, File)


@dataclass(frozen=True)
class HandlerOptions:
    path: str | None = None
    method: Literal["GET", "POST"] = "POST"
    max_batch_size: int = 1
    max_wait_ms: float = 5.0
    concurrency: int | None = None
    timeout: float | None = None


@dataclass(frozen=True)
class HandlerSpec:
    """Everything the runtime needs to serve one handler, inferred once at class creation."""

    name: str
    func: Callable[..., Any]
    options: HandlerOptions
    path: str
    request_model: type[BaseModel]
    response_adapter: TypeAdapter[Any]
    params: tuple[str, ...]
    file_params: tuple[str, ...]
    is_async: bool
    streaming: bool
    binary_response: bool
    response_annotated: bool = field(default=False)
    request_param: str | None = None
    """The parameter annotated ``starlette.requests.Request``: it gets the request, body unread."""

    @property
    def batched(self) -> bool:
        return self.options.max_batch_size > 1

    def info(self) -> HandlerInfo:
        return HandlerInfo(
            name=self.name,
            path=self.path,
            method=self.options.method,
            streaming=self.streaming,
            max_batch_size=self.options.max_batch_size,
            max_wait_ms=self.options.max_wait_ms if self.batched else 0.0,
            concurrency=self.options.concurrency,
            timeout=self.options.timeout,
            file_params=list(self.file_params),
            binary_response=self.binary_response,
            request_schema=self.request_model.model_json_schema(),
            response_schema=self.response_adapter.json_schema(mode="serialization"),
        )


class Handler:
    """What ``@handler`` leaves on the class: the function plus its options.

    It behaves as the plain method on instances, so handlers can call each other.
    The photon class turns it into a :class:`HandlerSpec` when the class is created.
    """

    def __init__(self, func: Callable[..., Any], options: HandlerOptions) -> None:
        if not callable(func):
            raise PhotonDefinitionError("@nubis.handler decorates a method")
        self.func = func
        self.options = options
        self.__doc__ = func.__doc__
        self.__name__ = func.__name__
        self.__wrapped__ = func

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return self.func.__get__(instance, owner)

    def build_spec(self, name: str, owner: type) -> HandlerSpec:
        return _build_spec(name, self.func, self.options, owner)


@overload
def handler(func: Callable[..., Any], /) -> Handler: ...
@overload
def handler(
    func: None = None,
    /,
    *,
    path: str | None = None,
    method: Literal["GET", "POST"] = "POST",
    max_batch_size: int = 1,
    max_wait_ms: float = 5.0,
    concurrency: int | None = None,
    timeout: float | None = None,
) -> Callable[[Callable[..., Any]], Handler]: ...


def handler(
    func: Callable[..., Any] | None = None,
    /,
    *,
    path: str | None = None,
    method: Literal["GET", "POST"] = "POST",
    max_batch_size: int = 1,
    max_wait_ms: float = 5.0,
    concurrency: int | None = None,
    timeout: float | None = None,
) -> Handler | Callable[[Callable[..., Any]], Handler]:
    """Mark a photon method as a handler, served at ``POST /<name>`` by default.

    Works bare (``@nubis.handler``) or with options. ``max_batch_size > 1`` turns on adaptive
    batching: the method is then called with a list per parameter and must return a list with
    one result per item (see docs/photon.md).
    """
    method = method.upper()  # type: ignore[assignment]
    if method not in ("GET", "POST"):
        raise PhotonDefinitionError(f"handler method must be GET or POST, not {method!r}")
    if max_batch_size < 1:
        raise PhotonDefinitionError("max_batch_size must be at least 1")
    if max_wait_ms < 0:
        raise PhotonDefinitionError("max_wait_ms cannot be negative")
    if concurrency is not None and concurrency < 1:
        raise PhotonDefinitionError("concurrency must be at least 1 (or None for no limit)")
    if timeout is not None and timeout <= 0:
        raise PhotonDefinitionError("timeout must be a positive number of seconds")
    options = HandlerOptions(path, method, max_batch_size, max_wait_ms, concurrency, timeout)
    if func is not None:
        return Handler(func, options)
    return lambda f: Handler(f, options)


def _build_spec(
    name: str, func: Callable[..., Any], options: HandlerOptions, owner: type
) -> HandlerSpec:
    where = f"{owner.__name__}.{name}"
    path = options.path or f"/{name}"
    if not path.startswith("/"):
        path = "/" + path
    if not _PATH.match(path):
        raise PhotonDefinitionError(f"{where}: path {path!r} may only use letters, digits, _-./")
    if path in RESERVED_PATHS or path.startswith("/_nubis"):
        raise PhotonDefinitionError(f"{where}: path {path!r} is reserved; pass path='/other'")

    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception as exc:  # unresolvable forward references in user code
        raise PhotonDefinitionError(f"{where}: cannot read type hints: {exc}") from exc
    sig = inspect.signature(func)
    fields: dict[str, Any] = {}
    file_params: list[str] = []
    request_param: str | None = None
    params = list(sig.parameters.values())
    if not params or params[0].name != "self":
        raise PhotonDefinitionError(f"{where}: a handler is a method; its first parameter is self")
    for p in params[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise PhotonDefinitionError(f"{where}: *args/**kwargs cannot be described over HTTP")
        if p.kind is p.POSITIONAL_ONLY:
            raise PhotonDefinitionError(f"{where}: positional-only parameters are not supported")
        annotation = hints.get(p.name, Any)
        if isinstance(annotation, type) and issubclass(annotation, Request):
            request_param = p.name
            continue
        if _mentions_file(annotation):
            file_params.append(p.name)
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[p.name] = (annotation, default)

    if request_param is not None and (fields or options.max_batch_size > 1):
        raise PhotonDefinitionError(
            f"{where}: a handler that takes the Request reads the body itself: "
            "it has no other parameters and cannot be batched"
        )

    model_name = f"{owner.__name__}_{name}_Request"
    try:
        request_model = create_model(  # type: ignore[call-overload]
            model_name, __config__=ConfigDict(extra="forbid"), **fields
        )
    except Exception as exc:
        raise PhotonDefinitionError(f"{where}: parameters cannot be described: {exc}") from exc

    is_async = inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)
    ret = hints.get("return", Any)
    streaming = inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func)
    item_type = ret
    if isinstance(ret, type) and issubclass(ret, Response):  # sent as it is
        item_type = Any
    elif get_origin(ret) in _STREAM_ORIGINS:
        streaming = True
        args = get_args(ret)
        item_type = args[0] if args else Any
    elif streaming:
        item_type = Any
    if streaming and options.max_batch_size > 1:
        raise PhotonDefinitionError(f"{where}: a streaming handler cannot be batched")
    binary = not streaming and isinstance(item_type, type) and issubclass(item_type, _BINARY_TYPES)
    if binary and options.max_batch_size > 1:
        raise PhotonDefinitionError(f"{where}: a handler returning bytes cannot be batched")
    if options.method == "GET" and file_params:
        raise PhotonDefinitionError(f"{where}: file parameters need method='POST'")
    try:
        adapter = TypeAdapter(item_type)
    except Exception as exc:
        raise PhotonDefinitionError(f"{where}: return type cannot be described: {exc}") from exc
    return HandlerSpec(
        name=name,
        func=func,
        options=options,
        path=path,
        request_model=request_model,
        response_adapter=adapter,
        params=tuple(fields),
        file_params=tuple(file_params),
        is_async=is_async,
        streaming=streaming,
        binary_response=binary,
        response_annotated="return" in hints and item_type is not Any,
        request_param=request_param,
    )


def _mentions_file(annotation: Any) -> bool:
    if annotation is File:
        return True
    return any(_mentions_file(a) for a in get_args(annotation))
