"""LLM endpoints as a user drives them: a real `nubis up`, the tiny model put into storage with the
SDK, `nubis llm deploy --model storage:PATH`, and the real `openai` client through both base URLs
(the deployment's, /<workspace>/<name>/v1, and the workspace's, /<workspace>/v1).

One platform and one LLM deployment for the module; the tests run in file order.
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

import nubis
from nubis.llm.tiny import build_tiny_model

from platform_process import PlatformProcess

pytestmark = pytest.mark.e2e

NAME = "tiny"
HI = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def deployed(platform: PlatformProcess, client: nubis.Client,
             tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    model = build_tiny_model(tmp_path_factory.mktemp("model") / "tiny")
    client.storage.put_dir("llm/tiny", model)
    result = platform.cli("llm", "deploy", NAME, "--model", "storage:llm/tiny", "--max", "2",
                          "--memory", "1Gi", "--timeout", "300", "-o", "json", timeout=420)
    assert result.returncode == 0, result.stderr + result.stdout
    return json.loads(result.stdout)


def openai_client(base_url: str, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=token, max_retries=0, timeout=120)


def base_urls(platform: PlatformProcess) -> list[str]:
    return [f"{platform.gateway_url}/default/{NAME}/v1", f"{platform.gateway_url}/default/v1"]


def test_deploy_reports_both_base_urls_and_is_a_deployment(
        platform: PlatformProcess, client: nubis.Client, deployed: dict[str, object]) -> None:
    assert deployed["model"] == NAME
    assert deployed["source"] == "storage:llm/tiny"
    assert deployed["base_url"] == f"{platform.gateway_url}/default/{NAME}/v1"
    assert deployed["workspace_base_url"] == f"{platform.gateway_url}/default/v1"
    deployment = client.deployments.get(NAME)  # an ordinary deployment
    assert deployment.status == "ready" and deployment.llm is not None
    assert deployment.env["NUBIS_LLM_MODEL"] == "model"  # the weights travel in the bundle
    assert [d.name for d in client.llm.list()] == [NAME]
    listed = platform.cli("llm", "list")
    assert listed.returncode == 0 and NAME in listed.stdout


@pytest.mark.parametrize("which", [0, 1], ids=["deployment-url", "workspace-url"])
def test_openai_client_chat_streamed_and_not(platform: PlatformProcess, deployed: dict[str, object],
                                              which: int) -> None:
    c = openai_client(base_urls(platform)[which], platform.admin_token)
    assert [m.id for m in c.models.list().data] == [NAME]
    answer = c.chat.completions.create(model=NAME, messages=HI, max_tokens=8, temperature=0)  # type: ignore[arg-type]
    assert answer.choices[0].message.content
    assert answer.usage is not None
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    chunks = list(c.chat.completions.create(model=NAME, messages=HI, max_tokens=8, temperature=0,  # type: ignore[arg-type]
                                            stream=True, stream_options={"include_usage": True}))
    texts = [ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content]
    assert len(texts) >= 2
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 2
    completion = c.completions.create(model=NAME, prompt="The capital of France is", max_tokens=4)
    assert completion.usage is not None and completion.usage.completion_tokens >= 1


def test_unknown_model_and_missing_token(platform: PlatformProcess, deployed: dict[str, object]) -> None:
    workspace_url = base_urls(platform)[1]
    with pytest.raises(openai.NotFoundError):
        openai_client(workspace_url, platform.admin_token).chat.completions.create(
            model="gpt-4", messages=HI)  # type: ignore[arg-type]
    for url in base_urls(platform):
        with pytest.raises(openai.AuthenticationError):
            openai_client(url, "not-a-token").chat.completions.create(model=NAME, messages=HI)  # type: ignore[arg-type]
        with pytest.raises(openai.AuthenticationError):
            openai_client(url, "not-a-token").models.list()


def test_nubis_llm_chat_prints_a_streamed_answer(platform: PlatformProcess, client: nubis.Client,
                                                 deployed: dict[str, object]) -> None:
    result = platform.cli("llm", "chat", NAME, "--message", "hi", "--max-tokens", "8")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    deltas = list(client.llm.stream_chat(NAME, [{"role": "user", "content": "hi"}], max_tokens=8))
    assert len(deltas) >= 2


def test_hub_ids_and_reserved_names_are_refused(platform: PlatformProcess, client: nubis.Client) -> None:
    refused = platform.cli("llm", "deploy", "hub", "--model", "HuggingFaceTB/SmolLM2-135M-Instruct")
    assert refused.returncode == 1
    assert "never downloads from a model hub at run time" in refused.stderr + refused.stdout
    with pytest.raises(nubis.NubisError) as caught:
        client.llm.deploy("v1", "storage:llm/tiny")
    assert caught.value.http_status == 422 and "reserved" in caught.value.message


def test_eight_streams_scale_an_llm_up_and_back(platform: PlatformProcess, client: nubis.Client,
                                                deployed: dict[str, object]) -> None:
    """The issue's check: 8 concurrent streams against --max 3 with a waiting target of 2. A replica
    batches 4 (max_batch_size 4), so about 4 streams wait (more for a moment while a round's requests
    are parsed or a slot is freed): a second replica starts (a third too, at such a moment); it
    scales back to one once the streams are done and the scale-down delay has passed."""
    body = {"name": "busy", "model": "storage:llm/tiny", "options": {"max_batch_size": 4},
            "resources": {"cpu": 0.5, "memory": "1Gi"},
            "autoscaling": {"min_replicas": 1, "max_replicas": 3, "target_waiting": 2,
                            "scale_up_delay_s": 0, "scale_down_delay_s": 3}}
    created = httpx.post(f"{platform.url}/api/v1/llm", json=body, timeout=300,
                         headers={"authorization": f"Bearer {platform.admin_token}"})
    assert created.status_code == 201, created.text
    client.deployments.wait_ready("busy", timeout=300)
    c = openai_client(base_urls(platform)[1], platform.admin_token)

    def stream(seed: int) -> int:  # sampled: a random model rarely ends early on its own
        chunks = c.chat.completions.create(model="busy", messages=HI, max_tokens=40, temperature=1.0,
                                           seed=seed, stream=True)
        return sum(1 for chunk in chunks if chunk.choices and chunk.choices[0].delta.content)

    def scaled_up() -> list[str]:
        events = [e.message for e in client.deployments.events("busy") if e.kind == "scale"]
        return [m for m in events if re.match(r"1 → [23] replicas: scaling up", m) and "waiting" in m]

    # The control plane samples the replicas' queues about once a second: on a fast machine eight
    # streams can all end between two samples, so they are sent again until one sample sees them.
    deadline = time.monotonic() + 180
    with ThreadPoolExecutor(8) as pool:
        while not scaled_up():
            assert time.monotonic() < deadline, "eight concurrent streams never scaled it up"
            assert all(n > 0 for n in pool.map(stream, range(8)))
    deadline = time.monotonic() + 60
    while client.deployments.get("busy").target_replicas != 1:
        assert time.monotonic() < deadline, "did not scale back"
        time.sleep(0.5)


def test_the_deployment_deletes_like_any_other(platform: PlatformProcess, client: nubis.Client,
                                               deployed: dict[str, object]) -> None:
    for name in (NAME, "busy"):
        assert platform.cli("deployment", "delete", name, "--yes").returncode == 0
    assert client.llm.list() == []
