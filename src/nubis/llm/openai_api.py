"""The OpenAI wire format over an :class:`~nubis.llm.engine.Engine`.

``OpenAIServer`` answers ``/v1/chat/completions``, ``/v1/completions`` and ``/v1/models`` the way
OpenAI does, so the ``openai`` client and tools built on it work unchanged: requests tolerate
fields we do not know (as OpenAI does), responses and ``chat.completion.chunk`` /
``text_completion`` stream chunks have OpenAI's shapes, and errors are
``{"error": {"message", "type", "param", "code"}}`` with the status the client turns into the
right exception (404 ``NotFoundError`` for an unknown model, 400 ``BadRequestError`` for a bad
parameter or a prompt that does not fit). A client that goes away stops its generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import anyio
import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from nubis.errors import NubisError
from nubis.llm.engine import Engine, EngineStats, FinishReason, Generation, SamplingParams
from nubis.llm.metrics import LLMMetrics

log = logging.getLogger("nubis.llm")

JSON = "application/json"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
DONE = b"data: [DONE]\n\n"
MAX_STOP = 4
CLIENT_GONE = 499  # never sent: the client left
_UNION_MEMBER = re.compile(r"^(str|int|float|bool|list|dict|none)(\[.*\])?$|^[\w-]+\[")


# ── requests: OpenAI's fields; unknown ones are ignored, as OpenAI does ────────────────────────────


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool | None = False


class _GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, n: int | None) -> int | None:
        if n not in (None, 1):
            raise ValueError("only n=1 is supported; send the request again for another choice")
        return n

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and len(stop) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences")
        return stop

    def sampling(self, max_tokens: int) -> SamplingParams:
        stops = [self.stop] if isinstance(self.stop, str) else self.stop or []
        temperature = 1.0 if self.temperature is None else self.temperature
        top_p = 1.0 if self.top_p is None else self.top_p
        if top_p == 0:  # the limit of nucleus sampling: the most likely token
            temperature, top_p = 0.0, 1.0
        return SamplingParams(
            max_tokens=max_tokens, temperature=temperature, top_p=top_p,
            stop=tuple(s for s in stops if s), seed=self.seed,
        )

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None

    @field_validator("content")
    @classmethod
    def _text_only(cls, content: str | list[dict[str, Any]] | None) -> str | list[dict[str, Any]] | None:
        if isinstance(content, list):
            for part in content:
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise ValueError("only text content parts ({'type': 'text', 'text': ...}) are supported")
        return content

    def as_template_input(self) -> dict[str, str]:
        content = self.content
        if isinstance(content, list):
            content = "".join(part["text"] for part in content)
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": content or ""}


class ChatCompletionRequest(_GenerateRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_GenerateRequest):
    prompt: str | list[str]

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, prompt: str | list[str]) -> str | list[str]:
        if isinstance(prompt, list) and len(prompt) != 1:
            raise ValueError("send one prompt per request (a string, or a list of one string)")
        return prompt

    def text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


# ── responses ───────────────────────────────────────────────────────────────────────────────────────


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, gen: Generation) -> Usage:
        total = gen.prompt_tokens + gen.completion_tokens
        return cls(prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens,
                   total_tokens=total)


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    logprobs: None = None
    finish_reason: FinishReason


class _Answer(BaseModel):
    """What every OpenAI answer object starts with (one ``id`` across a stream's chunks)."""

    id: str
    created: int
    model: str
    system_fingerprint: None = None


class ChatCompletion(_Answer):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]
    usage: Usage


class ChatChunkChoice(BaseModel):
    index: int = 0
    delta: dict[str, str]
    logprobs: None = None
    finish_reason: FinishReason | None = None


class ChatCompletionChunk(_Answer):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    logprobs: None = None
    finish_reason: FinishReason | None = None


class Completion(_Answer):
    """A ``text_completion``: the whole answer, or one chunk of a stream (then ``usage`` is null
    but in the last chunk, when the client asked for it)."""

    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "nubis"
    max_model_len: int


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class OpenAIError(Exception):
    """An error answered in OpenAI's shape; ``status`` decides the ``openai`` client's class."""

    def __init__(
        self, message: str, *, status: int = 400, type: str = "invalid_request_error",
        param: str | None = None, code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message, self.status, self.type, self.param, self.code = message, status, type, param, code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}

    def response(self) -> Response:
        return Response(json.dumps(self.body()), status_code=self.status, media_type=JSON)


def internal_error() -> OpenAIError:
    return OpenAIError("The server had an error while processing your request; see the replica's log.",
                       status=500, type="server_error")


# ── serving ─────────────────────────────────────────────────────────────────────────────────────────


