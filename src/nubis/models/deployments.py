"""Deployments on the wire: the spec a user sends, and the state the platform reports back.

Strict on input (``DeploymentSpec`` and ``AutoscalingSpec`` forbid unknown fields), tolerant on
output (``Deployment`` and ``Replica`` ignore unknown fields and read a status this version does not
know as ``unknown``, so an older client keeps working against a newer server).
"""

from __future__ import annotations

import enum
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from nubis.models.limits import MAX_REPLICAS, check_env, check_spec_size
from nubis.models.resources import NodeSelector, Resources
from nubis.models.secrets import SECRET_NAME_RULE, check_secret_names, is_valid_secret_name

DEPLOYMENT_NAME_PATTERN = r"^[a-z0-9][a-z0-9\-]{0,62}$"
PHOTON_REF_PATTERN = r"^[a-z0-9][a-z0-9\-]{0,62}(:([0-9]{1,9}|latest))?$"
LATEST = "latest"

_PHOTON_REF = re.compile(PHOTON_REF_PATTERN)


class ReplicaStatus(enum.StrEnum):
    """One replica's life; the allowed moves are in ``nubis.server.scheduler.replicas``."""

    pending = "pending"  # waiting for resources; the reason says which
    starting = "starting"  # process started, running init(), not yet healthy
    ready = "ready"  # healthy, in the gateway's routing table
    draining = "draining"  # out of the routing table, finishing in-flight requests
    stopping = "stopping"  # asked to stop, process still alive
    stopped = "stopped"  # gone on purpose (terminal)
    failed = "failed"  # exited or turned unhealthy; will be restarted after a backoff
    crash_loop = "crash_loop"  # failed too often in a short time; restarts are backed off
    unknown = "unknown"  # lost contact with the backend, or a status this version does not know


class DeploymentStatus(enum.StrEnum):
    """A deployment's status: a pure function of its replicas (``scheduler.replicas``)."""

    pending = "pending"  # no replica placed yet
    deploying = "deploying"  # replicas starting, none ready yet
    ready = "ready"  # serving; every wanted replica ready, or scaling up from a ready one
    degraded = "degraded"  # serving, but some replicas failed or are unreachable
    scaled_to_zero = "scaled_to_zero"  # no replicas wanted; the next request starts one
    updating = "updating"  # a rolling update is in progress
    failed = "failed"  # cannot serve: no replica ready and they keep failing
    stopped = "stopped"  # stopped by the user
    unknown = "unknown"  # lost contact with every replica, or a status this version does not know


def tolerant_enum(enum_type: type[enum.StrEnum]) -> BeforeValidator:
    """Read a value this version does not know as ``unknown`` instead of failing the whole model."""

    known = {member.value for member in enum_type}

    def read(value: Any) -> Any:
        if isinstance(value, str) and value not in known:
            return enum_type("unknown")
        return value

    return BeforeValidator(read)


OutputReplicaStatus = Annotated[ReplicaStatus, tolerant_enum(ReplicaStatus)]
OutputDeploymentStatus = Annotated[DeploymentStatus, tolerant_enum(DeploymentStatus)]


def split_photon_ref(ref: str) -> tuple[str, int | None]:
    """``"echo:3"`` → ``("echo", 3)``; ``"echo"`` and ``"echo:latest"`` → ``("echo", None)``."""
    if not _PHOTON_REF.fullmatch(ref):
        raise ValueError(f"photon must be 'name' or 'name:version', not {ref[:80]!r}")
    name, _, version = ref.partition(":")
    return name, None if version in ("", LATEST) else int(version)


class AutoscalingSpec(BaseModel):
    """How many replicas, and how fast to change their number (see ``docs/deployments.md``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    min_replicas: int = Field(
        default=1, ge=0, le=MAX_REPLICAS, description="0 allows scaling to zero when idle"
    )
    max_replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    target_in_flight: float = Field(
        default=4.0, gt=0, description="in-flight requests one replica should carry"
    )
    scale_up_delay_s: float = Field(
        default=5.0, ge=0, description="how long the load must want more replicas before adding"
    )
    scale_down_delay_s: float = Field(
        default=30.0, ge=0, description="how long the load must want fewer replicas before removing"
    )
    scale_to_zero_after_s: float = Field(
        default=300.0, ge=0, description="idle time before scaling to zero; only when min_replicas is 0"
    )
    target_waiting: float | None = Field(
        default=None, gt=0,
        description="LLM deployments: waiting requests one replica should carry (the scaling signal "
                    "instead of target_in_flight); null for other deployments",
    )
    target_tokens_per_s: float | None = Field(
        default=None, gt=0,
        description="LLM deployments: generated tokens per second one replica should carry, a second "
                    "signal beside target_waiting (a replica is added when the deployment generates "
                    "more); null to scale on waiting requests alone",
    )

    @model_validator(mode="after")
    def _min_not_above_max(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) must not exceed max_replicas ({self.max_replicas})"
            )
        if self.target_tokens_per_s is not None and self.target_waiting is None:
            raise ValueError("target_tokens_per_s is a second signal for LLM deployments: "
                             "set target_waiting too")
        return self


RESERVED_NAMES = frozenset({"v1"})
"""Names no deployment may take: ``/<workspace>/v1/...`` is the workspace's OpenAI base URL."""


