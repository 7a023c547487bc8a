"""The backends the contract suite (``tests/contract``) runs on, each with what it needs: a storage
that holds the echo photon, the backend itself, and the node to place on (None: its only one)."""

from __future__ import annotations

import contextlib
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

BACKENDS = ["local"]


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
    raise ValueError(f"no contract harness for backend {name!r}")