class OpenAIServer:
    """One model's OpenAI endpoints over a started engine."""

    def __init__(
        self, engine: Engine, *, model: str, max_tokens_default: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.model = model
        self.max_tokens_default = max_tokens_default
        self.clock = clock
        self.pending = 0
        """Requests this server holds before the engine has them (parsing, templating, queuing)."""
        self.metrics = LLMMetrics(model, self.load)

    def load(self) -> EngineStats:
        stats = self.engine.stats()
        return EngineStats(running=stats.running, waiting=stats.waiting + self.pending)

    def models(self) -> Response:
        card = ModelCard(id=self.model, created=int(time.time()),
                         max_model_len=self.engine.info.context_length)
        return Response(ModelList(data=[card]).model_dump_json(), media_type=JSON)

    async def chat_completions(self, request: Request) -> Response:
        return await self._serve(request, ChatCompletionRequest)

    async def completions(self, request: Request) -> Response:
        return await self._serve(request, CompletionRequest)

    async def _serve(self, request: Request, kind: type[_GenerateRequest]) -> Response:
        arrived = self.clock()
        self.pending += 1
        try:
            body = await self._parse(request, kind)
            gen = await self._generate(body)
        except OpenAIError as exc:
            return exc.response()
        except ClientDisconnect:  # gone before its body arrived: nobody to answer
            raise
        except NubisError as exc:  # the body limit
            return OpenAIError(exc.message, status=exc.http_status).response()
        except Exception:
            log.exception("could not start a generation")
            return internal_error().response()
        finally:
            self.pending -= 1
        self.metrics.prompt_tokens.inc(gen.prompt_tokens)
        exchange = Exchange(gen, self.metrics, arrived=arrived, clock=self.clock)
        reply = _Reply(self.model, chat=isinstance(body, ChatCompletionRequest))
        if body.stream:
            return EventStream(reply.events(exchange, include_usage=body.include_usage), exchange.close)
        try:
            text = await exchange.collect(_disconnected(request.receive))
        except Exception:
            log.exception("generation failed")
            return internal_error().response()
        if text is None:
            return Response(status_code=CLIENT_GONE)
        return Response(reply.whole(text, gen), media_type=JSON)

    async def _parse(self, request: Request, kind: type[_GenerateRequest]) -> _GenerateRequest:
        raw = await request.body()
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise OpenAIError("We could not parse the JSON body of your request: send a JSON object "
                              "(see https://platform.openai.com/docs/api-reference).")
        try:
            body = kind.model_validate(data)
        except pydantic.ValidationError as exc:
            raise _invalid(exc) from None
        if body.model != self.model:
            raise OpenAIError(f"The model '{body.model}' does not exist: this endpoint serves "
                              f"'{self.model}'.", status=404, param="model", code="model_not_found")
        return body

    async def _generate(self, body: _GenerateRequest) -> Generation:
        if isinstance(body, ChatCompletionRequest):
            where = "messages"
            try:
                prompt = self.engine.chat_prompt([m.as_template_input() for m in body.messages])
            except ValueError as exc:
                raise OpenAIError(f"The messages cannot be rendered by the model's chat template: {exc}",
                                  param="messages") from None
        else:
            assert isinstance(body, CompletionRequest)
            where, prompt = "prompt", body.text()
        context = self.engine.info.context_length
        prompt_tokens = self.engine.count_tokens(prompt)
        asked = body.requested_max_tokens()
        room = context - prompt_tokens
        if room < 1 or (asked is not None and asked > room):
            completion = asked or 1
            raise OpenAIError(
                f"This model's maximum context length is {context} tokens. However, you requested "
                f"{prompt_tokens + completion} tokens ({prompt_tokens} in the {where}, {completion} in "
                f"the completion). Please reduce the length of the {where} or completion.",
                param=where, code="context_length_exceeded",
            )
        max_tokens = asked or min(room, self.max_tokens_default or room)
        try:
            return await self.engine.generate(prompt, body.sampling(max_tokens))
        except ValueError as exc:
            raise OpenAIError(str(exc), param=where) from None


def _invalid(exc: pydantic.ValidationError) -> OpenAIError:
    first = exc.errors(include_url=False, include_input=False)[0]
    loc = [str(p) for p in first["loc"] if not _UNION_MEMBER.match(str(p))]
    param = loc[0] if loc else None
    where = ".".join(loc) or "(body)"
    if first["type"] == "missing":
        return OpenAIError(f"Missing required parameter: '{where}'.", param=param,
                           code="missing_required_parameter")
    message = first["msg"].removeprefix("Value error, ")
    return OpenAIError(f"Invalid value for '{where}': {message}.", param=param, code="invalid_value")


class Exchange:
    """One request's generation: its deltas timed for the metrics, closed exactly once."""

    def __init__(self, gen: Generation, metrics: LLMMetrics, *, arrived: float,
                 clock: Callable[[], float]) -> None:
        self.gen = gen
        self.metrics = metrics
        self.arrived = arrived
        self.clock = clock
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.counted = 0  # completion tokens already added to nubis_llm_generation_tokens
        self.closed = False

    async def deltas(self) -> AsyncIterator[str]:
        async for delta in self.gen:
            if not delta:
                continue
            now = self.clock()
            if self.first_at is None:
                self.first_at = now
                self.metrics.time_to_first_token.observe(now - self.arrived)
            self.last_at = now
            self._count_tokens()
            yield delta

    def _count_tokens(self) -> None:
        """Tokens count as they are generated, so the counter's rate is the replica's tokens/s (the
        autoscaler's second signal) during a long stream, not a jump at its end."""
        new = self.gen.completion_tokens - self.counted
        if new > 0:
            self.metrics.generation_tokens.inc(new)
            self.counted += new

    async def collect(self, disconnected: Awaitable[None]) -> str | None:
        """The whole text, or None when ``disconnected`` finished first (the client left)."""
        parts: list[str] = []

        async def run() -> None:
            async for delta in self.deltas():
                parts.append(delta)

        work = asyncio.ensure_future(run())
        gone = asyncio.ensure_future(disconnected)
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
            await self.close()
        if work.cancelled():
            return None
        work.result()
        return "".join(parts)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with anyio.CancelScope(shield=True):  # the request may be being cancelled: free the slot anyway
            await self.gen.aclose()
        self._count_tokens()
        self.metrics.finished(completion_tokens=self.gen.completion_tokens, first_token_at=self.first_at,
                              end=self.last_at or self.clock())


async def _disconnected(receive: Receive) -> None:
    """Returns when the client has gone (the body was read: nothing else can come)."""
    while (await receive())["type"] != "http.disconnect":
        pass


class _Reply:
    """The OpenAI objects of one answer: one id and creation time across its chunks."""

    def __init__(self, model: str, *, chat: bool) -> None:
        self.model = model
        self.chat = chat
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())

    def whole(self, text: str, gen: Generation) -> bytes:
        finish = gen.finish_reason or "stop"
        head = {"id": self.id, "created": self.created, "model": self.model, "usage": Usage.of(gen)}
        if self.chat:
            choice = ChatChoice(message=AssistantMessage(content=text), finish_reason=finish)
            return ChatCompletion(**head, choices=[choice]).model_dump_json().encode()
        return Completion(**head, choices=[CompletionChoice(text=text, finish_reason=finish)]) \
            .model_dump_json().encode()

    def chunk(self, text: str | None, *, role: bool = False, finish: FinishReason | None = None) -> bytes:
        head = {"id": self.id, "created": self.created, "model": self.model}
        if self.chat:
            delta = {"role": "assistant", "content": ""} if role else {}
            if text is not None:
                delta["content"] = text
            obj: BaseModel = ChatCompletionChunk(
                **head, choices=[ChatChunkChoice(delta=delta, finish_reason=finish)])
        else:
            obj = Completion(**head, choices=[CompletionChoice(text=text or "", finish_reason=finish)])
        return b"data: " + obj.model_dump_json().encode() + b"\n\n"

    def usage_chunk(self, gen: Generation) -> bytes:
        head = {"id": self.id, "created": self.created, "model": self.model, "choices": [],
                "usage": Usage.of(gen)}
        obj = ChatCompletionChunk(**head) if self.chat else Completion(**head)
        return b"data: " + obj.model_dump_json().encode() + b"\n\n"

    async def events(self, exchange: Exchange, *, include_usage: bool) -> AsyncIterator[bytes]:
        """OpenAI's SSE: (chat: a role chunk), content chunks, the finish chunk, the usage chunk
        when asked, ``[DONE]``. An engine failure mid-stream is an ``error`` object, then
        ``[DONE]`` (the ``openai`` client raises ``APIError``)."""
        if self.chat:
            yield self.chunk(None, role=True)
        try:
            async for delta in exchange.deltas():
                yield self.chunk(delta)
        except Exception:
            log.exception("generation failed mid-stream")
            yield b"data: " + json.dumps(internal_error().body()).encode() + b"\n\n" + DONE
            return
        finally:
            await exchange.close()
        gen = exchange.gen
        yield self.chunk(None, finish=gen.finish_reason or "stop")
        if include_usage:
            yield self.usage_chunk(gen)
        yield DONE


class EventStream(StreamingResponse):
    """An SSE response whose generation is closed however the response ends: finished, the
    client gone (Starlette cancels the body), or never started."""

    def __init__(self, events: AsyncIterator[bytes], close: Callable[[], Awaitable[None]]) -> None:
        super().__init__(events, media_type="text/event-stream", headers=SSE_HEADERS)
        self.close = close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.close()