def check_not_reserved(name: str) -> str:
    if name in RESERVED_NAMES:
        raise ValueError(f"{name!r} is reserved: /<workspace>/{name}/ is the workspace's OpenAI "
                         "base URL; choose another deployment name")
    return name


class LLMSpec(BaseModel):
    """What marks a deployment as an LLM endpoint (``nubis llm deploy`` sets it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$",
                       description="the id the OpenAI API answers to (a request's `model`)")
    source: str = Field(max_length=1024, description="pypi:PACKAGE, storage:PATH or model:NAME:VERSION")
    engine: str = Field(default="transformers", max_length=64)


class LLMInfo(BaseModel):
    """:class:`LLMSpec` as the platform reports it (tolerant of fields a newer server adds)."""

    model_config = ConfigDict(extra="ignore")

    model: str
    source: str = ""
    engine: str = ""


class DeploymentSpec(BaseModel):
    """What the user asks for: ``nubis deploy`` and ``POST /api/v1/deployments`` send this."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str = Field(pattern=DEPLOYMENT_NAME_PATTERN, description="lower-case letters, digits and '-'")
    photon: str = Field(
        pattern=PHOTON_REF_PATTERN, description="'name:version', or 'name' for the latest version"
    )
    resources: Resources | None = Field(default=None, description="per replica; null: the photon's")
    env: dict[str, str] = Field(default_factory=dict)
    secrets: list[str] = Field(
        default_factory=list, description="names of workspace secrets, injected as env vars"
    )
    access: Literal["private", "public"] = "private"
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    node_selector: NodeSelector = Field(
        default_factory=dict, description="node labels every replica's node must have (key → value)")
    llm: LLMSpec | None = Field(default=None, description="set on LLM deployments (`nubis llm deploy`)")

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        return check_not_reserved(name)

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        bad = sorted(k for k in env if not is_valid_secret_name(k))
        if bad:
            raise ValueError(f"env names {bad!r} are not valid: {SECRET_NAME_RULE}")
        check_env(env)
        return env

    @field_validator("secrets")
    @classmethod
    def _secret_names(cls, secrets: list[str]) -> list[str]:
        return check_secret_names(secrets)

    @model_validator(mode="after")
    def _env_and_secrets_apart(self) -> DeploymentSpec:
        both = sorted(set(self.env) & set(self.secrets))
        if both:
            raise ValueError(f"{both!r} are set both in env and as secrets: keep one")
        check_spec_size(self.model_dump_json(), what="deployment")
        return self


class Replica(BaseModel):
    """One replica as the platform reports it."""

    model_config = ConfigDict(extra="ignore")

    id: str
    status: OutputReplicaStatus
    reason: str | None = Field(default=None, description="why it is in this status, for people")
    endpoint: str | None = Field(default=None, description="the replica's own URL")
    photon: str | None = Field(default=None, description="the 'name:version' this replica runs")
    restarts: int = 0
    node: str | None = Field(default=None, description="the node it runs on")
    created_at: datetime | None = None


class Deployment(BaseModel):
    """A deployment as the platform reports it."""

    model_config = ConfigDict(extra="ignore")

    name: str
    photon: str = Field(description="the 'name:version' it runs")
    status: OutputDeploymentStatus
    reason: str | None = None
    access: str = "private"
    target_replicas: int = 0
    ready_replicas: int = 0
    min_replicas: int = 0
    max_replicas: int = 1
    endpoint: str | None = Field(default=None, description="the URL to call it at, through the gateway")
    resources: Resources | None = Field(default=None, description="per replica; null: the photon's own")
    env: dict[str, str] = Field(default_factory=dict)
    secrets: list[str] = Field(default_factory=list, description="names of the secrets it gets")
    node_selector: dict[str, str] = Field(default_factory=dict, description="node labels its replicas need")
    llm: LLMInfo | None = Field(default=None, description="set on LLM deployments")
    replicas: list[Replica] = Field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None


class DeploymentEvent(BaseModel):
    """Something that happened to a deployment or one of its replicas: the "why" of its status."""

    model_config = ConfigDict(extra="ignore")

    at: datetime
    kind: str
    message: str
    replica: str | None = None


class DeploymentUpdateRequest(BaseModel):
    """``PATCH /api/v1/deployments/{name}``: only the fields sent change. A new photon, resources,
    env or secrets roll out one replica at a time (and roll back if the new replicas keep
    crashing); new bounds rescale; access changes at once."""

    model_config = ConfigDict(extra="forbid")

    photon: str | None = Field(default=None, pattern=PHOTON_REF_PATTERN)
    resources: Resources | None = Field(default=None, description="per replica")
    env: dict[str, str] | None = Field(default=None, description="the whole new env")
    secrets: list[str] | None = Field(default=None, description="the whole new list of secret names")
    min_replicas: int | None = Field(default=None, ge=0, le=MAX_REPLICAS)
    max_replicas: int | None = Field(default=None, ge=1, le=MAX_REPLICAS)
    access: Literal["private", "public"] | None = None

