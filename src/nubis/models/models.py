"""The model registry on the wire: numbered versions of a trained model, derived versions, deploys."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from nubis.models.deployments import AutoscalingSpec
from nubis.models.jobs import MODEL_NAME_PATTERN
from nubis.models.resources import Resources

MODEL_REF_PATTERN = r"^[a-z0-9][a-z0-9\-]{0,62}(:([0-9]{1,9}|latest))?$"
_MODEL_REF = re.compile(MODEL_REF_PATTERN)


def split_model_ref(ref: str) -> tuple[str, int | None]:
    """``"digits-mlp:2"`` → ``("digits-mlp", 2)``; ``"digits-mlp"`` → latest (None)."""
    if not _MODEL_REF.fullmatch(ref):
        raise ValueError(f"a model is 'name' or 'name:version', not {ref[:80]!r}")
    name, _, version = ref.partition(":")
    return name, None if version in ("", "latest") else int(version)


class ModelVersion(BaseModel):
    """One registered version: its files in storage, how it was made, how good it is."""

    model_config = ConfigDict(extra="ignore")

    name: str
    version: int
    ref: str = Field(description="'name:version'")
    format: str = Field(description="torch-fp32, torch-int8-dynamic or onnx")
    arch: str | None = None
    path: str = Field(description="folder in the workspace's storage holding the files")
    size_bytes: int = 0
    metrics: dict[str, Any] = Field(default_factory=dict)
    comparison: dict[str, Any] | None = Field(
        default=None, description="derived versions: size, latency and accuracy against the parent"
    )
    lineage: dict[str, Any] = Field(default_factory=dict, description="job, dataset, parent")
    created_at: datetime | None = None


class Model(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    latest: int
    versions: list[ModelVersion] = Field(default_factory=list)


class ModelDeployRequest(BaseModel):
    """``POST /api/v1/models/{name}/versions/{version}/deploy``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=MODEL_NAME_PATTERN, description="the deployment's name")
    access: Literal["private", "public"] = "private"
    resources: Resources | None = Field(default=None, description="per replica; default 1 CPU, 1 GiB")
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)


class ModelExportRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["onnx"] = "onnx"
