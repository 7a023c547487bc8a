"""Object storage on fsspec: a local folder by default, S3 with ``s3://bucket/prefix``.

The server and (later) workloads reach the same files through this module. Layout under the root::

    workspaces/<workspace>/files/<path>      what users put and get
    workspaces/<workspace>/photons/<name>/<version>.photon

Writes are atomic: data goes to a temporary object and becomes visible only on ``commit()``
(a rename on a local disk; a completed multipart upload on S3), so a client that disconnects
mid-way leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO

import fsspec

from nubis.errors import BadRequestError, NotFoundError

CHUNK = 1 << 20
MAX_PATH = 1024
TMP_DIR = ".nubis-tmp"


class InvalidPathError(BadRequestError):
    code = "invalid_path"
    http_status = 422


def normalize_path(path: str, *, allow_empty: bool = False) -> str:
    """``a//b/./c`` → ``a/b/c``; rejects ``..``, absolute paths, control characters, backslashes."""
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise InvalidPathError("paths cannot contain control characters")
    if "\\" in path:
        raise InvalidPathError("use '/' to separate folders, not '\\'")
    if path.startswith("/"):
        raise InvalidPathError(f"{path!r}: give a path relative to the workspace, without a leading /")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidPathError(f"{path!r}: '..' is not allowed in paths")
    if any(p == TMP_DIR for p in parts):
        raise InvalidPathError(f"{TMP_DIR!r} is reserved")
    clean = "/".join(parts)
    if not clean and not allow_empty:
        raise InvalidPathError("the path is empty")
    if len(clean) > MAX_PATH:
        raise InvalidPathError(f"paths are at most {MAX_PATH} characters")
    return clean


@dataclass(frozen=True)
class ObjectInfo:
    path: str
    size: int
    modified: datetime | None


class AtomicWriter:
    """Write chunks, hashing as they go; ``commit()`` makes the object visible."""

    def __init__(self, fs: fsspec.AbstractFileSystem, final: str, tmp: str | None) -> None:
        self._fs = fs
        self._final = final
        self._tmp = tmp
        self._file: Any = fs.open(tmp or final, "wb")
        self._sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._sha.update(data)
        self.size += len(data)

    def commit(self) -> str:
        self._file.close()
        if self._tmp is not None:
            self._fs.mv(self._tmp, self._final)
        return self._sha.hexdigest()

    def abort(self) -> None:
        discard = getattr(self._file, "discard", None)
        if self._tmp is None and callable(discard):  # S3: abort the multipart upload
            discard()
            return
        self._file.close()
        if self._tmp is not None:
            self._fs.rm(self._tmp)


