"""The one interface every LLM engine implements (``transformers``, ``llama.cpp``, ``vllm``).

An engine owns one loaded model and batches what arrives together. The OpenAI layer
(``nubis.llm.openai_api``) never touches a model: it renders the chat template, calls
``generate`` and turns the :class:`Generation` it gets into OpenAI responses or SSE chunks.

    engine = load_engine("transformers", Path("model.gguf"), model_id="smollm2")
    await engine.start()
    gen = await engine.generate(engine.chat_prompt(messages), SamplingParams(max_tokens=32))
    async for delta in gen:          # text as it is produced, stop strings already cut
        ...
    gen.prompt_tokens, gen.completion_tokens, gen.finish_reason   # "stop" | "length"
    await gen.aclose()               # a client that went away: its generation stops, its slot frees
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """What OpenAI's request carries; ``temperature == 0`` is greedy decoding."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass
class EngineStats:
    """What the replica exports for the autoscaler and people (``nubis_llm_*`` metrics)."""

    running: int = 0
    """Requests generating now."""
    waiting: int = 0
    """Requests admitted by the server but not yet generating (the batch is full)."""


class Generation(abc.ABC):
    """One request's output: an async iterator of text deltas. ``prompt_tokens`` is known at
    once; ``completion_tokens`` and ``finish_reason`` are final once the iteration ends."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: FinishReason | None = None

    def __aiter__(self) -> AsyncIterator[str]:
        return self.deltas()

    @abc.abstractmethod
    def deltas(self) -> AsyncIterator[str]:
        """The text as it is produced (never splitting a UTF-8 character; stop strings cut)."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Stop generating (the client left) and free what the request held; idempotent."""


@dataclass
class ModelInfo:
    id: str
    """The name the OpenAI API shows (the deployment's model name)."""
    path: Path
    context_length: int
    engine: str
    extra: dict[str, Any] = field(default_factory=dict)


class Engine(abc.ABC):
    """A loaded model. ``start`` loads it (slow: run it in ``init``), ``stop`` frees it."""

    name: str = ""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @property
    @abc.abstractmethod
    def info(self) -> ModelInfo: ...

    @abc.abstractmethod
    def chat_prompt(self, messages: Sequence[Mapping[str, str]]) -> str:
        """The model's chat template applied to OpenAI ``messages``, with the assistant turn
        opened; ``ValueError`` (→ 400) for messages the template refuses."""

    @abc.abstractmethod
    def count_tokens(self, text: str) -> int: ...

    @abc.abstractmethod
    async def generate(self, prompt: str, params: SamplingParams) -> Generation:
        """Queue ``prompt``; ``ValueError`` (→ 400) when it cannot fit the context."""

    @abc.abstractmethod
    def stats(self) -> EngineStats: ...
