"""``nubis deploy`` waits with the reason on screen and says how long it waited; ``nubis model
deploy`` and ``nubis deployment update`` send resources, env, secrets and bounds."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from nubis.cli import deployments, models, render
from nubis.cli.main import app
from nubis.client import deployments as sdk
from nubis.models.deployments import Deployment, Replica
from nubis.models.resources import Resources

from cli_stubs import StubClient

WAITING = "waiting for resources: needs 1 CPU; free 0 CPU"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def consoles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "out", Console(width=300))
    monkeypatch.setattr(render, "err", Console(width=300, stderr=True))


def pending_api(monkeypatch: pytest.MonkeyPatch) -> sdk.DeploymentsAPI:
    """The SDK's real ``wait_ready`` over a deployment that stays pending, on a fake clock."""
    clock = FakeClock()
    monkeypatch.setattr(sdk, "time", clock)
    first = Deployment(name="echo", photon="echo:1", status="pending", target_replicas=1)
    waiting = first.model_copy(update={"reason": WAITING, "replicas": [
        Replica(id="r1", status="pending", reason=WAITING)]})
    answers = iter([first, waiting])
    api = sdk.DeploymentsAPI.__new__(sdk.DeploymentsAPI)
    api.create = lambda *a, **k: first  # type: ignore[method-assign]
    api.get = lambda name: next(answers, waiting)  # type: ignore[method-assign]
    return api


def test_deploy_shows_why_it_waits_and_the_time_it_waited(monkeypatch: pytest.MonkeyPatch) -> None:
    api = pending_api(monkeypatch)
    monkeypatch.setattr(deployments, "Client", lambda *a, **k: StubClient(deployments=api))
    result = CliRunner().invoke(app, ["deploy", "echo:1", "--timeout", "2"])
    assert f"pending: {WAITING} · 0/1 ready" in result.output, result.output
    assert isinstance(result.exception, sdk.DeploymentNotReadyError), result.exception
    message = result.exception.message
    assert message.startswith("deployment 'echo' not ready after 2 s (status pending: waiting for resources")


def test_model_deploy_sends_resources_and_bounds(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: dict[str, Any] = {}

    def deploy(ref: str, name: str, **kwargs: Any) -> Deployment:
        sent.update(kwargs, ref=ref, name=name)
        return Deployment(name=name, photon="digits-1:1", status="ready", endpoint="http://gw/default/d")

    ready = SimpleNamespace(wait_ready=lambda name, **k: deploy("x", name))
    monkeypatch.setattr(models, "Client", lambda *a, **k: StubClient(
        models=SimpleNamespace(deploy=deploy), deployments=ready))
    result = CliRunner().invoke(app, ["model", "deploy", "digits:1", "--name", "d", "--cpu", "0.25",
                                      "--memory", "512Mi", "--min", "0", "--max", "3"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert sent["resources"] == {"cpu": 0.25, "memory": "512Mi"}
    assert (sent["min_replicas"], sent["max_replicas"]) == (0, 3)


def test_deployment_update_merges_resources_env_and_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    current = Deployment(name="echo", photon="echo:1", status="ready", min_replicas=1, max_replicas=1,
                         resources=Resources(cpu=1, memory="1Gi"), env={"A": "1", "B": "2"}, secrets=["S1"])
    sent: dict[str, Any] = {}

    def update(name: str, **body: Any) -> Deployment:
        sent.update(body)
        return current

    api = SimpleNamespace(get=lambda name: current, update=update)
    monkeypatch.setattr(deployments, "Client", lambda *a, **k: StubClient(deployments=api))
    result = CliRunner().invoke(app, ["deployment", "update", "echo", "--cpu", "0.25", "--env", "C=3",
                                      "--unset-env", "A", "--secret", "S2", "--min", "2"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert sent["resources"] == {"cpu": 0.25, "memory": 2**30, "gpu": 0, "gpu_type": None}
    assert sent["env"] == {"B": "2", "C": "3"} and sent["secrets"] == ["S1", "S2"]
    assert (sent["min_replicas"], sent["max_replicas"]) == (2, 2)
    assert "rolling out echo:1 to echo" in result.output
    result = CliRunner().invoke(app, ["deployment", "update", "echo"])
    assert "nothing to change" in str(result.exception)
