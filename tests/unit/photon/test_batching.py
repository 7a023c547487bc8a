"""``Batcher``: coalescing, size cap, lone requests, per-item failures, shutdown."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from nubis.errors import HandlerError
from nubis.photon.batching import Batcher

BatchFn = Callable[[list[dict[str, Any]]], Awaitable[list[Any]]]


class Recorder:
    """A batched handler that doubles ``x`` and records every batch it was called with."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    async def __call__(self, items: list[dict[str, Any]]) -> list[Any]:
        xs = [item["x"] for item in items]
        self.batches.append(xs)
        if any(x < 0 for x in xs):
            raise ValueError(f"negative x in {xs}")
        return [x * 2 for x in xs]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


async def started(call: BatchFn, **options: Any) -> Batcher:
    batcher = Batcher(call, **{"max_batch_size": 8, "max_wait_ms": 20, **options})
    batcher.start()
    return batcher


@pytest.fixture
async def batcher(recorder: Recorder) -> AsyncIterator[Batcher]:
    batcher = await started(recorder)
    yield batcher
    await batcher.stop()


async def test_concurrent_items_are_coalesced_up_to_the_max(batcher: Batcher, recorder: Recorder) -> None:
    results = await asyncio.gather(*(batcher.submit({"x": i}) for i in range(20)))
    assert results == [i * 2 for i in range(20)]
    assert [len(b) for b in recorder.batches] == [8, 8, 4]
    assert sorted(x for b in recorder.batches for x in b) == list(range(20))


async def test_a_lone_item_is_answered_after_max_wait(recorder: Recorder) -> None:
    batcher = await started(recorder, max_wait_ms=5)
    try:
        assert await asyncio.wait_for(batcher.submit({"x": 21}), 2) == 42
    finally:
        await batcher.stop()
    assert recorder.batches == [[21]]


async def test_zero_wait_still_takes_what_is_already_queued(recorder: Recorder) -> None:
    batcher = await started(recorder, max_wait_ms=0)
    try:
        results = await asyncio.gather(*(batcher.submit({"x": i}) for i in range(5)))
    finally:
        await batcher.stop()
    assert results == [0, 2, 4, 6, 8]
    assert recorder.batches == [[0, 1, 2, 3, 4]]


async def test_on_batch_reports_each_batch_size(recorder: Recorder) -> None:
    sizes: list[int] = []
    batcher = await started(recorder, max_batch_size=3, on_batch=sizes.append)
    try:
        await asyncio.gather(*(batcher.submit({"x": i}) for i in range(7)))
    finally:
        await batcher.stop()
    assert sizes == [3, 3, 1]


async def test_a_failing_item_fails_only_its_own_request(batcher: Batcher, recorder: Recorder) -> None:
    results = await asyncio.gather(*(batcher.submit({"x": x}) for x in [1, 2, -3, 4]), return_exceptions=True)
    assert results[:2] == [2, 4]
    assert results[3] == 8
    assert isinstance(results[2], ValueError)
    assert str(results[2]) == "negative x in [-3]"
    # the whole batch first, then each item alone to find the bad one
    assert recorder.batches == [[1, 2, -3, 4], [1], [2], [-3], [4]]


async def test_an_exception_returned_in_place_fails_only_that_item() -> None:
    async def call(items: list[dict[str, Any]]) -> list[Any]:
        return [KeyError(i["x"]) if i["x"] == "bad" else i["x"].upper() for i in items]

    batcher = await started(call)
    try:
        results = await asyncio.gather(
            *(batcher.submit({"x": x}) for x in ["a", "bad", "c"]), return_exceptions=True
        )
    finally:
        await batcher.stop()
    assert results[0] == "A"
    assert results[2] == "C"
    assert isinstance(results[1], KeyError)


@pytest.mark.parametrize(
    ("returned", "got"),
    [([1], "1"), ([1, 2, 3], "3"), ({"a": 1}, "dict"), (None, "NoneType")],
)
async def test_a_result_of_the_wrong_shape_fails_every_item(returned: Any, got: str) -> None:
    async def call(items: list[dict[str, Any]]) -> Any:
        return returned

    batcher = await started(call)
    try:
        results = await asyncio.gather(*(batcher.submit({"x": i}) for i in range(2)), return_exceptions=True)
    finally:
        await batcher.stop()
    for result in results:
        assert isinstance(result, HandlerError)
        assert result.message == (
            f"a batched handler must return a list with one result per item: called with 2 items, got {got}"
        )


async def test_several_workers_run_batches_concurrently() -> None:
    running = 0
    peak = 0
    both_in = asyncio.Event()

    async def call(items: list[dict[str, Any]]) -> list[Any]:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 2:
            both_in.set()
        await asyncio.wait_for(both_in.wait(), 2)
        running -= 1
        return [i["x"] for i in items]

    batcher = await started(call, max_batch_size=1, max_wait_ms=0, workers=2)
    try:
        assert await asyncio.gather(batcher.submit({"x": 1}), batcher.submit({"x": 2})) == [1, 2]
    finally:
        await batcher.stop()
    assert peak == 2


async def test_cancelled_requests_are_dropped_from_the_batch(recorder: Recorder) -> None:
    gate = asyncio.Event()

    async def slow(items: list[dict[str, Any]]) -> list[Any]:
        await gate.wait()
        return await recorder(items)

    batcher = await started(slow, max_batch_size=2, max_wait_ms=0)
    try:
        first = asyncio.create_task(batcher.submit({"x": 1}))
        await asyncio.sleep(0)  # the worker takes item 1 and blocks on the gate
        await asyncio.sleep(0)
        doomed = asyncio.create_task(batcher.submit({"x": 2}))
        kept = asyncio.create_task(batcher.submit({"x": 3}))
        await asyncio.sleep(0)
        doomed.cancel()
        gate.set()
        assert await first == 2
        assert await kept == 6
    finally:
        await batcher.stop()
    assert recorder.batches == [[1], [3]]


async def test_stop_fails_queued_requests_instead_of_hanging() -> None:
    gate = asyncio.Event()

    async def blocked(items: list[dict[str, Any]]) -> list[Any]:
        await gate.wait()
        return [0] * len(items)

    batcher = await started(blocked, max_batch_size=1, max_wait_ms=0)
    first = asyncio.create_task(batcher.submit({"x": 1}))
    await asyncio.sleep(0)
    queued = asyncio.create_task(batcher.submit({"x": 2}))
    await asyncio.sleep(0)
    await batcher.stop()
    with pytest.raises(HandlerError, match="the photon is shutting down"):
        await asyncio.wait_for(queued, 1)
    first.cancel()


async def test_start_twice_does_not_add_workers(recorder: Recorder) -> None:
    batcher = await started(recorder, max_batch_size=4, max_wait_ms=20)
    batcher.start()
    try:
        await asyncio.gather(*(batcher.submit({"x": i}) for i in range(4)))
    finally:
        await batcher.stop()
    assert recorder.batches == [[0, 1, 2, 3]]
