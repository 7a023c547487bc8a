"""``client.secrets``: set, list (names and dates), delete. Values go in and never come back."""

from __future__ import annotations

from nubis.client.base import ResourceAPI
from nubis.models.secrets import Secret


class SecretsAPI(ResourceAPI):
    def set(self, name: str, value: str) -> Secret:
        """Create or replace a secret; it is stored encrypted and injected into workloads."""
        return Secret.model_validate(self._t.json("PUT", f"/secrets/{name}", json={"value": value}))

    def list(self) -> list[Secret]:
        return [Secret.model_validate(s) for s in self._t.json("GET", "/secrets")]

    def delete(self, name: str) -> None:
        self._t.json("DELETE", f"/secrets/{name}")
