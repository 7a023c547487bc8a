"""``client.workspaces``"""

from __future__ import annotations

from nubis.client.base import ResourceAPI
from nubis.models.workspaces import Workspace

UNSET = object()


class WorkspacesAPI(ResourceAPI):
    def create(self, name: str, *, storage_quota_bytes: int | None = None) -> Workspace:
        body = {"name": name, "storage_quota_bytes": storage_quota_bytes}
        return Workspace.model_validate(self._t.json("POST", "/workspaces", json=body))

    def list(self) -> list[Workspace]:
        return [Workspace.model_validate(w) for w in self._t.json("GET", "/workspaces")]

    def get(self, name: str) -> Workspace:
        return Workspace.model_validate(self._t.json("GET", f"/workspaces/{name}"))

    def set_quota(self, name: str, storage_quota_bytes: int | object | None = UNSET, *,
                  cpu: float | object | None = UNSET, memory: int | object | None = UNSET,
                  gpu: int | object | None = UNSET) -> Workspace:
        """Change only the quotas given; ``None`` removes one."""
        given = {"storage_quota_bytes": storage_quota_bytes, "cpu_quota": cpu, "memory_quota": memory,
                 "gpu_quota": gpu}
        body = {k: v for k, v in given.items() if v is not UNSET}
        return Workspace.model_validate(self._t.json("PATCH", f"/workspaces/{name}", json=body))

    def delete(self, name: str) -> None:
        self._t.json("DELETE", f"/workspaces/{name}")
