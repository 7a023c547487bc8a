"""The LLM photon served for real (``python -m nubis.photon.serve``, the transformers engine, the
tiny random model built here) and driven with the real ``openai`` client, as a user's code would.

The tiny model's text is gibberish, so these tests check the protocol, not the words.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from e2e.test_metrics_promtool import check_metrics, promtool
from nubis.llm.tiny import build_tiny_model

from servers import PhotonProcess, photon_process

openai = pytest.importorskip("openai")
pytest.importorskip("transformers")

MODEL = "tiny"
PHOTON = "from nubis.llm.photon import LLM  # what `nubis llm deploy` serves\n"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PhotonProcess]:
    root = tmp_path_factory.mktemp("llm")
    model = build_tiny_model(root / "tiny-model")
    photon = root / "llm_photon.py"
    photon.write_text(PHOTON)
    env = {
        "NUBIS_LLM_MODEL": str(model),
        "NUBIS_LLM_NAME": MODEL,
        "NUBIS_LLM_MAX_TOKENS_DEFAULT": "16",
        "NUBIS_LLM_OPTIONS": '{"max_batch_size": 4}',
        "HF_HUB_OFFLINE": "1",
        "NUBIS_HOME": str(root / "home"),
    }
    with photon_process(f"{photon}:LLM", env=env) as process:
        yield process


@pytest.fixture
def client(served: PhotonProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key="anything", max_retries=0, timeout=60)


def chat(content: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": content}]


def scrape(served: PhotonProcess) -> str:
    r = httpx.get(f"{served.url}/metrics", timeout=10)
    assert r.status_code == 200
    return r.text


def test_models_lists_the_served_model(client: openai.OpenAI) -> None:
    [model] = client.models.list().data
    assert model.id == MODEL
    assert model.object == "model"


def test_chat_completion(client: openai.OpenAI) -> None:
    done = client.chat.completions.create(model=MODEL, messages=chat("What is the capital of France?"),
                                          temperature=0, max_tokens=8, seed=1)
    assert done.object == "chat.completion"
    assert done.model == MODEL
    [choice] = done.choices
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    usage = done.usage
    assert usage is not None and usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 8
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    again = client.chat.completions.create(model=MODEL, messages=chat("What is the capital of France?"),
                                           temperature=0, max_tokens=8, seed=1)
    assert again.choices[0].message.content == choice.message.content  # greedy: the same text


def test_chat_stream_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL, messages=chat("Hello, how are you today?"), max_tokens=12, temperature=0.8, seed=3,
        stream=True, stream_options={"include_usage": True},
    )
    chunks = list(stream)  # ends at data: [DONE]
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    content = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(content) >= 2, chunks
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishing) == 1 and finishing[0].choices[0].finish_reason in ("stop", "length")
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    usage = usage_chunk.usage
    assert usage is not None and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_completion(client: openai.OpenAI) -> None:
    done = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=6,
                                     temperature=0)
    assert done.object == "text_completion"
    [choice] = done.choices
    assert isinstance(choice.text, str) and choice.finish_reason in ("stop", "length")
    usage = done.usage
    assert usage is not None and 0 < usage.completion_tokens <= 6
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    streamed = list(client.completions.create(model=MODEL, prompt=["The capital of France is"],
                                              max_tokens=6, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == choice.text


def test_errors_raise_the_openai_client_classes(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=chat("hi"))
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as several:
        client.chat.completions.create(model=MODEL, messages=chat("hi"), n=2)
    assert several.value.param == "n"
    with pytest.raises(openai.BadRequestError) as too_long:
        client.completions.create(model=MODEL, prompt="capital " * 5000, max_tokens=4)
    assert too_long.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=chat("hi"), temperature=5)


def test_a_client_that_leaves_stops_its_generation(client: openai.OpenAI, served: PhotonProcess) -> None:
    def generated() -> float:
        for line in scrape(served).splitlines():
            if line.startswith(f'nubis_llm_generation_tokens_total{{model="{MODEL}"}}'):
                return float(line.split()[-1])
        return 0.0

    before = generated()
    # this prompt and seed run the tiny model to its 400-token limit when nobody leaves
    stream = client.chat.completions.create(model=MODEL, messages=chat("Tell me a long story"),
                                            max_tokens=400, temperature=1.0, seed=2, stream=True)
    for i, _ in enumerate(stream):
        if i == 2:
            break
    stream.close()
    deadline = time.monotonic() + 20
    while f'nubis_llm_requests_running{{model="{MODEL}"}} 0.0' not in scrape(served):
        assert time.monotonic() < deadline, scrape(served)
        time.sleep(0.05)
    assert generated() - before < 400


def test_metrics_pass_promtool(client: openai.OpenAI, served: PhotonProcess, tmp_path: Path) -> None:
    client.chat.completions.create(model=MODEL, messages=chat("hi"), max_tokens=3)
    text = scrape(served)
    for name in ("nubis_llm_requests_running", "nubis_llm_requests_waiting", "nubis_llm_prompt_tokens_total",
                 "nubis_llm_generation_tokens_total", "nubis_llm_time_to_first_token_seconds_count",
                 "nubis_llm_time_per_output_token_seconds_count"):
        assert f'{name}{{model="{MODEL}"}}' in text, name
    check_metrics(promtool(), "LLM replica", text)
