"""What a node runs, fetched from the platform's storage and cached there, hash-checked.

Specs name an ``Artifact`` (where it lies in storage and the hash it must have), never a local
path: each node (the control plane's machine for the local backend, every Ray node for the Ray
backend) fetches it into its own ``ArtifactCache`` and checks it again before every use, so a
cached file that was changed or damaged is fetched anew, and one that storage serves wrong is
refused.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from nubis.errors import BundleError
from nubis.photon.bundle import verified_hash
from nubis.storage import Store

CHUNK = 1 << 20


@dataclass(frozen=True)
class Artifact:
    """A photon bundle (``area="photons"``: ``digest`` is its content hash) or a job's code zip
    (``area="files"``: ``digest`` is the sha256 of the file), in one workspace's storage."""

    workspace: str
    area: Literal["photons", "files"]
    path: str
    digest: str

    def to_dict(self) -> dict[str, Any]:
        return {"workspace": self.workspace, "area": self.area, "path": self.path, "digest": self.digest}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Artifact:
        area = data["area"]
        if area not in ("photons", "files"):
            raise ValueError(f"unknown artifact area {area!r}")
        return cls(str(data["workspace"]), area, str(data["path"]), str(data["digest"]))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def digest_of(artifact: Artifact, path: Path) -> str:
    """The hash of what ``path`` holds, computed as ``artifact``'s digest is."""
    if artifact.area == "photons":
        return verified_hash(path)
    return file_sha256(path)


class Areas(Protocol):
    """What the cache asks of the platform's storage: an ``ObjectStore``, or one that a node opens
    on first use (``ray_actors.NodeStore``: a copy already in the cache never opens it)."""

    def photons(self, workspace: str) -> Store: ...

    def files(self, workspace: str) -> Store: ...


class ArtifactCache:
    """A node's cache: ``folder/<digest>.<area>``; safe to use from several threads. Storage is
    asked only when the copy is missing or wrong."""

    def __init__(self, store: Areas, folder: Path) -> None:
        self.store = store
        self.folder = Path(folder)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def _area(self, artifact: Artifact) -> Store:
        if artifact.area == "photons":
            return self.store.photons(artifact.workspace)
        return self.store.files(artifact.workspace)

    def fetch(self, artifact: Artifact) -> Path:
        """The local copy of ``artifact``, fetched if missing or not what it must be (blocking)."""
        if not artifact.digest or any(c not in "0123456789abcdef" for c in artifact.digest):
            raise BundleError(f"{artifact.path}: no valid digest to check it against")
        dest = self.folder / f"{artifact.digest}.{artifact.area}"
        with self._guard:
            lock = self._locks.setdefault(artifact.digest, threading.Lock())
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        # One fetch per digest on the node: threads of this process, and other processes (two
        # replicas' actors on one node), which must not replace a copy another has just handed out.
        with lock, open(self.folder / f"{artifact.digest}.{artifact.area}.lock", "a") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            if dest.exists():
                if self._holds(artifact, dest):
                    return dest
                dest.unlink()
            tmp = dest.with_name(f"{dest.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            try:
                self._area(artifact).download(artifact.path, tmp)
                got = digest_of(artifact, tmp)
                if got != artifact.digest:
                    raise BundleError(f"{artifact.path}: storage holds content {got[:12]}, not the expected "
                                      f"{artifact.digest[:12]}; it was changed after it was registered")
                os.replace(tmp, dest)
            finally:
                tmp.unlink(missing_ok=True)
            return dest

    def _holds(self, artifact: Artifact, path: Path) -> bool:
        try:
            return digest_of(artifact, path) == artifact.digest
        except (BundleError, OSError):
            return False
