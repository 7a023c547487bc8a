"""The default engine: pure PyTorch through ``transformers``; safetensors folders and GGUF files.

A GGUF file is dequantized on load by transformers (``gguf_file=``, which needs the ``gguf``
package); requests are batched by :class:`~nubis.llm.engines.batching.BatchScheduler`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nubis.errors import BadRequestError, NubisError
from nubis.llm.engine import Engine, EngineStats, Generation, ModelInfo, SamplingParams
from nubis.llm.engines.prompts import check_request, render_chat_template
from nubis.llm.engines.streams import TextStream, ThreadedGeneration

DEFAULT_MAX_BATCH_SIZE = 16


class TransformersEngine(Engine):
    """Options: ``max_batch_size`` (16), ``dtype`` ("float32"; "bfloat16" halves the memory),
    ``context_length`` (the model's own by default)."""

    name = "transformers"

    def __init__(
        self,
        path: Path,
        *,
        model_id: str,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        dtype: str = "float32",
        context_length: int | None = None,
    ) -> None:
        self._path = Path(path)
        self._model_id = model_id
        self._max_batch_size = max_batch_size
        self._dtype = dtype
        self._context_length = context_length
        self._tokenizer: Any = None
        self._model: Any = None
        self._scheduler: Any = None
        self._eos_ids: set[int] = set()
        # a fast tokenizer is one Rust object: encoding (event loop) and decoding (batch thread) take turns
        self._tokenizer_lock = threading.Lock()

    async def start(self) -> None:
        if self._scheduler is None:
            await asyncio.to_thread(self._load)

    def _load(self) -> None:
        # torch/transformers are heavy: imported when an engine starts
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from nubis.llm.engines.batching import BatchScheduler

        if not self._path.exists():
            raise BadRequestError(f"no model at {self._path}")
        kwargs: dict[str, Any] = {"local_files_only": True}
        source = self._path
        if self._path.is_file():
            if importlib.util.find_spec("gguf") is None:
                raise NubisError(
                    "loading a GGUF file with the transformers engine needs the gguf package: "
                    "pip install 'nubis[llm]'"
                )
            kwargs["gguf_file"] = self._path.name
            source = self._path.parent
        self._tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, self._dtype), **kwargs)
        self._model = model.eval()
        self._eos_ids = _eos_ids(self._model, self._tokenizer)
        if self._context_length is None:
            self._context_length = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
        self._scheduler = BatchScheduler(
            self._model, eos_ids=self._eos_ids, max_batch_size=self._max_batch_size
        )
        self._scheduler.start()

    async def stop(self) -> None:
        if self._scheduler is not None:
            await asyncio.to_thread(self._scheduler.stop)
        self._scheduler = self._model = None

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            id=self._model_id,
            path=self._path,
            context_length=self._context_length or 0,
            engine=self.name,
            extra={"max_batch_size": self._scheduler.max_batch_size if self._scheduler else None},
        )

    def chat_prompt(self, messages: Sequence[Mapping[str, str]]) -> str:
        return render_chat_template(self._tokenizer, messages)

    def _encode(self, text: str) -> list[int]:
        # a rendered chat template already starts with its BOS: add none twice
        bos = self._tokenizer.bos_token
        add_special = not (bos and text.startswith(bos))
        with self._tokenizer_lock:
            return list(self._tokenizer(text, add_special_tokens=add_special)["input_ids"])

    def count_tokens(self, text: str) -> int:
        return len(self._encode(text))

    def _decode(self, ids: Sequence[int]) -> str:
        with self._tokenizer_lock:
            return self._tokenizer.decode(ids, skip_special_tokens=True)

    async def generate(self, prompt: str, params: SamplingParams) -> Generation:
        # torch: loaded already by start()
        import torch

        from nubis.llm.engines.batching import BatchRequest

        if self._scheduler is None:
            raise RuntimeError("the engine is not started")
        ids = self._encode(prompt)
        check_request(len(ids), params, context_length=self._context_length or 0)
        generator = None
        if params.temperature > 0:
            generator = torch.Generator()
            if params.seed is None:
                generator.seed()
            else:
                generator.manual_seed(params.seed)
        scheduler = self._scheduler
        request: BatchRequest | None = None
        generation = ThreadedGeneration(
            prompt_tokens=len(ids),
            on_close=lambda: scheduler.cancel(request),
            loop=asyncio.get_running_loop(),
        )
        request = BatchRequest(
            prompt_ids=ids,
            params=params,
            stream=TextStream(self._decode, params.stop),
            generation=generation,
            generator=generator,
        )
        scheduler.submit(request)
        return generation

    def stats(self) -> EngineStats:
        if self._scheduler is None:
            return EngineStats()
        running, waiting = self._scheduler.counts()
        return EngineStats(running=running, waiting=waiting)


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every id that ends a turn: the generation config's (often several), the tokenizer's."""
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config):
        eos = getattr(source, "eos_token_id", None)
        ids.update([eos] if isinstance(eos, int) else (eos or []))
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids
