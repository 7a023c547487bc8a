"""Workspaces on the wire."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[a-z0-9][a-z0-9\-]{0,62}$"


class WorkspaceCreateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="lower-case letters, digits and '-'")
    storage_quota_bytes: int | None = Field(default=None, ge=0, le=2**63 - 1)


class QuotaRequest(BaseModel):
    """Only the fields sent change; null removes that quota."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    storage_quota_bytes: int | None = Field(default=None, ge=0, le=2**63 - 1, description="null: no quota")
    cpu_quota: float | None = Field(default=None, ge=0, description="CPU cores its jobs may hold at once")
    memory_quota: int | None = Field(default=None, ge=0, le=2**63 - 1,
                                     description="bytes of memory its jobs may hold")
    gpu_quota: int | None = Field(default=None, ge=0, le=2**31 - 1,
                                  description="GPUs its jobs may hold at once")


class Workspace(BaseModel):
    id: str
    name: str
    storage_quota_bytes: int | None
    cpu_quota: float | None = None
    memory_quota: int | None = None
    gpu_quota: int | None = None
    created_at: datetime


class AuditEvent(BaseModel):
    id: int
    workspace: str
    actor: str
    action: str
    target: str
    details: dict | None
    at: datetime
