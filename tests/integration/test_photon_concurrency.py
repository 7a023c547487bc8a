"""Sync handlers run in threads, async ones on the loop; ``concurrency`` caps overlap."""

import asyncio
import threading
import time

import nubis
from nubis.photon.testing import photon_http


class Mixed(nubis.Photon):
    started = threading.Event()
    release = threading.Event()

    @nubis.handler
    def slow(self) -> dict[str, bool]:
        self.started.set()
        return {"released": self.release.wait(timeout=5)}

    @nubis.handler
    async def ping(self) -> str:
        return "pong"


async def test_a_sync_handler_does_not_block_the_event_loop() -> None:
    Mixed.started.clear()
    Mixed.release.clear()
    try:
        async with photon_http(Mixed) as http:
            slow = asyncio.create_task(http.post("/slow", json={}))
            # if `slow` ran on the loop, nothing below would run before its 5 s wait ran out
            assert await asyncio.to_thread(Mixed.started.wait, 5)
            ping = await http.post("/ping", json={})
            assert ping.json() == "pong"
            assert not slow.done()
            Mixed.release.set()
            r = await slow
    finally:
        Mixed.release.set()
    assert r.json() == {"released": True}


class Tracker:
    """Counts how many calls run at once, from any thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.calls = 0

    def __enter__(self) -> None:
        with self.lock:
            self.now += 1
            self.calls += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.now -= 1


class Limited(nubis.Photon):
    tracker = Tracker()

    @nubis.handler(concurrency=1)
    def one_at_a_time(self, i: int) -> int:
        with self.tracker:
            time.sleep(0.02)
        return i

    @nubis.handler(concurrency=1)
    async def aone_at_a_time(self, i: int) -> int:
        with self.tracker:
            await asyncio.sleep(0.02)
        return i


class Overlapping(nubis.Photon):
    tracker = Tracker()
    barrier = threading.Barrier(4, timeout=5)

    @nubis.handler
    def together(self, i: int) -> int:
        with self.tracker:
            self.barrier.wait()
        return i


async def test_concurrency_one_never_overlaps_sync_calls() -> None:
    Limited.tracker = Tracker()
    async with photon_http(Limited) as http:
        rs = await asyncio.gather(*(http.post("/one_at_a_time", json={"i": i}) for i in range(5)))
    assert [r.json() for r in rs] == list(range(5))
    assert Limited.tracker.calls == 5
    assert Limited.tracker.peak == 1


async def test_concurrency_one_never_overlaps_async_calls() -> None:
    Limited.tracker = Tracker()
    async with photon_http(Limited) as http:
        rs = await asyncio.gather(*(http.post("/aone_at_a_time", json={"i": i}) for i in range(5)))
    assert [r.json() for r in rs] == list(range(5))
    assert Limited.tracker.calls == 5
    assert Limited.tracker.peak == 1


async def test_without_a_limit_sync_calls_run_in_parallel_threads() -> None:
    Overlapping.tracker = Tracker()
    Overlapping.barrier.reset()
    async with photon_http(Overlapping) as http:
        rs = await asyncio.gather(*(http.post("/together", json={"i": i}) for i in range(4)))
    # each call waits at a barrier for all four: this completes only if they overlap
    assert [r.status_code for r in rs] == [200] * 4
    assert Overlapping.tracker.peak == 4


class Unsafe(nubis.Photon):
    """A model that must never run twice at once, with calls that can time out."""

    tracker = Tracker()
    gate = threading.Event()

    @nubis.handler(concurrency=1, timeout=0.05)
    def predict(self, i: int) -> int:
        with self.tracker:
            self.gate.wait(timeout=5)
        return i


async def test_a_timed_out_sync_call_keeps_its_slot_until_its_thread_ends() -> None:
    Unsafe.tracker = Tracker()
    Unsafe.gate.clear()
    try:
        async with photon_http(Unsafe) as http:
            first = await http.post("/predict", json={"i": 1})
            assert first.status_code == 504  # the client stopped waiting; the thread runs on
            second = asyncio.create_task(http.post("/predict", json={"i": 2}))
            done, _ = await asyncio.wait({second}, timeout=0.3)
            assert not done  # queued behind the thread still running, not beside it
            Unsafe.gate.set()
            r = await second
    finally:
        Unsafe.gate.set()
    assert (r.status_code, r.json()) == (200, 2)
    assert Unsafe.tracker.calls == 2
    assert Unsafe.tracker.peak == 1