class Store:
    """A rooted view of the object store (one workspace's files, or its photon bundles)."""

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str, *, local: bool) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.local = local

    def _full(self, path: str) -> str:
        return f"{self.root}/{path}" if path else self.root

    def writer(self, path: str) -> AtomicWriter:
        final = self._full(normalize_path(path))
        if self.local:
            parent = posixpath.dirname(final)
            if self.fs.isfile(parent):
                raise InvalidPathError(f"{posixpath.dirname(path)!r} is a file, not a folder")
            if self.fs.isdir(final):
                raise InvalidPathError(f"{path!r} is a folder")
            self.fs.makedirs(parent, exist_ok=True)
            tmp_dir = f"{self.root}/{TMP_DIR}"
            self.fs.makedirs(tmp_dir, exist_ok=True)
            return AtomicWriter(self.fs, final, f"{tmp_dir}/{uuid.uuid4().hex}")
        return AtomicWriter(self.fs, final, None)

    def put_bytes(self, path: str, data: bytes) -> str:
        writer = self.writer(path)
        try:
            writer.write(data)
        except BaseException:
            writer.abort()
            raise
        return writer.commit()

    def info(self, path: str) -> ObjectInfo:
        full = self._full(normalize_path(path))
        try:
            info = self.fs.info(full)
        except FileNotFoundError:
            raise NotFoundError(f"no file at {path!r}") from None
        if info.get("type") != "file":
            raise NotFoundError(f"{path!r} is a folder, not a file")
        return self._object(full, info)

    def open(self, path: str) -> BinaryIO:
        self.info(path)
        return self.fs.open(self._full(normalize_path(path)), "rb")

    def iter_bytes(self, path: str, chunk: int = CHUNK) -> Iterator[bytes]:
        with self.open(path) as fh:
            while data := fh.read(chunk):
                yield data

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every file under ``prefix`` (a folder or the start of a name), sorted by path."""
        prefix = normalize_path(prefix, allow_empty=True) if prefix.strip("/") else ""
        base = self._full(prefix)
        if self.fs.isfile(base):
            return [self._object(base, self.fs.info(base))]
        folder = base if self.fs.isdir(base) else posixpath.dirname(base)
        if not self.fs.exists(folder):
            return []
        found = self.fs.find(folder, detail=True)
        items = [
            self._object(name, info)
            for name, info in found.items()
            if info.get("type") == "file" and self._rel(name).startswith(prefix)
            and not self._rel(name).startswith(TMP_DIR + "/")
        ]
        return sorted(items, key=lambda o: o.path)

    def delete(self, path: str, *, recursive: bool = False) -> int:
        """Delete a file, or with ``recursive`` everything under a folder; returns files deleted."""
        clean = normalize_path(path, allow_empty=recursive)
        full = self._full(clean)
        if self.fs.isfile(full):
            self.fs.rm(full)
            return 1
        if not recursive:
            if self.fs.isdir(full):
                raise InvalidPathError(f"{path!r} is a folder: delete it with recursive=true")
            raise NotFoundError(f"no file at {path!r}")
        doomed = [o for o in self.list(clean) if o.path == clean or o.path.startswith(clean + "/")
                  or not clean]
        for obj in doomed:
            self.fs.rm(self._full(obj.path))
        if self.local and self.fs.isdir(full) and clean:
            self.fs.rm(full, recursive=True)
        return len(doomed)

    def usage(self) -> int:
        return sum(o.size for o in self.list(""))

    def _rel(self, full: str) -> str:
        full = self.fs._strip_protocol(full)
        root = self.fs._strip_protocol(self.root)
        return full[len(root):].lstrip("/")

    def _object(self, full: str, info: dict[str, Any]) -> ObjectInfo:
        modified = info.get("mtime") or info.get("LastModified") or info.get("created")
        if isinstance(modified, int | float):
            modified = datetime.fromtimestamp(modified, UTC)
        return ObjectInfo(self._rel(full), int(info.get("size") or 0), modified)


class ObjectStore:
    """The whole store. ``ObjectStore.from_url("/var/nubis/storage")`` or ``("s3://bucket/x")``."""

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str, *, local: bool) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.local = local

    @classmethod
    def from_url(cls, url: str, **options: Any) -> ObjectStore:
        if url.startswith("s3://"):
            endpoint = os.environ.get("NUBIS_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL")
            if endpoint and "client_kwargs" not in options:
                options["client_kwargs"] = {"endpoint_url": endpoint}
            fs = fsspec.filesystem("s3", **options)
            return cls(fs, url.removeprefix("s3://"), local=False)
        path = url.removeprefix("file://")
        os.makedirs(path, exist_ok=True)
        fs = fsspec.filesystem("file", **options)
        return cls(fs, fs._strip_protocol(os.path.abspath(path)), local=True)

    def files(self, workspace: str) -> Store:
        return Store(self.fs, f"{self.root}/workspaces/{workspace}/files", local=self.local)

    def photons(self, workspace: str) -> Store:
        return Store(self.fs, f"{self.root}/workspaces/{workspace}/photons", local=self.local)

    def drop_workspace(self, workspace: str) -> None:
        path = f"{self.root}/workspaces/{workspace}"
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)
