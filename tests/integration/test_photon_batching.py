"""Adaptive batching over HTTP: coalescing, per-item failures, wrong lengths, metrics."""

import asyncio
from collections.abc import Callable

import pytest

import nubis
from nubis.photon.loader import load_photon
from nubis.photon.testing import photon_http


class Doubler(nubis.Photon):
    """Hints describe one request; each parameter arrives as a list, one item per request."""

    batches: list[list[int]] = []

    @nubis.handler(max_batch_size=8, max_wait_ms=20)
    def double(self, x: int) -> int:
        self.batches.append(list(x))
        if any(v < 0 for v in x):
            raise ValueError(f"negative input in {x}")
        return [v * 2 for v in x]

    @nubis.handler(max_batch_size=8, max_wait_ms=20)
    async def adouble(self, x: int, offset: int) -> int:
        self.batches.append(list(x))
        return [v * 2 + o for v, o in zip(x, offset, strict=True)]

    @nubis.handler(max_batch_size=8, max_wait_ms=20)
    def picky(self, x: int) -> int:
        return [ValueError(f"{v} is odd") if v % 2 else v for v in x]

    @nubis.handler(max_batch_size=8, max_wait_ms=20)
    def short(self, x: int) -> int:
        return x[:-1]


class Stuck(nubis.Photon):
    async def init(self) -> None:
        self.never = asyncio.Event()

    @nubis.handler(max_batch_size=4, max_wait_ms=1, timeout=0.05)
    async def wait(self, x: int) -> int:
        await self.never.wait()
        return x


@pytest.fixture(autouse=True)
def fresh_batches() -> None:
    Doubler.batches = []


async def call_all(http, path: str, bodies: list[dict]) -> list:
    return await asyncio.gather(*(http.post(path, json=body) for body in bodies))


async def test_concurrent_requests_are_coalesced() -> None:
    async with photon_http(Doubler) as http:
        rs = await call_all(http, "/double", [{"x": i} for i in range(20)])
    assert [r.status_code for r in rs] == [200] * 20
    assert [r.json() for r in rs] == [i * 2 for i in range(20)]
    sizes = [len(b) for b in Doubler.batches]
    assert sum(sizes) == 20
    assert max(sizes) > 1
    assert max(sizes) <= 8


async def test_async_batched_handlers_get_one_list_per_parameter() -> None:
    async with photon_http(Doubler) as http:
        rs = await call_all(http, "/adouble", [{"x": i, "offset": 100} for i in range(10)])
    assert [r.json() for r in rs] == [i * 2 + 100 for i in range(10)]
    assert max(len(b) for b in Doubler.batches) > 1


async def test_a_lone_request_is_answered_after_max_wait() -> None:
    async with photon_http(Doubler) as http:
        r = await asyncio.wait_for(http.post("/double", json={"x": 21}), 5)
    assert (r.status_code, r.json()) == (200, 42)
    assert Doubler.batches == [[21]]


async def test_a_bad_item_fails_only_its_own_request() -> None:
    async with photon_http(Doubler) as http:
        rs = await call_all(http, "/double", [{"x": x} for x in [1, 2, -3, 4]])
    assert [r.status_code for r in rs] == [200, 200, 500, 200]
    assert [r.json() for r in rs[:2]] + [rs[3].json()] == [2, 4, 8]
    assert rs[2].json() == {
        "error": {
            "code": "handler_error",
            "message": "ValueError: negative input in [-3]",
            "details": None,
        }
    }
    assert Doubler.batches[0] == [1, 2, -3, 4]  # tried together first, then one by one
    assert sorted(Doubler.batches[1:]) == [[-3], [1], [2], [4]]


async def test_an_exception_returned_in_place_fails_only_that_request() -> None:
    async with photon_http(Doubler) as http:
        rs = await call_all(http, "/picky", [{"x": x} for x in [2, 3, 4]])
    assert [r.status_code for r in rs] == [200, 500, 200]
    assert rs[0].json() == 2
    assert rs[2].json() == 4
    assert rs[1].json() == {
        "error": {"code": "handler_error", "message": "ValueError: 3 is odd", "details": None}
    }


async def test_a_result_of_the_wrong_length_fails_every_request() -> None:
    async with photon_http(Doubler) as http:
        rs = await call_all(http, "/short", [{"x": x} for x in [1, 2, 3]])
    for r in rs:
        assert r.status_code == 500
        assert r.json() == {
            "error": {
                "code": "handler_error",
                "message": "a batched handler must return a list with one result per item: "
                "called with 3 items, got 2",
                "details": None,
            }
        }


async def test_validation_happens_per_request_before_batching() -> None:
    async with photon_http(Doubler) as http:
        rs = await asyncio.gather(
            http.post("/double", json={"x": "seven"}), http.post("/double", json={"x": 7})
        )
    assert rs[0].status_code == 422
    assert rs[0].json()["error"]["details"][0]["field"] == "x"
    assert rs[1].json() == 14
    assert Doubler.batches == [[7]]


async def test_batch_sizes_are_in_the_metrics(metric: Callable[[str, str], float | None]) -> None:
    async with photon_http(Doubler) as http:
        await call_all(http, "/double", [{"x": i} for i in range(12)])
        text = (await http.get("/metrics")).text
    count = metric(text, 'nubis_photon_batch_size_count{handler="double"}')
    total = metric(text, 'nubis_photon_batch_size_sum{handler="double"}')
    assert count == len(Doubler.batches)
    assert total == 12
    assert metric(text, 'nubis_photon_batch_size_bucket{handler="double",le="8.0"}') == count
    assert metric(text, 'nubis_photon_batch_size_bucket{handler="double",le="1.0"}') == sum(
        1 for b in Doubler.batches if len(b) == 1
    )


async def test_the_digits_example_classifies_batched_requests() -> None:
    digits = load_photon("examples/digits").cls
    async with photon_http(digits) as http:
        info = (await http.get("/info")).json()
        assert info["accuracy"] > 0.9
        rs = await call_all(http, "/predict", [{"image": info["sample"]}] * 6)
        bad = await http.post("/predict", json={"image": [1, 2, 3]})
    labels = {r.json()["label"] for r in rs}
    assert len(labels) == 1
    assert all(0 <= r.json()["probability"] <= 1 for r in rs)
    assert bad.status_code == 500
    assert bad.json()["error"]["message"] == ("ValueError: each image must be 64 numbers (8x8 pixels, 0..16)")


async def test_a_batched_handler_times_out_with_504() -> None:
    async with photon_http(Stuck) as http:
        rs = await call_all(http, "/wait", [{"x": 1}, {"x": 2}])
    for r in rs:
        assert r.status_code == 504
        assert r.json() == {
            "error": {
                "code": "timeout",
                "message": "handler 'wait' did not answer within 0.05 s",
                "details": None,
            }
        }
