"""Every failure answers one JSON body: {"error": {"code", "message", "details"}}."""

import asyncio
import threading

import nubis
from nubis.errors import NotFoundError, ValidationError
from nubis.photon.loader import load_photon
from nubis.photon.runtime import ServeSettings
from nubis.photon.testing import photon_http

Echo = load_photon("examples/echo").cls


def error(code: str, message: str, details: object = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details}}


class Faulty(nubis.Photon):
    release = threading.Event()

    @nubis.handler
    def boom(self, x: int) -> int:
        raise ValueError(f"x={x} is not welcome")

    @nubis.handler
    async def aboom(self) -> int:
        raise KeyError("missing")

    @nubis.handler
    def invalid(self, x: int) -> int:
        raise ValidationError("x must be even", details=[{"field": "x", "message": "odd"}])

    @nubis.handler
    def lookup(self, key: str) -> str:
        raise NotFoundError(f"no item {key!r}")

    @nubis.handler(timeout=0.05)
    async def slow(self) -> str:
        await asyncio.Event().wait()  # never set
        return "never"

    @nubis.handler(timeout=0.05)
    def slow_sync(self) -> str:
        self.release.wait(timeout=5)
        return "late"

    @nubis.handler
    def unencodable_any(self):
        return object()


async def test_a_missing_field_lists_it() -> None:
    async with photon_http(Echo) as http:
        r = await http.post("/echo", json={})
    assert r.status_code == 422
    assert r.json() == error(
        "validation_error",
        "invalid request: text (Field required)",
        [{"field": "text", "message": "Field required", "type": "missing"}],
    )


async def test_wrong_types_list_each_field() -> None:
    async with photon_http(Echo) as http:
        r = await http.post("/add", json={"a": "x", "b": [1]})
    assert r.status_code == 422
    assert r.json() == error(
        "validation_error",
        "invalid request: a (Input should be a valid number, unable to parse string as a number), "
        "b (Input should be a valid number)",
        [
            {
                "field": "a",
                "message": "Input should be a valid number, unable to parse string as a number",
                "type": "float_parsing",
            },
            {"field": "b", "message": "Input should be a valid number", "type": "float_type"},
        ],
    )


async def test_extra_fields_are_rejected() -> None:
    async with photon_http(Echo) as http:
        r = await http.post("/echo", json={"text": "hi", "txet": "typo"})
    assert r.status_code == 422
    assert r.json() == error(
        "validation_error",
        "invalid request: txet (Extra inputs are not permitted)",
        [{"field": "txet", "message": "Extra inputs are not permitted", "type": "extra_forbidden"}],
    )


async def test_nested_fields_are_named_with_dots() -> None:
    class Nested(nubis.Photon):
        @nubis.handler
        def total(self, orders: list[dict[str, int]]) -> int:
            return 0

    async with photon_http(Nested) as http:
        r = await http.post("/total", json={"orders": [{"a": 1}, {"b": "x"}]})
    assert r.status_code == 422
    assert r.json()["error"]["details"] == [
        {
            "field": "orders.1.b",
            "message": "Input should be a valid integer, unable to parse string as an integer",
            "type": "int_parsing",
        }
    ]


async def test_a_body_that_is_not_an_object_is_a_validation_error() -> None:
    async with photon_http(Echo) as http:
        r = await http.post("/echo", json=["hi"])
    assert r.status_code == 422
    assert r.json() == error(
        "validation_error",
        "invalid request: (body) (Input should be an object)",
        [{"field": "(body)", "message": "Input should be an object", "type": "model_type"}],
    )


