"""A workspace's files through the control plane's storage API: how workloads reach S3 storage.

With S3 storage a workload's ``NUBIS_STORAGE_URL`` is the API's storage route
(``http://<control plane>/api/v1/storage``) and its ``NUBIS_JOB_TOKEN`` (a member token of its
workspace, revoked when the job ends) the key: the workload never holds the platform's S3
credentials, sees its own workspace's files and nothing else, and works the same on any node.
``Store.from_url`` hands such a URL to :class:`ApiStore`, which offers the part of
:class:`~nubis.storage.Store` that workloads use (read, list, upload a folder, download one).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from nubis.errors import BadRequestError
from nubis.models.storage import StorageObject, normalize_path

STORAGE_ROUTE = "/api/v1/storage"
TOKEN_ENV = ("NUBIS_JOB_TOKEN", "NUBIS_TOKEN")


def is_api_url(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def api_storage_url(api_url: str) -> str:
    """The ``NUBIS_STORAGE_URL`` of a workload that reaches storage through ``api_url``."""
    return api_url.rstrip("/") + STORAGE_ROUTE


class ApiStore:
    """One workspace's files (the token's) at a control plane; paths as in :class:`Store`."""

    def __init__(self, url: str, token: str) -> None:
        from nubis.client.client import Client  # the SDK only where a workload uses the API

        if not url.rstrip("/").endswith(STORAGE_ROUTE):
            raise BadRequestError(f"{url!r} is not a storage URL of the nubis API (…{STORAGE_ROUTE})")
        self.url = url
        self._client = Client(url.rstrip("/")[: -len(STORAGE_ROUTE)], token, timeout=300.0)
        self.storage = self._client.storage

    @classmethod
    def from_env(cls, url: str, env: Mapping[str, str] | None = None) -> ApiStore:
        env = os.environ if env is None else env
        token = next((env[name] for name in TOKEN_ENV if env.get(name)), None)
        if token is None:
            raise BadRequestError(f"storage at {url} needs a token: NUBIS_JOB_TOKEN (set in every job) "
                                  "or NUBIS_TOKEN")
        return cls(url, token)

    def close(self) -> None:
        self._client.close()

    def read_bytes(self, path: str) -> bytes:
        return self.storage.read_bytes(normalize_path(path))

    def put_bytes(self, path: str, data: bytes) -> str:
        """Write ``data`` to ``path``; returns its sha256."""
        return self.storage.put_bytes(normalize_path(path), data).sha256

    def list(self, prefix: str = "") -> list[StorageObject]:
        return self.storage.list(prefix)

    def delete(self, path: str, *, recursive: bool = False) -> int:
        return self.storage.delete(path, recursive=recursive).deleted

    def download(self, path: str, local: str | os.PathLike[str]) -> None:
        """Copy one file to a local file, atomically."""
        self.storage.get(normalize_path(path), local)

    def get_folder(self, prefix: str, local: str | os.PathLike[str]) -> int:
        """Download every file under ``prefix/`` into a local folder; ``NotFoundError`` if none."""
        return len(self.storage.get_dir(normalize_path(prefix), local))

    def put_folder(self, local: str | os.PathLike[str], prefix: str) -> int:
        """Upload every file under a local folder to ``prefix/`` (replacing what was there);
        returns the bytes written."""
        prefix = normalize_path(prefix)
        if self.storage.list(prefix + "/"):
            self.storage.delete(prefix, recursive=True)
        return sum(r.size for r in self.storage.put_dir(prefix, local))

