"""``client.storage``: a workspace's files, streamed both ways (memory stays flat for any size).

    client.storage.put("datasets/train.csv", "./train.csv")     # → UploadResult with sha256
    client.storage.get("datasets/train.csv", "./copy.csv")
    client.storage.put_dir("datasets/images", "./images")       # every file under the folder
    client.storage.get_dir("datasets/images", "./images-copy")
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

from nubis.client.base import ResourceAPI
from nubis.errors import BadRequestError, ConnectionFailedError, NotFoundError
from nubis.models.storage import DeleteResult, StorageObject, UploadResult, normalize_path

CHUNK = 1 << 20
Progress = Callable[[int], object]  # called with the number of bytes just sent or received
LocalPath = str | os.PathLike[str]


def _url(path: str) -> str:
    return "/storage/" + quote(normalize_path(path), safe="/")


def _read_chunks(fh: BinaryIO, progress: Progress | None) -> Iterator[bytes]:
    while data := fh.read(CHUNK):
        if progress is not None:
            progress(len(data))
        yield data


def _join(remote: str, rel: str) -> str:
    return f"{remote}/{rel}" if remote else rel


def local_files(folder: LocalPath) -> list[tuple[Path, str]]:
    """Every file under ``folder`` with its path relative to it (``/``-separated), sorted."""
    root = Path(folder)
    return sorted(
        ((p, p.relative_to(root).as_posix()) for p in root.rglob("*") if p.is_file()),
        key=lambda item: item[1],
    )


class StorageAPI(ResourceAPI):
    def put(self, remote: str, local: LocalPath, *, progress: Progress | None = None) -> UploadResult:
        """Upload one local file to ``remote`` (replacing any file there)."""
        source = Path(local)
        if source.is_dir():
            raise BadRequestError(f"{source} is a folder: upload it with put_dir")
        try:
            fh = source.open("rb")
        except FileNotFoundError:
            raise NotFoundError(f"no local file {source}") from None
        with fh:
            size = os.fstat(fh.fileno()).st_size
            return self._upload(remote, _read_chunks(fh, progress), size)

    def put_bytes(self, remote: str, data: bytes) -> UploadResult:
        return self._upload(remote, iter([data]), len(data))

    def _upload(self, remote: str, chunks: Iterator[bytes], size: int) -> UploadResult:
        headers = {"content-type": "application/octet-stream", "content-length": str(size)}
        response = self._t.request("PUT", _url(remote), content=chunks, headers=headers)
        return UploadResult.model_validate(response.json())

    def put_dir(
        self, remote: str, local: LocalPath, *, progress: Progress | None = None
    ) -> list[UploadResult]:
        """Upload every file under the local folder to ``remote/<relative path>``."""
        source = Path(local)
        if not source.is_dir():
            raise BadRequestError(f"{source} is not a folder")
        prefix = normalize_path(remote, allow_empty=True)
        return [self.put(_join(prefix, rel), path, progress=progress) for path, rel in local_files(source)]

    def get(self, remote: str, local: LocalPath, *, progress: Progress | None = None) -> Path:
        """Download ``remote`` to ``local`` (into it, if it is a folder); returns the file written.

        The file appears only once complete: an interrupted download leaves nothing behind.
        """
        clean = normalize_path(remote)
        target = Path(local)
        if target.is_dir():
            target = target / posixpath.basename(clean)
        target.parent.mkdir(parents=True, exist_ok=True)
        part = target.with_name(f".{target.name}.part")
        try:
            with self._t.stream("GET", _url(clean)) as response, part.open("wb") as out:
                expected = int(response.headers.get("content-length", "-1"))
                received = 0
                for data in response.iter_bytes():
                    out.write(data)
                    received += len(data)
                    if progress is not None:
                        progress(len(data))
            if expected >= 0 and received != expected:
                raise ConnectionFailedError(f"the download of {clean!r} stopped after {received} of "
                                            f"{expected} bytes; try again")
            part.replace(target)
        finally:
            part.unlink(missing_ok=True)
        return target

    def read_bytes(self, remote: str) -> bytes:
        with self._t.stream("GET", _url(remote)) as response:
            return response.read()

    def get_dir(self, remote: str, local: LocalPath, *, progress: Progress | None = None) -> list[Path]:
        """Download every file under the folder ``remote`` into ``local``, keeping the layout."""
        prefix = normalize_path(remote, allow_empty=True)
        objects = self.list(prefix + "/" if prefix else "")
        if not objects:
            raise NotFoundError(f"no files under {prefix!r}" if prefix else "there are no files")
        root = Path(local)
        written = []
        for obj in objects:
            rel = obj.path[len(prefix):].lstrip("/")
            if normalize_path(rel) != rel:  # the server only sends clean paths; never trust them
                raise BadRequestError(f"refusing to write {rel!r} outside {root}")
            written.append(self.get(obj.path, root / rel, progress=progress))
        return written

    def list(self, prefix: str = "") -> list[StorageObject]:
        """Files under ``prefix``: a folder (``data/``) or the start of paths (``data/train``)."""
        params = {"prefix": prefix} if prefix else {}
        return [StorageObject.model_validate(o) for o in self._t.json("GET", "/storage", params=params)]

    def delete(self, path: str, *, recursive: bool = False) -> DeleteResult:
        """Delete a file, or with ``recursive`` every file under a folder."""
        params = {"recursive": "true"} if recursive else {}
        return DeleteResult.model_validate(self._t.json("DELETE", _url(path), params=params))
