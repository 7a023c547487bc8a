"""The HTTP contract of a photon app, in-process: calls, GET, OpenAPI, health, manifest, token."""

import asyncio
import threading

import numpy as np
import pydantic
import pytest

import nubis
from nubis.photon.loader import load_photon
from nubis.photon.runtime import PhotonState, ServeSettings
from nubis.photon.testing import photon_http

Echo = load_photon("examples/echo").cls


class Review(pydantic.BaseModel):
    text: str
    stars: int = 3


class Shop(nubis.Photon):
    """A shop."""

    @nubis.handler
    def rate(self, review: Review, weight: float = 1.0) -> dict[str, float]:
        """Weighted stars."""
        return {"score": review.stars * weight}

    @nubis.handler(method="GET")
    def search(self, q: str, limit: int = 10, exact: bool = False) -> dict:
        return {"q": q, "limit": limit, "exact": exact}

    @nubis.handler(path="/v1/item", method="GET")
    def read_item(self) -> str:
        return "read"

    @nubis.handler(path="/v1/item")
    def write_item(self, name: str) -> str:
        return f"wrote {name}"

    @nubis.handler
    def nothing(self) -> None:
        return None

    @nubis.handler
    def untyped(self, x):
        return {"got": x}

    @nubis.handler
    def arrays(self, n: int):
        values = np.arange(n, dtype=np.float32)
        return {"values": values, "total": values.sum(), "shape": values.shape}

    @nubis.handler
    def review(self, text: str) -> Review:
        return Review(text=text)


async def test_post_json_object_returns_json() -> None:
    async with photon_http(Echo) as http:
        r = await http.post("/echo", json={"text": "hi"})
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        assert r.json() == {"text": "hi"}

        r = await http.post("/aecho", json={"text": "async"})
        assert r.json() == {"text": "async"}

        r = await http.post("/add", json={"a": 1.5})
        assert r.json() == 1.5
        r = await http.post("/add", json={"a": 1, "b": 2})
        assert r.json() == 3.0


async def test_nested_models_defaults_and_untyped_values() -> None:
    async with photon_http(Shop) as http:
        r = await http.post("/rate", json={"review": {"text": "ok"}, "weight": 2})
        assert r.json() == {"score": 6.0}
        r = await http.post("/nothing", json={})
        assert (r.status_code, r.json()) == (200, None)
        r = await http.post("/nothing")  # an empty body is an empty object
        assert (r.status_code, r.json()) == (200, None)
        r = await http.post("/untyped", json={"x": [1, {"a": None}]})
        assert r.json() == {"got": [1, {"a": None}]}


async def test_numpy_values_and_models_are_sent_as_json() -> None:
    async with photon_http(Shop) as http:
        r = await http.post("/arrays", json={"n": 3})
        assert r.json() == {"values": [0.0, 1.0, 2.0], "total": 3.0, "shape": [3]}
        r = await http.post("/review", json={"text": "fine"})
        assert r.json() == {"text": "fine", "stars": 3}


async def test_get_handlers_read_query_parameters() -> None:
    async with photon_http(Shop) as http:
        r = await http.get("/search", params={"q": "shoes", "limit": "3", "exact": "true"})
        assert r.status_code == 200
        assert r.json() == {"q": "shoes", "limit": 3, "exact": True}
        r = await http.get("/search", params={"q": "hats"})
        assert r.json() == {"q": "hats", "limit": 10, "exact": False}


async def test_get_handlers_reject_unknown_and_missing_query_parameters() -> None:
    async with photon_http(Shop) as http:
        r = await http.get("/search", params={"q": "x", "page": "2"})
        assert r.status_code == 422
        assert r.json()["error"]["details"] == [
            {"field": "page", "message": "Extra inputs are not permitted", "type": "extra_forbidden"}
        ]
        r = await http.get("/search")
        assert r.status_code == 422
        assert r.json()["error"]["details"] == [
            {"field": "q", "message": "Field required", "type": "missing"}
        ]


async def test_one_path_can_answer_get_and_post() -> None:
    async with photon_http(Shop) as http:
        assert (await http.get("/v1/item")).json() == "read"
        assert (await http.post("/v1/item", json={"name": "x"})).json() == "wrote x"


