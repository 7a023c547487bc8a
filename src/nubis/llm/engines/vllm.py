"""The ``vllm`` engine, for GPU nodes (``pip install 'nubis[vllm]'`` where vLLM has a wheel).

Written against vLLM's ``AsyncLLMEngine`` (``generate`` yields cumulative outputs, ``abort``
frees a request); vLLM batches continuously and cuts stop strings itself. Not exercised here:
no GPU in CI. A GGUF file needs ``tokenizer=<a local folder with the tokenizer>`` (vLLM would
otherwise look for one on a model hub).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from nubis.llm.engine import Engine, EngineStats, Generation, ModelInfo, SamplingParams
from nubis.llm.engines.prompts import check_request, render_chat_template


class VllmEngine(Engine):
    """Options go to ``vllm.AsyncEngineArgs`` (``gpu_memory_utilization``, ``max_model_len``,
    ``tensor_parallel_size``, ``dtype``, ``tokenizer`` ...)."""

    name = "vllm"

    def __init__(self, path: Path, *, model_id: str, **engine_args: Any) -> None:
        self._path = Path(path)
        self._model_id = model_id
        self._engine_args = engine_args
        self._engine: Any = None
        self._tokenizer: Any = None
        self._context_length = 0
        self.in_flight = 0

    async def start(self) -> None:
        # vllm is the optional extra's (GPU nodes): imported when the engine starts
        from vllm import AsyncEngineArgs, AsyncLLMEngine

        args = AsyncEngineArgs(model=str(self._path), **self._engine_args)
        self._engine = AsyncLLMEngine.from_engine_args(args)
        self._tokenizer = await self._engine.get_tokenizer()
        config = await self._engine.get_model_config()
        self._context_length = int(config.max_model_len)

    async def stop(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            id=self._model_id, path=self._path, context_length=self._context_length, engine=self.name
        )

    def chat_prompt(self, messages: Sequence[Mapping[str, str]]) -> str:
        return render_chat_template(self._tokenizer, messages)

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer(text)["input_ids"])

    async def generate(self, prompt: str, params: SamplingParams) -> Generation:
        from vllm import SamplingParams as VllmSamplingParams  # loaded by start()

        prompt_tokens = self.count_tokens(prompt)
        check_request(prompt_tokens, params, context_length=self._context_length)
        sampling = VllmSamplingParams(
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            stop=list(params.stop),
            seed=params.seed,
        )
        return _VllmGeneration(self, prompt, sampling, prompt_tokens)

    def stats(self) -> EngineStats:
        return EngineStats(running=self.in_flight)


class _VllmGeneration(Generation):
    def __init__(self, engine: VllmEngine, prompt: str, sampling: Any, prompt_tokens: int) -> None:
        self._engine = engine
        self._prompt = prompt
        self._sampling = sampling
        self._id = uuid.uuid4().hex
        self._done = False
        self.prompt_tokens = prompt_tokens

    async def deltas(self) -> AsyncIterator[str]:
        shown = 0
        self._engine.in_flight += 1
        try:
            async for out in self._engine._engine.generate(self._prompt, self._sampling, self._id):
                completion = out.outputs[0]
                if len(completion.text) > shown:
                    yield completion.text[shown:]
                    shown = len(completion.text)
                self.completion_tokens = len(completion.token_ids)
                if completion.finish_reason is not None:
                    self.finish_reason = "length" if completion.finish_reason == "length" else "stop"
        finally:
            self._done = True
            self._engine.in_flight -= 1

    async def aclose(self) -> None:
        if not self._done and self._engine._engine is not None:
            self._done = True
            await self._engine._engine.abort(self._id)
