"""``client.models``: the model registry, derived versions (int8, ONNX) and deploys."""

from __future__ import annotations

from typing import Any, Literal

from nubis.client.base import ResourceAPI
from nubis.models.deployments import Deployment
from nubis.models.jobs import Job
from nubis.models.models import Model, ModelVersion, split_model_ref
from nubis.models.resources import Resources


def _path(ref: str) -> str:
    name, version = split_model_ref(ref)
    return f"/models/{name}/versions/{version if version is not None else 'latest'}"


class ModelsAPI(ResourceAPI):
    def list(self) -> list[Model]:
        return [Model.model_validate(m) for m in self._t.json("GET", "/models")]

    def get(self, ref: str) -> ModelVersion:
        """``"name:version"``, or ``"name"`` for the latest version."""
        return ModelVersion.model_validate(self._t.json("GET", _path(ref)))

    def versions(self, name: str) -> Model:
        return Model.model_validate(self._t.json("GET", f"/models/{name}"))

    def delete(self, ref: str) -> None:
        self._t.json("DELETE", _path(ref))

    def quantize(self, ref: str) -> Job:
        """Queue a dynamic int8 quantization job; its ``model`` is the new version once it succeeded."""
        return Job.model_validate(self._t.json("POST", _path(ref) + "/quantize"))

    def export(self, ref: str, *, format: Literal["onnx"] = "onnx") -> Job:
        """Queue an ONNX export job (served with onnxruntime)."""
        return Job.model_validate(self._t.json("POST", _path(ref) + "/export", json={"format": format}))

    def deploy(
        self,
        ref: str,
        name: str,
        *,
        min_replicas: int = 1,
        max_replicas: int = 1,
        access: Literal["private", "public"] = "private",
        resources: Resources | dict[str, Any] | None = None,
    ) -> Deployment:
        """Serve a version behind the gateway: ``POST /<workspace>/<name>/predict {"inputs": [[...]]}``."""
        body: dict[str, Any] = {"name": name, "access": access,
                                "autoscaling": {"min_replicas": min_replicas, "max_replicas": max_replicas}}
        if resources is not None:
            body["resources"] = (resources.model_dump(mode="json") if isinstance(resources, Resources)
                                 else resources)
        return Deployment.model_validate(self._t.json("POST", _path(ref) + "/deploy", json=body))
