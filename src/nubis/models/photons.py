"""The photon manifest: what a bundle holds and what a running photon describes of itself."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from nubis.models.resources import Resources

MANIFEST_FORMAT = 1


class HandlerInfo(BaseModel):
    """One handler as the outside world sees it (no Python objects)."""

    model_config = ConfigDict(extra="ignore")

    name: str
    path: str
    method: Literal["GET", "POST"] = "POST"
    streaming: bool = False
    max_batch_size: int = 1
    max_wait_ms: float = 0.0
    concurrency: int | None = None
    timeout: float | None = None
    file_params: list[str] = Field(default_factory=list)
    binary_response: bool = False
    request_schema: dict[str, Any] = Field(default_factory=dict)
    response_schema: dict[str, Any] = Field(default_factory=dict)


class PhotonManifest(BaseModel):
    """``manifest.json`` of a bundle, and ``GET /_nubis/manifest`` of a running photon."""

    model_config = ConfigDict(extra="ignore")

    format: int = MANIFEST_FORMAT
    name: str
    entrypoint: str = Field(description="'<file>.py:<Class>' relative to the bundle root")
    handlers: list[HandlerInfo]
    requirements: list[str] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)
    content_hash: str | None = Field(default=None, description="sha256 over the source files")
    nubis_version: str | None = None
    python_version: str | None = None
    created_at: str | None = None


PHOTON_NAME_PATTERN = r"^[a-z0-9][a-z0-9\-]{0,62}$"


class HandlerSummary(BaseModel):
    name: str
    method: str
    path: str
    streaming: bool = False
    max_batch_size: int = 1


class PhotonVersion(BaseModel):
    """One pushed bundle of a photon in the registry, addressed as ``name:version``."""

    name: str
    version: int
    ref: str = Field(description="'name:version', what deployments refer to")
    content_hash: str = Field(description="sha256 over the source files (see the manifest)")
    size: int = Field(description="bytes of the bundle")
    handlers: list[HandlerSummary]
    requirements: list[str]
    resources: Resources
    created_at: datetime
    created_by: str | None = Field(default=None, description="the token that pushed it")


class PushedPhoton(PhotonVersion):
    unchanged: bool = Field(
        default=False,
        description="true when this content already was the latest version: nothing was stored",
    )


class PhotonVersionDetail(PhotonVersion):
    manifest: PhotonManifest


class PhotonSummary(BaseModel):
    """A photon name: its latest version and how many versions it has."""

    name: str
    latest: int
    versions: int
    ref: str
    content_hash: str
    size: int
    handlers: list[str]
    created_at: datetime = Field(description="when the latest version was pushed")
    created_by: str | None = None