async def test_openapi_lists_every_handler_with_its_request_schema() -> None:
    async with photon_http(Shop) as http:
        r = await http.get("/openapi.json")
        assert r.status_code == 200
        spec = r.json()
    paths = spec["paths"]
    assert {"/rate", "/search", "/v1/item", "/nothing", "/untyped"} <= set(paths)
    assert set(paths["/v1/item"]) == {"get", "post"}

    rate = paths["/rate"]["post"]
    assert rate["operationId"] == "rate"
    assert rate["summary"] == "Weighted stars."
    body = rate["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/Shop_rate_Request"}
    request = spec["components"]["schemas"]["Shop_rate_Request"]
    assert request["required"] == ["review"]
    assert request["properties"]["review"] == {"$ref": "#/components/schemas/Review"}
    assert spec["components"]["schemas"]["Review"]["required"] == ["text"]
    ok = rate["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"additionalProperties": {"type": "number"}, "type": "object"}
    assert rate["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }

    search = paths["/search"]["get"]
    assert "requestBody" not in search
    assert [(p["name"], p["in"], p["required"]) for p in search["parameters"]] == [
        ("q", "query", True),
        ("limit", "query", False),
        ("exact", "query", False),
    ]


async def test_openapi_describes_streaming_and_file_handlers() -> None:
    async with photon_http(Echo) as http:
        paths = (await http.get("/openapi.json")).json()["paths"]
    assert set(paths) >= {"/echo", "/aecho", "/add", "/count", "/reverse"}
    count = paths["/count"]["post"]["responses"]["200"]["content"]
    assert count["text/event-stream"]["x-item-schema"] == {"type": "integer"}
    reverse = paths["/reverse"]["post"]
    assert set(reverse["requestBody"]["content"]) == {"application/json", "multipart/form-data"}
    assert set(reverse["responses"]["200"]["content"]) == {"application/octet-stream"}


async def test_docs_page_is_up() -> None:
    async with photon_http(Echo) as http:
        r = await http.get("/docs")
    assert r.status_code == 200
    assert "text/html" in r.headers["content-type"]
    assert "/openapi.json" in r.text


async def test_healthz_and_readyz_when_ready() -> None:
    async with photon_http(Echo) as http:
        r = await http.get("/healthz")
        assert (r.status_code, r.json()) == (200, {"status": "ok", "state": "ready"})
        r = await http.get("/readyz")
        assert (r.status_code, r.json()) == (200, {"status": "ready"})


class SlowStart(nubis.Photon):
    gate = threading.Event()

    def init(self) -> None:
        if not self.gate.wait(timeout=10):
            raise TimeoutError("the test never opened the gate")

    @nubis.handler
    def hi(self) -> str:
        return "hi"


async def test_readyz_is_503_while_init_runs_then_200() -> None:
    SlowStart.gate.clear()
    try:
        async with photon_http(SlowStart, wait_ready=False) as http:
            r = await http.get("/readyz")
            assert r.status_code == 503
            assert r.json() == {
                "error": {"code": "not_ready", "message": "photon is starting", "details": None}
            }
            r = await http.get("/healthz")
            assert (r.status_code, r.json()) == (200, {"status": "ok", "state": "starting"})
            r = await http.post("/hi", json={})
            assert r.status_code == 503
            assert r.json() == {
                "error": {
                    "code": "not_ready",
                    "message": "the photon is starting: init() has not finished yet; "
                    "retry shortly or poll /readyz",
                    "details": None,
                }
            }

            SlowStart.gate.set()
            runtime = http.app.state.runtime  # type: ignore[attr-defined]
            for _ in range(500):
                if runtime.state is not PhotonState.starting:
                    break
                await asyncio.sleep(0.01)
            assert (await http.get("/readyz")).status_code == 200
            assert (await http.post("/hi", json={})).json() == "hi"
    finally:
        SlowStart.gate.set()


async def test_manifest_lists_handlers() -> None:
    async with photon_http(Echo) as http:
        r = await http.get("/_nubis/manifest")
    assert r.status_code == 200
    manifest = r.json()
    assert manifest["name"] == "echo"
    assert manifest["entrypoint"].endswith(":Echo")
    assert manifest["resources"] == {"cpu": 0.5, "memory": 256 * 2**20, "gpu": 0, "gpu_type": None}
    handlers = {h["name"]: h for h in manifest["handlers"]}
    assert set(handlers) == {"echo", "aecho", "add", "count", "reverse"}
    assert handlers["echo"]["path"] == "/echo"
    assert handlers["echo"]["method"] == "POST"
    assert handlers["echo"]["request_schema"]["required"] == ["text"]
    assert handlers["count"]["streaming"] is True
    assert handlers["reverse"]["file_params"] == ["file"]
    assert handlers["reverse"]["binary_response"] is True


TOKEN = ServeSettings(token="s3cret")
UNAUTHORIZED = {
    "error": {
        "code": "unauthorized",
        "message": "missing or wrong token: send 'Authorization: Bearer <token>'",
        "details": None,
    }
}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "s3cret"},
        {"Authorization": "Bearer s3cret2"},
        {"Authorization": "Basic s3cret"},
    ],
)
async def test_token_is_required_for_handlers(headers: dict[str, str]) -> None:
    async with photon_http(Echo, TOKEN) as http:
        r = await http.post("/echo", json={"text": "hi"}, headers=headers)
        assert r.status_code == 401
        assert r.json() == UNAUTHORIZED
        for path in ("/metrics", "/_nubis/manifest", "/openapi.json"):
            assert (await http.get(path, headers=headers)).status_code == 401


async def test_the_right_token_is_let_in() -> None:
    async with photon_http(Echo, TOKEN) as http:
        auth = {"Authorization": "Bearer s3cret"}
        r = await http.post("/echo", json={"text": "hi"}, headers=auth)
        assert (r.status_code, r.json()) == (200, {"text": "hi"})
        assert (await http.get("/_nubis/manifest", headers=auth)).status_code == 200


async def test_health_probes_need_no_token() -> None:
    async with photon_http(Echo, TOKEN) as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).status_code == 200
