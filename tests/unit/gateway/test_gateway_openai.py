"""The workspace's OpenAI base URL, /<workspace>/v1: routing on the body's `model`, /v1/models,
and errors in OpenAI's shape, on fake routing tables and a fake replica (in-process gateway)."""

import hashlib
import json
from collections.abc import AsyncIterator

import httpx
import openai
import pytest
from aiohttp import web

from nubis.gateway.metrics import GatewayMetrics
from nubis.gateway.proxy import GatewayApp, GatewaySettings
from nubis.gateway.routing import Router
from nubis.models.routes import DeploymentRoute, ReplicaRoute, RoutingTable

TOKEN = "ws-token"
OTHER = "other-workspace-token"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@pytest.fixture
async def replica() -> AsyncIterator[str]:
    """Answers every path with what it got: the path, the body, whether a token reached it."""
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({"path": request.path, "body": json.loads(body or b"null"),
                                  "authorization": request.headers.get("authorization")})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    await runner.cleanup()


def route(name: str, endpoint: str, *, llm: str | None, access: str = "private",
          workspace: str = "ws") -> DeploymentRoute:
    return DeploymentRoute(
        workspace=workspace, name=name, access=access, llm_model=llm,  # type: ignore[arg-type]
        token_hashes=[digest(TOKEN if workspace == "ws" else OTHER)],
        replicas=[ReplicaRoute(replica_id=f"{name}-r", endpoint=endpoint, ready=True)],
    )


@pytest.fixture
async def gateway(replica: str) -> AsyncIterator[httpx.AsyncClient]:
    router = Router(GatewayMetrics())
    router.apply(RoutingTable(version=1, deployments=[
        route("smol", replica, llm="smollm2"),
        route("tiny", replica, llm="tiny"),
        route("echo", replica, llm=None),
        route("open", replica, llm="open-lm", access="public"),
        route("theirs", replica, llm="their-lm", workspace="other"),
    ]))
    app = GatewayApp(router, GatewayMetrics(), GatewaySettings(unknown_wait_s=0))
    await app.start()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        yield client
    await app.close()


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_chat_and_completions_route_on_the_model_field(gateway: httpx.AsyncClient) -> None:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}
    r = await gateway.post("/ws/v1/chat/completions", json=body, headers=auth())
    assert r.status_code == 200, r.text
    assert r.json() == {"path": "/v1/chat/completions", "body": body, "authorization": None}
    r = await gateway.post("/ws/v1/completions", json={"model": "smollm2", "prompt": "a"}, headers=auth())
    assert r.json()["path"] == "/v1/completions"


async def test_models_lists_the_llms_the_caller_may_call(gateway: httpx.AsyncClient) -> None:
    r = await gateway.get("/ws/v1/models", headers=auth())
    assert r.status_code == 200
    listed = r.json()
    assert listed["object"] == "list"
    assert [m["id"] for m in listed["data"]] == ["open-lm", "smollm2", "tiny"]  # not echo, not other's
    assert listed["data"][1] == {"id": "smollm2", "object": "model", "created": 0, "owned_by": "ws",
                                 "deployment": "smol"}


async def test_unknown_model_is_openai_404(gateway: httpx.AsyncClient) -> None:
    r = await gateway.post("/ws/v1/chat/completions", json={"model": "gpt-4", "messages": []}, headers=auth())
    assert r.status_code == 404
    error = r.json()["error"]
    assert {k: error[k] for k in ("type", "param", "code")} == {
        "type": "invalid_request_error", "param": "model", "code": "model_not_found"}
    assert "'gpt-4' does not exist in workspace 'ws'" in error["message"]


async def test_another_workspaces_model_is_not_reachable(gateway: httpx.AsyncClient) -> None:
    r = await gateway.post("/ws/v1/chat/completions", json={"model": "their-lm"}, headers=auth())
    assert r.status_code == 404
    r = await gateway.post("/other/v1/chat/completions", json={"model": "their-lm"}, headers=auth())
    assert r.status_code == 401  # a token of ws is no token of other


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer nope"}, {"authorization": "Basic x"}])
async def test_no_valid_token_is_openai_401(gateway: httpx.AsyncClient, headers: dict[str, str]) -> None:
    for method, path, body in (("POST", "/ws/v1/chat/completions", {"model": "tiny"}),
                               ("POST", "/ws/v1/chat/completions", {"model": "unknown"}),
                               ("GET", "/ws/v1/models", None),
                               ("POST", "/ws/smol/v1/chat/completions", {"model": "smollm2"})):
        r = await gateway.request(method, path, json=body, headers=headers)
        assert r.status_code == 401, (path, r.text)
        assert set(r.json()["error"]) == {"message", "type", "param", "code", "details"}


async def test_a_public_llm_needs_no_token(gateway: httpx.AsyncClient) -> None:
    r = await gateway.post("/ws/v1/chat/completions", json={"model": "open-lm"})
    assert r.status_code == 200


async def test_bad_requests_on_the_workspace_base_url(gateway: httpx.AsyncClient) -> None:
    r = await gateway.post("/ws/v1/chat/completions", content=b"not json", headers=auth())
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    r = await gateway.post("/ws/v1/embeddings", json={"model": "tiny"}, headers=auth())
    assert r.status_code == 404 and "POST /v1/chat/completions" in r.json()["error"]["message"]


async def test_non_v1_deployment_paths_keep_nubis_errors(gateway: httpx.AsyncClient) -> None:
    r = await gateway.post("/ws/smol/predict", json={})
    assert r.status_code == 401
    assert set(r.json()["error"]) == {"code", "message", "details"}


async def test_the_openai_client_raises_the_matching_classes(gateway: httpx.AsyncClient) -> None:
    transport = httpx.ASGITransport(app=gateway._transport.app)  # type: ignore[attr-defined]
    http = httpx.AsyncClient(transport=transport)
    client = openai.AsyncOpenAI(base_url="http://gw/ws/v1", api_key=TOKEN, http_client=http, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    listed = await client.models.list()
    assert [m.id for m in listed.data] == ["open-lm", "smollm2", "tiny"]
    anonymous = openai.AsyncOpenAI(base_url="http://gw/ws/v1", api_key="wrong", http_client=http,
                                   max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await anonymous.models.list()
    await http.aclose()
