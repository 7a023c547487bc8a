"""Jobs on the wire: a command run by N workers started together (a gang), and what became of it.

Strict on input (``JobSpec``, ``TrainRequest`` forbid unknown fields), tolerant on output (``Job``
reads a status this version does not know as ``unknown``).
"""

from __future__ import annotations

import enum
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nubis.models.deployments import tolerant_enum
from nubis.models.limits import MAX_TIMEOUT_S, check_command, check_env, check_finite_json, check_spec_size
from nubis.models.requirements import check_requirements
from nubis.models.resources import NodeSelector, Resources
from nubis.models.secrets import check_secret_names

JOB_NAME_PATTERN = r"^[a-z0-9][a-z0-9\-]{0,62}$"
MODEL_NAME_PATTERN = r"^[a-z0-9][a-z0-9\-]{0,62}$"
BUILTIN_DATASETS = ("digits", "iris", "wine", "breast_cancer")
TRAINABLE_MODELS = ("logreg", "mlp", "cnn")
MAX_WORKERS = 64

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class JobStatus(enum.StrEnum):
    """A job's life; the allowed moves are in ``nubis.server.scheduler.jobs``."""

    queued = "queued"  # waiting for admission; the reason says why (capacity, quota, retry backoff)
    running = "running"  # every worker started
    stopping = "stopping"  # cancelled, timed out, preempted or a worker failed: stopping the others
    succeeded = "succeeded"  # every worker exited 0 (terminal)
    failed = "failed"  # a worker failed and no retry is left, or it timed out (terminal)
    cancelled = "cancelled"  # cancelled by a user (terminal)
    unknown = "unknown"  # a status this version does not know


class WorkerStatus(enum.StrEnum):
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    stopped = "stopped"
    unknown = "unknown"


def job_outputs_path(job_id: str) -> str:
    """Where a job's ``NUBIS_OUTPUT_DIR`` is kept in its workspace's storage."""
    return f".jobs/{job_id}/outputs"


TERMINAL_JOB_STATUSES = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})

OutputJobStatus = Annotated[JobStatus, tolerant_enum(JobStatus)]
OutputWorkerStatus = Annotated[WorkerStatus, tolerant_enum(WorkerStatus)]


def _check_env(env: dict[str, str]) -> dict[str, str]:
    bad = sorted(k for k in env if not _ENV_NAME.match(k))
    if bad:
        raise ValueError(
            f"env names {bad!r} are not valid: letters, digits and '_', not starting with a digit"
        )
    return env


