"""``client.tokens`` and ``client.audit``"""

from __future__ import annotations

from nubis.client.base import ResourceAPI
from nubis.models.auth import CreatedToken, Role, Token, WhoAmI
from nubis.models.workspaces import AuditEvent


class TokensAPI(ResourceAPI):
    def create(
        self,
        name: str = "token",
        *,
        role: Role | str = Role.member,
        workspace: str | None = None,
        expires_in_seconds: int | None = None,
        deployment: str | None = None,
    ) -> CreatedToken:
        """``deployment``: the token only calls that deployment through the gateway (no API access)."""
        body = {"name": name, "role": str(role), "workspace": workspace,
                "expires_in_seconds": expires_in_seconds, "deployment": deployment}
        return CreatedToken.model_validate(self._t.json("POST", "/tokens", json=body))

    def list(self) -> list[Token]:
        return [Token.model_validate(t) for t in self._t.json("GET", "/tokens")]

    def revoke(self, token_id: str) -> Token:
        """``token_id``: the id, a unique start of it (at least 4 characters), or the ``prefix``."""
        return Token.model_validate(self._t.json("DELETE", f"/tokens/{token_id}"))

    def whoami(self) -> WhoAmI:
        return WhoAmI.model_validate(self._t.json("GET", "/whoami"))


class AuditAPI(ResourceAPI):
    def list(self, *, limit: int = 100, action: str | None = None) -> list[AuditEvent]:
        params: dict[str, str | int] = {"limit": limit}
        if action:
            params["action"] = action
        return [AuditEvent.model_validate(e) for e in self._t.json("GET", "/audit", params=params)]
