"""``client.deployments``: long-running photons behind the gateway (create, scale, update, call)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import httpx

from nubis.client.base import ResourceAPI
from nubis.client.photon import PhotonClient
from nubis.errors import NubisError
from nubis.models.deployments import Deployment, DeploymentEvent, DeploymentStatus
from nubis.models.metric_history import MetricHistory
from nubis.models.resources import Resources

FAILED = (DeploymentStatus.failed, DeploymentStatus.stopped)
POLL_S = 0.5


class DeploymentNotReadyError(NubisError):
    """``wait_ready`` gave up: the deployment failed, or did not get ready in time."""

    code = "deployment_not_ready"
    http_status = 503


class DeploymentsAPI(ResourceAPI):
    def create(
        self,
        name: str,
        photon: str,
        *,
        min_replicas: int = 1,
        max_replicas: int = 1,
        target_in_flight: float | None = None,
        resources: Resources | dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        secrets: list[str] | None = None,
        access: Literal["private", "public"] = "private",
        node_selector: dict[str, str] | None = None,
    ) -> Deployment:
        """Deploy ``photon`` (``"name"`` or ``"name:version"``); replicas start in the background,
        on nodes whose labels hold ``node_selector`` when given."""
        scaling: dict[str, Any] = {"min_replicas": min_replicas, "max_replicas": max_replicas}
        if target_in_flight is not None:
            scaling["target_in_flight"] = target_in_flight
        body: dict[str, Any] = {
            "name": name,
            "photon": photon,
            "env": env or {},
            "secrets": secrets or [],
            "access": access,
            "autoscaling": scaling,
            "node_selector": node_selector or {},
        }
        if resources is not None:
            body["resources"] = (
                resources.model_dump(mode="json") if isinstance(resources, Resources) else resources
            )
        # Sent as plain JSON: the server validates and answers the typed error (422, 409, …).
        return Deployment.model_validate(self._t.json("POST", "/deployments", json=body))

    def list(self) -> list[Deployment]:
        return [Deployment.model_validate(d) for d in self._t.json("GET", "/deployments")]

    def get(self, name: str) -> Deployment:
        return Deployment.model_validate(self._t.json("GET", f"/deployments/{name}"))

    def update(
        self,
        name: str,
        *,
        photon: str | None = None,
        resources: Resources | dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        secrets: list[str] | None = None,
        min_replicas: int | None = None,
        max_replicas: int | None = None,
        access: Literal["private", "public"] | None = None,
    ) -> Deployment:
        """Change only what is given. A new photon, resources, env (the whole map) or secrets (the
        whole list) roll out one replica at a time, and roll back if the new replicas keep crashing;
        new bounds rescale."""
        if isinstance(resources, Resources):
            resources = resources.model_dump(mode="json")
        body = {
            "photon": photon,
            "resources": resources,
            "env": env,
            "secrets": secrets,
            "min_replicas": min_replicas,
            "max_replicas": max_replicas,
            "access": access,
        }
        body = {k: v for k, v in body.items() if v is not None}
        return Deployment.model_validate(self._t.json("PATCH", f"/deployments/{name}", json=body))

    def delete(self, name: str) -> None:
        """Stop every replica and remove the deployment."""
        self._t.json("DELETE", f"/deployments/{name}")

    def events(self, name: str, limit: int = 100) -> list[DeploymentEvent]:
        """The latest events, oldest first."""
        found = self._t.json("GET", f"/deployments/{name}/events", params={"limit": limit})
        return [DeploymentEvent.model_validate(e) for e in found]

    def follow_logs(self, name: str, *, tail: int = 100, seconds: float | None = None) -> Iterator[str]:
        """Every replica's output as it is written (``[replica] line``), new replicas included;
        ends after ``seconds`` (or never: stop iterating to leave)."""
        params: dict[str, Any] = {"tail": tail}
        if seconds is not None:
            params["seconds"] = seconds
        with self._t.stream("GET", f"/deployments/{name}/logs/follow", params=params,
                            timeout=httpx.Timeout(10.0, read=None)) as response:
            yield from response.iter_lines()

    def metrics(self, name: str, *, since: str = "1h", step: str | None = None) -> MetricHistory:
        """Requests/s, 5xx/s and rate, p50/p95 latency (ms) as the gateway saw them, over ``since``
        (``15m``, ``1h``, up to ``24h``) in steps of ``step`` (default: about 120 points)."""
        params = {"since": since, **({"step": step} if step else {})}
        found = self._t.json("GET", f"/deployments/{name}/metrics", params=params)
        return MetricHistory.model_validate(found)

    def logs(self, name: str, tail: int = 100) -> list[str]:
        """The last ``tail`` lines of every live replica, each prefixed by its replica id."""
        return list(self._t.json("GET", f"/deployments/{name}/logs", params={"tail": tail}))

    def wait_ready(
        self, name: str, timeout: float = 60, *, on_change: Callable[[Deployment], object] | None = None
    ) -> Deployment:
        """Poll until the deployment is ready; raise if it fails or ``timeout`` seconds pass.
        ``on_change`` sees the deployment each time its status, ready count or reason changes."""
        started = time.monotonic()
        seen = None
        while True:
            deployment = self.get(name)
            now = (deployment.status, deployment.ready_replicas, deployment.target_replicas, why(deployment))
            if on_change is not None and now != seen:
                on_change(deployment)
            seen = now
            if deployment.status == DeploymentStatus.ready:
                return deployment
            if deployment.status in FAILED:
                raise DeploymentNotReadyError(
                    f"deployment {name!r} is {deployment.status.value}: {why(deployment)}"
                )
            waited = time.monotonic() - started
            if waited >= timeout:
                raise DeploymentNotReadyError(
                    f"deployment {name!r} not ready after {waited:.0f} s "
                    f"(status {deployment.status.value}: {why(deployment)}); "
                    f"see `nubis deployment events {name}`"
                )
            time.sleep(min(POLL_S, max(0.0, timeout - waited)))

    def endpoint(self, name: str) -> PhotonClient:
        """A client for the deployment's handlers, through the gateway, with this client's token."""
        deployment = self.get(name)
        if not deployment.endpoint:
            raise DeploymentNotReadyError(f"deployment {name!r} has no endpoint yet")
        return PhotonClient(deployment.endpoint, token=self._t.credentials.token)


def why(deployment: Deployment) -> str:
    """The deployment's reason, else the first replica reason that says something."""
    if deployment.reason:
        return deployment.reason
    reasons = [r.reason for r in deployment.replicas if r.reason]
    return reasons[0] if reasons else "no reason given"