class JobSpec(BaseModel):
    """What ``nubis job submit`` and ``POST /api/v1/jobs`` send."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str | None = Field(
        default=None, pattern=JOB_NAME_PATTERN, description="lower-case letters, digits and '-'"
    )
    command: list[str] = Field(min_length=1, max_length=1000, description="argv; 'python' is the platform's")
    workers: int = Field(default=1, ge=1, le=MAX_WORKERS, description="processes started together")
    resources: Resources = Field(
        default_factory=lambda: Resources(cpu=1, memory="1Gi"), description="per worker"
    )
    env: dict[str, str] = Field(default_factory=dict)
    secrets: list[str] = Field(default_factory=list, description="workspace secrets, injected as env vars")
    code: str | None = Field(
        default=None, description="storage path of a zip of the working directory, unpacked as the cwd"
    )
    max_retries: int = Field(default=0, ge=0, le=20, description="restarts of the whole gang after a failure")
    timeout_s: float | None = Field(
        default=None, gt=0, le=MAX_TIMEOUT_S, description="wall-clock limit of one attempt"
    )
    priority: int = Field(default=0, ge=-1000, le=1000, description="higher is admitted first")
    requirements: list[str] = Field(
        default_factory=list,
        description="pip requirements (one PEP 508 line each); what the platform's environment lacks is "
        "installed into a cached virtualenv whose python the workers run",
    )
    spread: bool = Field(default=False, description="one worker per node (Ray's STRICT_SPREAD); else packed")
    node_selector: NodeSelector = Field(
        default_factory=dict, description="node labels every worker's node must have (key → value)")

    @field_validator("command")
    @classmethod
    def _command(cls, command: list[str]) -> list[str]:
        if not command[0].strip():
            raise ValueError("the command is empty")
        check_command(command)
        return command

    @field_validator("requirements")
    @classmethod
    def _requirements(cls, requirements: list[str]) -> list[str]:
        return check_requirements(requirements)

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        check_env(env)
        return _check_env(env)

    @field_validator("secrets")
    @classmethod
    def _secret_names(cls, secrets: list[str]) -> list[str]:
        return check_secret_names(secrets)

    @model_validator(mode="after")
    def _env_and_secrets_apart(self) -> JobSpec:
        both = sorted(set(self.env) & set(self.secrets))
        if both:
            raise ValueError(f"{both!r} are set both in env and as secrets: keep one")
        check_spec_size(self.model_dump_json(), what="job")
        return self


class TrainRequest(BaseModel):
    """``POST /api/v1/train``: a job running the built-in trainer; its result becomes a model version."""

    model_config = ConfigDict(frozen=True, extra="forbid", protected_namespaces=(), allow_inf_nan=False)

    model_name: Literal["logreg", "mlp", "cnn"] = Field(description="the architecture")
    data_path: str = Field(
        min_length=1, max_length=1024,
        description="'builtin:digits|iris|wine|breast_cancer', or a CSV (label column) or NPZ (X, y) "
        "in storage",
    )
    num_epochs: int = Field(default=10, ge=1, le=1000)
    num_workers: int = Field(default=1, ge=1, le=MAX_WORKERS)
    batch_size: int = Field(default=64, ge=1, le=65536)
    learning_rate: float | None = Field(default=None, gt=0, le=10)
    amp: bool = Field(default=False, description="mixed precision")
    label_column: str = Field(default="label", min_length=1, max_length=256)
    name: str | None = Field(
        default=None, pattern=MODEL_NAME_PATTERN,
        description="registry name of the trained model; default '<dataset>-<model>'",
    )
    resources: Resources = Field(
        default_factory=lambda: Resources(cpu=1, memory="1Gi"), description="per worker"
    )
    max_retries: int = Field(default=2, ge=0, le=20)
    priority: int = Field(default=0, ge=-1000, le=1000)
    seed: int = Field(default=0, ge=0, lt=2**32)
    spread: bool = Field(default=False, description="one worker per node (Ray's STRICT_SPREAD); else packed")
    node_selector: NodeSelector = Field(
        default_factory=dict, description="node labels every worker's node must have (key → value)")


class Worker(BaseModel):
    model_config = ConfigDict(extra="ignore")

    rank: int
    status: OutputWorkerStatus
    exit_code: int | None = None
    reason: str | None = None
    node: str | None = Field(default=None, description="the node it runs on")


class Job(BaseModel):
    """A job as the platform reports it."""

    model_config = ConfigDict(extra="ignore")

    id: str
    name: str
    status: OutputJobStatus
    reason: str | None = Field(default=None, description="why it is in this status (why pending, why failed)")
    kind: str = Field(default="command", description="command, train, quantize or export")
    command: list[str] = Field(default_factory=list)
    requirements: list[str] = Field(default_factory=list)
    workers: int = 1
    spread: bool = Field(default=False, description="one worker per node")
    node_selector: dict[str, str] = Field(default_factory=dict, description="node labels its workers need")
    resources: Resources | None = None
    priority: int = 0
    attempt: int = Field(default=0, description="how many times the gang was started")
    max_retries: int = 0
    worker_status: list[Worker] = Field(default_factory=list, description="the current attempt's workers")
    metrics: dict[str, Any] = Field(default_factory=dict, description="the latest reported metrics")
    history: list[dict[str, Any]] = Field(default_factory=list, description="every reported metrics record")
    model: str | None = Field(default=None, description="'name:version' registered from the result")
    outputs: str | None = Field(
        default=None, description="the storage folder that receives NUBIS_OUTPUT_DIR when each attempt ends")
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class JobEvent(BaseModel):
    model_config = ConfigDict(extra="ignore")

    at: datetime
    kind: str
    message: str


class MetricsReport(BaseModel):
    """What a worker posts to ``/api/v1/jobs/{id}/metrics`` (the trainer: once per epoch)."""

    model_config = ConfigDict(extra="allow")

    epoch: int | None = Field(default=None, ge=0, le=2**31 - 1)
    epochs: int | None = Field(default=None, ge=0, le=2**31 - 1)

    @model_validator(mode="after")
    def _finite(self) -> MetricsReport:
        check_finite_json(self.model_extra or {})
        return self
