"""The ``llama.cpp`` engine (``pip install 'nubis[llamacpp]'``: llama-cpp-python builds from source).

One ``Llama`` context serves one request at a time on a thread of its own; the others wait in
order (``stats().waiting``). llama.cpp's prompt cache reuses a shared prefix (a system prompt)
from one request to the next. Batching across requests is the transformers engine's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import random
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nubis.errors import BadRequestError
from nubis.llm.engine import Engine, EngineStats, FinishReason, Generation, ModelInfo, SamplingParams
from nubis.llm.engines.prompts import check_request
from nubis.llm.engines.streams import ThreadedGeneration, Utf8Stream

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Request:
    tokens: list[int]
    params: SamplingParams
    generation: ThreadedGeneration
    cancelled: threading.Event = field(default_factory=threading.Event)


class LlamaCppEngine(Engine):
    """Options: ``context_length`` (the model's own by default), ``threads`` (every core here),
    ``extra_buffers`` (llama.cpp's weight repacking; off by default on CPUs that advertise AMX:
    ggml's AMX matmul crashed with a segmentation fault on such a Xeon VM, llama-cpp-python 0.3.36)."""

    name = "llama.cpp"

    def __init__(
        self,
        path: Path,
        *,
        model_id: str,
        context_length: int | None = None,
        threads: int | None = None,
        extra_buffers: bool | None = None,
    ) -> None:
        self._path = Path(path)
        self._model_id = model_id
        self._context_length = context_length
        self._threads = threads or len(os.sched_getaffinity(0))
        self._extra_buffers = not _cpu_has_amx() if extra_buffers is None else extra_buffers
        self._llm: Any = None
        self._chat: Any = None
        self._inbox: queue.SimpleQueue[_Request | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._waiting = 0
        self._running = 0
        self._thread: threading.Thread | None = None

    async def start(self) -> None:
        if self._thread is None:
            await asyncio.to_thread(self._load)

    def _load(self) -> None:
        # llama_cpp is the optional extra's: imported when the engine starts
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        if not self._path.is_file() or self._path.suffix != ".gguf":
            raise BadRequestError(f"the llama.cpp engine loads a .gguf file; {self._path} is not one")
        with _model_params(use_extra_bufts=self._extra_buffers):
            self._llm = Llama(
                model_path=str(self._path),
                n_ctx=self._context_length or 0,  # 0: the context the model was trained with
                n_threads=self._threads,
                verbose=False,
            )
        self._context_length = self._llm.n_ctx()
        template = self._llm.metadata.get("tokenizer.chat_template")
        if template:
            vocab = self._llm._model
            self._chat = Jinja2ChatFormatter(
                template=template,
                eos_token=vocab.token_get_text(self._llm.token_eos()),
                bos_token=vocab.token_get_text(self._llm.token_bos()),
            )
        self._thread = threading.Thread(target=self._run, name="nubis-llama-cpp", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        if self._thread is not None:
            self._inbox.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            id=self._model_id, path=self._path, context_length=self._context_length or 0, engine=self.name
        )

    def chat_prompt(self, messages: Sequence[Mapping[str, str]]) -> str:
        if self._chat is None:
            raise ValueError("this model has no chat template: use /v1/completions with a plain prompt")
        try:
            return self._chat(messages=[dict(m) for m in messages]).prompt
        except Exception as e:  # jinja2's TemplateError, the template's raise_exception
            raise ValueError(f"the chat template refused these messages: {e}") from e

    def _encode(self, text: str) -> list[int]:
        bos = self._llm._model.token_get_text(self._llm.token_bos())
        add_bos = not (bos and text.startswith(bos))
        return self._llm.tokenize(text.encode(), add_bos=add_bos, special=True)

    def count_tokens(self, text: str) -> int:
        return len(self._encode(text))

    async def generate(self, prompt: str, params: SamplingParams) -> Generation:
        if self._thread is None:
            raise RuntimeError("the engine is not started")
        tokens = self._encode(prompt)
        check_request(len(tokens), params, context_length=self._context_length or 0)
        request: _Request | None = None
        generation = ThreadedGeneration(
            prompt_tokens=len(tokens),
            on_close=lambda: request.cancelled.set() if request else None,
            loop=asyncio.get_running_loop(),
        )
        request = _Request(tokens, params, generation)
        with self._lock:
            self._waiting += 1
        self._inbox.put(request)
        return generation

    def stats(self) -> EngineStats:
        with self._lock:
            return EngineStats(running=self._running, waiting=self._waiting)

    # --- the engine thread
    def _run(self) -> None:
        while (request := self._inbox.get()) is not None:
            with self._lock:
                self._waiting -= 1
                self._running = 0 if request.cancelled.is_set() else 1
            if request.cancelled.is_set():
                continue
            try:
                self._generate(request)
            except Exception as e:  # one request's failure, never the engine's
                log.exception("llama.cpp generation failed")
                request.generation.fail(e)
            with self._lock:
                self._running = 0

    def _generate(self, request: _Request) -> None:
        import llama_cpp  # loaded already by _load

        params, llm = request.params, self._llm
        llm.set_seed(params.seed if params.seed is not None else random.randrange(2**31))
        stream = Utf8Stream(params.stop)
        count = 0
        reason: FinishReason = "length"
        for token in llm.generate(
            request.tokens,
            temp=params.temperature,
            top_p=params.top_p,
            top_k=0,  # OpenAI's sampling: no top-k, min-p, typical-p or repeat penalty
            min_p=0.0,
            typical_p=1.0,
            repeat_penalty=1.0,
        ):
            if request.cancelled.is_set():
                return
            count += 1
            if llama_cpp.llama_vocab_is_eog(llm._model.vocab, token):
                reason = "stop"
                break
            request.generation.put(stream.push(llm.detokenize([token])))
            if stream.stop.stopped:
                reason = "stop"
                break
            if count >= params.max_tokens:
                break
        request.generation.put(stream.finish())
        request.generation.done(reason, count)


def _cpu_has_amx() -> bool:
    try:
        return " amx_tile" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


_PARAMS_LOCK = threading.Lock()


@contextlib.contextmanager
def _model_params(**fields: Any) -> Iterator[None]:
    """``Llama()`` takes no ``use_extra_bufts``: set it on the default model params while it loads."""
    import llama_cpp.llama_cpp as lib  # the extra's, loaded by _load

    with _PARAMS_LOCK:
        default = lib.llama_model_default_params

        def params() -> Any:
            p = default()
            for name, value in fields.items():
                setattr(p, name, value)
            return p

        lib.llama_model_default_params = params
        try:
            yield
        finally:
            lib.llama_model_default_params = default
