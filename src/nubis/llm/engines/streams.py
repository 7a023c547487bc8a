"""What every engine shares between its generating thread and the event loop.

``TextStream`` turns tokens into text deltas that never split a UTF-8 character and never show a
stop string; ``ThreadedGeneration`` is the :class:`~nubis.llm.engine.Generation` an engine thread
feeds through ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from nubis.llm.engine import FinishReason, Generation


class StopMatcher:
    """Cuts the text at the first stop string; holds back a tail that may be the start of one."""

    def __init__(self, stop: Sequence[str]) -> None:
        self._stop = tuple(s for s in stop if s)
        self._pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """The part of ``text`` that can be shown now (``stopped`` once a stop string appeared)."""
        if self.stopped:
            return ""
        text = self._pending + text
        self._pending = ""
        cut = min((i for i in (text.find(s) for s in self._stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            return text[:cut]
        hold = max((_overlap(text, s) for s in self._stop), default=0)
        if hold:
            self._pending = text[-hold:]
            return text[:-hold]
        return text

    def flush(self) -> str:
        """What was held back, at the end of the generation (it was not a stop string)."""
        text, self._pending = ("" if self.stopped else self._pending), ""
        return text


def _overlap(text: str, stop: str) -> int:
    """The length of the longest end of ``text`` that is a start of ``stop``."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0


class TextStream:
    """Incremental detokenization over token ids (the window method of TGI and vLLM): decode a few
    tokens of context plus the new ones and show only what is new and complete, so a character
    split over several byte tokens appears once whole, and tokenizers that drop a leading space
    on their own stay right."""

    def __init__(self, decode: Callable[[Sequence[int]], str], stop: Sequence[str] = ()) -> None:
        self._decode = decode
        self._ids: list[int] = []
        self._prefix = 0
        self._read = 0
        self.stop = StopMatcher(stop)

    def push(self, token_id: int) -> str:
        """The text that became final with ``token_id`` (stop strings cut)."""
        self._ids.append(token_id)
        before = self._decode(self._ids[self._prefix : self._read])
        after = self._decode(self._ids[self._prefix :])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return self.stop.feed(after[len(before) :])

    def finish(self) -> str:
        """What is left at the end: held back stop-string starts, an incomplete tail."""
        if self.stop.stopped:
            return ""
        tail = ""
        if self._read < len(self._ids):
            before = self._decode(self._ids[self._prefix : self._read])
            tail = self._decode(self._ids[self._prefix :])[len(before) :]
        return self.stop.feed(tail) + self.stop.flush()


class Utf8Stream:
    """The same for engines that hand out bytes per token (llama.cpp)."""

    def __init__(self, stop: Sequence[str] = ()) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.stop = StopMatcher(stop)

    def push(self, piece: bytes) -> str:
        return self.stop.feed(self._decoder.decode(piece))

    def finish(self) -> str:
        if self.stop.stopped:
            return ""
        return self.stop.feed(self._decoder.decode(b"", final=True)) + self.stop.flush()


@dataclass(frozen=True)
class _Done:
    finish_reason: FinishReason
    completion_tokens: int


@dataclass(frozen=True)
class _Failed:
    error: BaseException


class ThreadedGeneration(Generation):
    """Deltas produced by an engine thread, read on the event loop. The thread calls
    :meth:`put`, :meth:`done` or :meth:`fail` (any thread); ``aclose`` calls ``on_close`` once."""

    def __init__(
        self, *, prompt_tokens: int, on_close: Callable[[], None], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.prompt_tokens = prompt_tokens
        self._on_close = on_close
        self._loop = loop
        self._queue: asyncio.Queue[str | _Done | _Failed] = asyncio.Queue()
        self._closed = False
        self._finished = False

    # --- the engine thread's side
    def _send(self, item: str | _Done | _Failed) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody reads any more
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def put(self, delta: str) -> None:
        if delta:
            self._send(delta)

    def done(self, finish_reason: FinishReason, completion_tokens: int) -> None:
        self._send(_Done(finish_reason, completion_tokens))

    def fail(self, error: BaseException) -> None:
        self._send(_Failed(error))

    # --- the event loop's side
    async def deltas(self) -> AsyncIterator[str]:
        while not self._finished:
            item = await self._queue.get()
            if isinstance(item, str):
                yield item
                continue
            self._finished = True
            if isinstance(item, _Failed):
                raise item.error
            self.finish_reason = item.finish_reason
            self.completion_tokens = item.completion_tokens

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            if not self._finished:
                self._on_close()
