"""Adaptive batching: coalesce concurrent single-item requests into one handler call.

A batch closes when it holds ``max_batch_size`` items or ``max_wait_ms`` has passed since its
first item arrived, whichever comes first. Items that queued while the previous batch ran are
taken at once, so under load batches fill without waiting and when idle a lone request waits at
most ``max_wait_ms``. A failing batch is retried item by item, so one bad item fails only its own
request; a handler may also return an exception instance in an item's place to fail that item.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from nubis.errors import HandlerError

BatchCall = Callable[[list[dict[str, Any]]], Awaitable[list[Any]]]


class Batcher:
    def __init__(
        self,
        call: BatchCall,
        *,
        max_batch_size: int,
        max_wait_ms: float,
        workers: int = 1,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._call = call
        self._max = max_batch_size
        self._wait = max_wait_ms / 1000.0
        self._workers = workers
        self._on_batch = on_batch
        self._queue: asyncio.Queue[tuple[dict[str, Any], asyncio.Future[Any]]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._run()) for _ in range(self._workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        while not self._queue.empty():
            _, fut = self._queue.get_nowait()
            if not fut.done():
                fut.set_exception(HandlerError("the photon is shutting down"))

    async def submit(self, kwargs: dict[str, Any]) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((kwargs, fut))
        return await fut

    async def _collect(self) -> list[tuple[dict[str, Any], asyncio.Future[Any]]]:
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait
        while len(batch) < self._max:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return [(kw, fut) for kw, fut in batch if not fut.done()]  # drop cancelled requests

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            if not batch:
                continue
            if self._on_batch is not None:
                self._on_batch(len(batch))
            try:
                await self._dispatch(batch)
            except asyncio.CancelledError:  # stopped mid-call: answer, never leave a caller waiting
                for _, fut in batch:
                    _settle(fut, HandlerError("the photon is shutting down"))
                raise

    async def _dispatch(self, batch: list[tuple[dict[str, Any], asyncio.Future[Any]]]) -> None:
        try:
            results = await self._call([kw for kw, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc)
                return
            for item in batch:  # isolate the bad item: only its own request fails
                await self._dispatch([item])
            return
        if not isinstance(results, list | tuple) or len(results) != len(batch):
            got = len(results) if isinstance(results, list | tuple) else type(results).__name__
            err = HandlerError(
                f"a batched handler must return a list with one result per item: "
                f"called with {len(batch)} items, got {got}"
            )
            for _, fut in batch:
                _settle(fut, err)
            return
        for (_, fut), result in zip(batch, results, strict=True):
            _settle(fut, result)


def _settle(fut: asyncio.Future[Any], result: Any) -> None:
    if fut.done():
        return
    if isinstance(result, BaseException):
        fut.set_exception(result)
    else:
        fut.set_result(result)
