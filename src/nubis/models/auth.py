"""Roles, callers and tokens on the wire."""

from __future__ import annotations

import enum
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class Role(enum.StrEnum):
    admin = "admin"
    member = "member"
    viewer = "viewer"


class Permission(enum.StrEnum):
    read = "read"
    write = "write"
    manage = "manage"


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.viewer: frozenset({Permission.read}),
    Role.member: frozenset({Permission.read, Permission.write}),
    Role.admin: frozenset({Permission.read, Permission.write, Permission.manage}),
}


class WhoAmI(BaseModel):
    token_id: str
    token_name: str
    workspace: str
    role: Role
    superuser: bool


class TokenCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="token", min_length=1, max_length=100)
    role: Role = Role.member
    workspace: str | None = Field(default=None, description="default: the caller's workspace")
    expires_in_seconds: int | None = Field(default=None, gt=0, le=10 * 365 * 86400)
    deployment: str | None = Field(
        default=None, pattern=r"^[a-z0-9][a-z0-9\-]{0,62}$",
        description="only call this deployment through the gateway; such a token has no API access",
    )


class Token(BaseModel):
    id: str
    name: str
    workspace: str
    role: Role
    superuser: bool
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    deployment: str | None = Field(default=None, description="set: only calls this deployment")


class CreatedToken(Token):
    token: str = Field(description="the secret: shown once, never again")
