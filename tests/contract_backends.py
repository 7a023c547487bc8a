"""The backends the contract suite (``tests/contract``) runs on, each with what it needs: a storage
that holds the echo photon, the backend itself, and the node to place on (None: its only one)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nubis.backends.artifacts import Artifact
from nubis.backends.base import Backend
from nubis.backends.local import LocalBackend
from nubis.photon.build import build_bundle
from nubis.storage import ObjectStore

from servers import EXAMPLES


def _ray_installed() -> bool:
    """Under CI the Ray backend must run (its import fails loudly if missing); elsewhere it is
    skipped when ``ray`` is not installed."""
    return os.environ.get("CI") == "true" or importlib.util.find_spec("ray") is not None


BACKENDS = ["local", *(["ray"] if _ray_installed() else [])]


@dataclass
class Harness:
    backend: Backend
    storage: str
    artifact: Artifact
    node: str | None
    tmp: Path


def echo_in_storage(tmp: Path) -> tuple[str, Artifact]:
    bundle, manifest = build_bundle(str(EXAMPLES / "echo"), tmp / "echo.photon")
    storage = str(tmp / "storage")
    with bundle.open("rb") as fh:
        ObjectStore.from_url(storage).photons("default").put_file("echo/1.photon", fh)
    return storage, Artifact("default", "photons", "echo/1.photon", manifest.content_hash)


@contextlib.asynccontextmanager
async def make_harness(name: str, request: pytest.FixtureRequest, tmp: Path) -> AsyncIterator[Harness]:
    storage, artifact = echo_in_storage(tmp)
    if name == "local":
        yield Harness(LocalBackend(tmp / "state"), storage, artifact, None, tmp)
        return
    if name == "ray":
        cluster = request.getfixturevalue("ray_contract_cluster")
        from nubis.backends.ray_backend import RayBackend  # the ray extra, imported after the cluster

        yield Harness(RayBackend(tmp / "control-plane", address=cluster.address, storage=storage), storage,
                      artifact, cluster.node_id("cpu"), tmp)
        return
    raise ValueError(f"no contract harness for backend {name!r}")
