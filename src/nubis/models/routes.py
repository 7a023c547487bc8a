"""The gateway's routing table: which replicas serve a deployment and who may call it.

The control plane generates it (``GET`` on its routes endpoint, or a file it writes); the gateway
only reads it. Tokens appear as sha256 hex digests only: the gateway never holds plaintext tokens.
Unknown fields are ignored so that an older gateway keeps working with a newer control plane.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
REPORT_LATENCY_BOUNDS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Upper bounds of the latency buckets in load reports; a last count holds the slower requests."""


class ReplicaRoute(BaseModel):
    """One replica: a photon server reachable at ``endpoint`` (``http://host:port``)."""

    model_config = ConfigDict(extra="ignore")

    replica_id: str
    endpoint: str = Field(pattern=r"^https?://[^/\s]+$", description="http://host:port, no path")
    ready: bool = False
    key: str | None = Field(
        default=None, repr=False,
        description="the replica's key: the gateway sends it as X-Nubis-Replica-Key (the replica "
                    "refuses requests without it)",
    )


class DeploymentRoute(BaseModel):
    """How the gateway serves ``/<workspace>/<name>/...``."""

    model_config = ConfigDict(extra="ignore")

    workspace: str
    name: str
    access: Literal["public", "private"] = "private"
    token_hashes: list[str] = Field(
        default_factory=list,
        description="sha256 hex of every token that may call a private deployment",
    )
    token_expires_at: dict[str, datetime] = Field(
        default_factory=dict,
        description="expiry of the hashes in token_hashes that expire: the gateway refuses them "
                    "from then on, also while it cannot reach the control plane",
    )
    replicas: list[ReplicaRoute] = Field(default_factory=list)
    min_replicas: int = Field(default=0, ge=0)
    max_replicas: int = Field(default=1, ge=0)
    timeout_s: float = Field(default=60.0, gt=0, description="longest wait for upstream bytes")
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=0)
    hold_s: float = Field(
        default=30.0, ge=0, description="how long a request waits for a ready replica"
    )
    llm_model: str | None = Field(
        default=None,
        description="LLM deployments: the model id that /<workspace>/v1/... routes to this deployment",
    )

    @property
    def key(self) -> tuple[str, str]:
        return self.workspace, self.name


class RoutingTable(BaseModel):
    """Everything the gateway serves. ``version`` changes whenever anything in it changes."""

    model_config = ConfigDict(extra="ignore")

    version: int = Field(ge=0)
    generated_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    deployments: list[DeploymentRoute] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> RoutingTable:
        seen: set[tuple[str, str]] = set()
        for dep in self.deployments:
            if dep.key in seen:
                raise ValueError(f"deployment {dep.workspace}/{dep.name} is listed twice")
            seen.add(dep.key)
        return self


MAX_REPORTED = 10**9
"""A bound on each count of a load report (a gateway reports each second): the control plane keeps
them in 32-bit counters."""


class DeploymentLoad(BaseModel):
    """One deployment's load as one gateway saw it (input to the autoscaling policy)."""

    workspace: str
    name: str
    in_flight: int = Field(ge=0, le=MAX_REPORTED, description="requests being served by a replica now")
    queued: int = Field(ge=0, le=MAX_REPORTED,
                        description="requests held waiting for a ready replica (demand)")
    requests: int = Field(ge=0, le=MAX_REPORTED, description="requests finished since the previous report")
    errors: int = Field(default=0, ge=0, le=MAX_REPORTED, description="of those, answered with a 5xx status")
    latency_counts: list[Annotated[int, Field(ge=0, le=MAX_REPORTED)]] = Field(
        default_factory=list, max_length=len(REPORT_LATENCY_BOUNDS_S) + 1,
        description="of those, how many took at most each of REPORT_LATENCY_BOUNDS_S seconds (not "
                    "cumulative), then the slower ones; empty from a gateway that does not count them",
    )


class LoadReport(BaseModel):
    """What a gateway ``POST``s to ``--report-url`` every second."""

    gateway_id: str
    at: datetime
    routes_version: int | None
    deployments: list[DeploymentLoad]