async def test_invalid_json_is_a_bad_request() -> None:
    async with photon_http(Echo) as http:
        r = await http.post("/echo", content=b'{"text": "hi"', headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json() == error(
        "bad_request",
        "the request body is not valid JSON: send an object of the handler's parameters, "
        'e.g. {"text": "hello"}',
    )


async def test_an_unknown_path_is_not_found_and_lists_the_paths() -> None:
    async with photon_http(Echo) as http:
        r = await http.post("/ehco", json={"text": "hi"})
    assert r.status_code == 404
    assert r.json() == error(
        "not_found",
        "no handler at /ehco; this photon serves: /add, /aecho, /count, /echo, /reverse",
    )


async def test_a_wrong_method_is_405() -> None:
    async with photon_http(Echo) as http:
        r = await http.get("/echo")
        assert r.status_code == 405
        assert r.json() == error("method_not_allowed", "GET is not allowed on /echo")
        r = await http.delete("/echo")
        assert r.json() == error("method_not_allowed", "DELETE is not allowed on /echo")


TOO_LARGE = error(
    "payload_too_large",
    "request body is larger than the limit of 100 bytes; send less, or raise the limit "
    "with --max-body-size / NUBIS_MAX_BODY_SIZE",
)


async def test_a_body_over_the_limit_is_413() -> None:
    async with photon_http(Echo, ServeSettings(max_body_size=100)) as http:
        r = await http.post("/echo", json={"text": "x" * 200})
        assert r.status_code == 413
        assert r.json() == TOO_LARGE
        r = await http.post("/echo", json={"text": "x" * 50})
        assert r.status_code == 200


async def test_a_streamed_body_without_length_is_limited_too() -> None:
    async def chunks():
        yield b'{"text": "'
        for _ in range(10):
            yield b"x" * 20
        yield b'"}'

    async with photon_http(Echo, ServeSettings(max_body_size=100)) as http:
        r = await http.post("/echo", content=chunks())
    assert r.status_code == 413
    assert r.json() == TOO_LARGE


async def test_a_raising_handler_is_500_without_traceback() -> None:
    async with photon_http(Faulty) as http:
        r = await http.post("/boom", json={"x": 3})
        assert r.status_code == 500
        assert r.json() == error("handler_error", "ValueError: x=3 is not welcome")
        r = await http.post("/aboom", json={})
        assert r.status_code == 500
        assert r.json() == error("handler_error", "KeyError: 'missing'")


async def test_debug_mode_adds_the_traceback() -> None:
    async with photon_http(Faulty, ServeSettings(debug=True)) as http:
        r = await http.post("/boom", json={"x": 3})
    assert r.status_code == 500
    body = r.json()["error"]
    assert body["code"] == "handler_error"
    assert body["message"] == "ValueError: x=3 is not welcome"
    assert list(body["details"]) == ["traceback"]
    traceback = body["details"]["traceback"]
    assert traceback.startswith("Traceback (most recent call last):")
    assert 'raise ValueError(f"x={x} is not welcome")' in traceback
    assert traceback.rstrip().endswith("ValueError: x=3 is not welcome")


async def test_nubis_errors_raised_by_a_handler_keep_their_status_and_code() -> None:
    async with photon_http(Faulty) as http:
        r = await http.post("/invalid", json={"x": 3})
        assert r.status_code == 422
        assert r.json() == error("validation_error", "x must be even", [{"field": "x", "message": "odd"}])
        r = await http.post("/lookup", json={"key": "k"})
        assert r.status_code == 404
        assert r.json() == error("not_found", "no item 'k'")


async def test_a_slow_async_handler_times_out_with_504() -> None:
    async with photon_http(Faulty) as http:
        r = await http.post("/slow", json={})
    assert r.status_code == 504
    assert r.json() == error("timeout", "handler 'slow' did not answer within 0.05 s")


async def test_a_slow_sync_handler_times_out_with_504() -> None:
    Faulty.release.clear()
    try:
        async with photon_http(Faulty) as http:
            r = await http.post("/slow_sync", json={})
    finally:
        Faulty.release.set()
    assert r.status_code == 504
    assert r.json() == error("timeout", "handler 'slow_sync' did not answer within 0.05 s")


async def test_a_result_that_cannot_be_sent_as_json_is_500() -> None:
    async with photon_http(Faulty) as http:
        r = await http.post("/unencodable_any", json={})
    assert r.status_code == 500
    body = r.json()["error"]
    assert body["code"] == "handler_error"
    assert body["message"].startswith(
        "handler 'unencodable_any' returned a value that cannot be sent as JSON:"
    )
    assert body["message"].endswith("cannot encode object as JSON")
    assert body["details"] is None


async def test_a_request_before_ready_is_503() -> None:
    class Gated(nubis.Photon):
        gate = threading.Event()

        def init(self) -> None:
            self.gate.wait(timeout=10)

        @nubis.handler
        def hi(self) -> str:
            return "hi"

    try:
        async with photon_http(Gated, wait_ready=False) as http:
            r = await http.post("/hi", json={})
            assert r.status_code == 503
            assert r.json()["error"]["code"] == "not_ready"
    finally:
        Gated.gate.set()
