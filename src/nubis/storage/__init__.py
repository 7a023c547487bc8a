"""Object storage on fsspec: a local folder by default, S3 with ``s3://bucket/prefix``.

The server and workloads reach the same files through this module. Layout under the root::

    workspaces/<workspace>/files/<path>                 what users put and get
    workspaces/<workspace>/files/.nubis-tmp/<uuid>      uploads in progress (local folder only)
    workspaces/<workspace>/photons/<name>/<version>.photon

Writes are atomic: nothing is visible at the final path before ``commit()``. On a local disk
the data goes to a temporary file that is renamed into place; on S3 it goes straight to the
final key as a multipart upload, which S3 only shows once it is completed (``abort()`` cancels
it). Paths are checked by :func:`normalize_path`; fsspec calls that expand glob patterns
(``rm``, ``expand_path``) are never given a user's path.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO

import fsspec

from nubis.errors import ConflictError, NotFoundError
from nubis.models.storage import MAX_PATH, TMP_DIR, InvalidPathError, normalize_path
from nubis.storage.remote import ApiStore, is_api_url

__all__ = [
    "CHUNK",
    "MAX_PATH",
    "TMP_DIR",
    "AtomicWriter",
    "InvalidPathError",
    "ObjectInfo",
    "ObjectStore",
    "Store",
    "normalize_path",
]

CHUNK = 1 << 20
S3_BLOCK = 16 << 20  # part size of S3 uploads and read-ahead of S3 downloads: memory per transfer
STALE_UPLOAD_S = 24 * 3600  # a temporary file untouched this long belongs to a server that died


@dataclass(frozen=True)
class ObjectInfo:
    path: str
    size: int
    modified: datetime | None


class AtomicWriter:
    """Write chunks, hashing as they go; ``commit()`` makes the object visible, ``abort()`` drops it.

    Not thread-safe: one thread at a time (calls may come from different threads in turn).
    """

    def __init__(self, fs: fsspec.AbstractFileSystem, final: str, tmp: str | None) -> None:
        self._fs = fs
        self._final = final
        self._tmp = tmp
        self._file: Any = fs.open(tmp or final, "wb")
        self._sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._file.write(data)
        self._sha.update(data)
        self.size += len(data)
        return len(data)

    def commit(self) -> str:
        """Make the object visible at its path; returns its sha256 (hex)."""
        self._file.close()
        if self._tmp is not None:
            try:
                self._fs.mv(self._tmp, self._final)
            except FileNotFoundError:  # a delete pruned the empty parent folder meanwhile
                self._fs.makedirs(posixpath.dirname(self._final), exist_ok=True)
                self._fs.mv(self._tmp, self._final)
        return self._sha.hexdigest()

    def abort(self) -> None:
        """Drop everything written; the path keeps what it had before (or nothing)."""
        if self._tmp is None:  # S3: abort the multipart upload (a small file was never sent)
            self._file.discard()
            self._file.closed = True  # or garbage collection would try to finish the upload
            return
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._fs.rm_file(self._tmp)


class Store:
    """A rooted view of the object store (one workspace's files, or its photon bundles)."""

    def __init__(self, fs: fsspec.AbstractFileSystem, root: str, *, local: bool) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.local = local

    @classmethod
    def from_url(cls, url: str, env: Mapping[str, str] | None = None) -> Store | ApiStore:
        """The files beneath ``url`` (a workload's ``NUBIS_STORAGE_URL``: its workspace's files);
        an ``http(s)://…/api/v1/storage`` URL is the control plane's API, with the job's token."""
        if is_api_url(url):
            return ApiStore.from_env(url, env)
        store = ObjectStore.from_url(url)
        return cls(store.fs, store.root, local=store.local)

    def _full(self, path: str) -> str:
        return f"{self.root}/{path}" if path else self.root

    def writer(self, path: str) -> AtomicWriter:
        """An atomic writer to ``path``; ConflictError if a file stands where a folder must be."""
        clean = normalize_path(path)
        self._check_tree(clean)
        final = self._full(clean)
        if not self.local:
            return AtomicWriter(self.fs, final, None)
        tmp_dir = f"{self.root}/{TMP_DIR}"
        try:
            self.fs.makedirs(posixpath.dirname(final), exist_ok=True)
            self.fs.makedirs(tmp_dir, exist_ok=True)
        except (FileExistsError, NotADirectoryError):  # raced with a put of a file on the way
            raise ConflictError(f"a file stands on the way to {clean!r}") from None
        self.sweep_stale_uploads(now=time.time())
        return AtomicWriter(self.fs, final, f"{tmp_dir}/{uuid.uuid4().hex}")

    def sweep_stale_uploads(self, *, now: float, max_age: float = STALE_UPLOAD_S) -> int:
        """Remove temporary files that no upload has written to for ``max_age`` seconds (left by
        a server that was killed mid-upload); returns how many. A local folder only: on S3 an
        unfinished multipart upload is never visible (a bucket lifecycle rule removes its parts)."""
        removed = 0
        with contextlib.suppress(FileNotFoundError), os.scandir(self._full(TMP_DIR)) as entries:
            for entry in entries:
                with contextlib.suppress(FileNotFoundError):
                    if entry.is_file() and now - entry.stat().st_mtime > max_age:
                        os.unlink(entry.path)
                        removed += 1
        return removed

    def _check_tree(self, clean: str) -> None:
        parts = clean.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if self.fs.isfile(self._full(folder)):
                raise ConflictError(f"{folder!r} is a file, so it cannot hold {clean!r}")
        if self.fs.isdir(self._full(clean)):
            raise ConflictError(f"{clean!r} is a folder; delete it first or choose another name")

    def put_bytes(self, path: str, data: bytes) -> str:
        writer = self.writer(path)
        try:
            writer.write(data)
        except BaseException:
            writer.abort()
            raise
        return writer.commit()

    def put_folder(self, local: str | os.PathLike[str], prefix: str) -> int:
        """Upload every file under a local folder to ``prefix/`` (replacing what was there);
        each file is atomic. Returns the bytes written."""
        root = os.fspath(local)
        prefix = normalize_path(prefix)
        if self.list(prefix + "/"):
            self.delete(prefix, recursive=True)
        total = 0
        for folder, _, names in sorted(os.walk(root)):
            for name in sorted(names):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, root).replace(os.sep, "/")
                with open(path, "rb") as fh:
                    total += self.put_file(f"{prefix}/{rel}", fh)
        return total

    def put_file(self, path: str, fh: BinaryIO) -> int:
        """Copy an open file to ``path``, atomically; returns the bytes written."""
        writer = self.writer(path)
        written = 0
        try:
            while chunk := fh.read(CHUNK):
                written += writer.write(chunk)
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        return written

    def download(self, path: str, local: str | os.PathLike[str]) -> None:
        """Copy one object to a local file, atomically (a ``.part`` file renamed into place)."""
        dest = os.fspath(local)
        os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
        tmp = f"{dest}.part"
        with open(tmp, "wb") as fh:
            for chunk in self.iter_bytes(path):
                fh.write(chunk)
        os.replace(tmp, dest)

    def get_folder(self, prefix: str, local: str | os.PathLike[str]) -> int:
        """Download every file under ``prefix/`` into a local folder; ``NotFoundError`` if none."""
        prefix = normalize_path(prefix)
        objects = self.list(prefix + "/")
        if not objects:
            raise NotFoundError(f"no files under {prefix!r}")
        for obj in objects:
            self.download(obj.path, os.path.join(os.fspath(local), *obj.path[len(prefix) + 1:].split("/")))
        return len(objects)

    def copy_folder(self, src: str, dest: str) -> int:
        """Copy every file under ``src/`` to ``dest/``; returns the bytes copied."""
        src, dest = normalize_path(src), normalize_path(dest)
        total = 0
        for obj in self.list(src + "/"):
            writer = self.writer(f"{dest}/{obj.path[len(src) + 1:]}")
            try:
                for chunk in self.iter_bytes(obj.path):
                    writer.write(chunk)
                writer.commit()
            except BaseException:
                writer.abort()
                raise
            total += obj.size
        return total

    def info(self, path: str) -> ObjectInfo:
        clean = normalize_path(path)
        full = self._full(clean)
        try:
            info = self.fs.info(full)
        except FileNotFoundError:
            raise NotFoundError(f"no file at {clean!r}") from None
        if info.get("type") != "file":
            raise NotFoundError(f"{clean!r} is a folder, not a file; list it instead")
        return self._object(full, info)

    def open(self, path: str) -> BinaryIO:
        """Open a file for reading (NotFoundError for a missing file or a folder)."""
        return self.open_sized(path)[0]

    def open_sized(self, path: str) -> tuple[BinaryIO, int]:
        """The open file and its size, taken from the opened file (a replace cannot mismatch them)."""
        clean = normalize_path(path)
        self.info(clean)
        try:
            fh: Any = self.fs.open(self._full(clean), "rb")
        except (FileNotFoundError, IsADirectoryError):
            raise NotFoundError(f"no file at {clean!r}") from None
        size = os.fstat(fh.fileno()).st_size if self.local else int(fh.size)
        return fh, size

    def iter_bytes(self, path: str, chunk: int = CHUNK) -> Iterator[bytes]:
        with self.open(path) as fh:
            while data := fh.read(chunk):
                yield data

    def read_bytes(self, path: str) -> bytes:
        with self.open(path) as fh:
            return fh.read()

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every file under ``prefix``, sorted by path.

        ``data/`` (trailing slash) or the name of a folder lists that folder recursively;
        otherwise ``prefix`` is also the start of names, as in S3 (``data`` matches ``data.csv``).
        """
        folder_only = prefix.endswith("/")
        prefix = normalize_path(prefix, allow_empty=True)
        base = self._full(prefix)
        if prefix and not folder_only and self.fs.isfile(base):
            return [self._object(base, self.fs.info(base))]
        if not prefix or self.fs.isdir(base):
            folder, under = base, f"{prefix}/" if prefix else ""
        elif folder_only:
            return []
        else:
            folder, under = posixpath.dirname(base), prefix
        if not self.fs.exists(folder):
            return []
        items = []
        for name, info in self.fs.find(folder, detail=True).items():
            rel = self._rel(name)
            if info.get("type") == "file" and rel.startswith(under) and not self._is_tmp(rel):
                items.append(self._object(name, info))
        return sorted(items, key=lambda o: o.path)

    def delete(self, path: str, *, recursive: bool = False) -> int:
        """Delete a file, or with ``recursive`` every file under a folder; returns files deleted."""
        clean = normalize_path(path, allow_empty=recursive)
        full = self._full(clean)
        if clean and self.fs.isfile(full):
            self.fs.rm_file(full)
            self._prune(posixpath.dirname(clean))
            return 1
        if not recursive:
            if self.fs.isdir(full):
                raise ConflictError(f"{clean!r} is a folder: delete it with recursive=true",
                                    details={"folder": clean})
            raise NotFoundError(f"no file at {clean!r}")
        doomed = self.list(clean + "/" if clean else "")
        if not doomed:
            raise NotFoundError(f"no files under {clean!r}" if clean else "there are no files")
        for obj in doomed:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(self._full(obj.path))
        for folder in sorted({posixpath.dirname(o.path) for o in doomed}, key=len, reverse=True):
            self._prune(folder)
        return len(doomed)

    def _prune(self, folder: str) -> None:
        """Remove empty folders from ``folder`` up (local disks; S3 has no folders to leave)."""
        while self.local and folder:
            try:
                os.rmdir(self._full(folder))
            except OSError:  # not empty, gone, or not a folder
                return
            folder = posixpath.dirname(folder)

    def usage(self) -> int:
        """Bytes used by every file (uploads in progress are not counted)."""
        return sum(o.size for o in self.list(""))

    def size_or_zero(self, path: str) -> int:
        """The size of the file at ``path``, 0 if there is none (what an overwrite frees)."""
        try:
            return self.info(path).size
        except NotFoundError:
            return 0

    def _is_tmp(self, rel: str) -> bool:
        return rel == TMP_DIR or rel.startswith(TMP_DIR + "/")

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
    """The whole store. ``ObjectStore.from_url("/var/nubis/storage")`` or ``("s3://bucket/x")``.

    For S3, ``NUBIS_S3_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL``) points at an S3-compatible
    server; credentials come from the usual ``AWS_*`` variables or files.
    """

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
            options.setdefault("default_block_size", S3_BLOCK)
            # listings are never cached: workloads write to the same bucket behind our back
            options.setdefault("use_listings_cache", False)
            fs = fsspec.filesystem("s3", **options)
            return cls(fs, url.removeprefix("s3://"), local=False)
        path = url.removeprefix("file://")
        os.makedirs(path, exist_ok=True)
        fs = fsspec.filesystem("file", **options)
        return cls(fs, fs._strip_protocol(os.path.abspath(path)), local=True)

    def files(self, workspace: str) -> Store:
        return Store(self.fs, f"{self.root}/workspaces/{workspace}/files", local=self.local)

    def files_url(self, workspace: str) -> str:
        """Where one workspace's files start: what a workload of it gets as its storage root."""
        root = f"{self.root}/workspaces/{workspace}/files"
        return root if self.local else f"s3://{root}"

    def photons(self, workspace: str) -> Store:
        return Store(self.fs, f"{self.root}/workspaces/{workspace}/photons", local=self.local)

    def drop_workspace(self, workspace: str) -> None:
        path = f"{self.root}/workspaces/{workspace}"
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)
