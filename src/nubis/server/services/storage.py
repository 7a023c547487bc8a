"""A workspace's files: streamed atomic uploads within quotas, streamed downloads, list, delete.

fsspec is blocking, so every call into the store runs in a worker thread; the event loop only
moves bytes. No database connection is held while a body streams.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from sqlalchemy.ext.asyncio import AsyncSession

from nubis.errors import BadRequestError, PayloadTooLargeError
from nubis.models.storage import DeleteResult, StorageObject, UploadResult, format_bytes
from nubis.server.context import ServerContext
from nubis.server.deps import Caller
from nubis.server.orm import WorkspaceRow
from nubis.server.services import audit
from nubis.storage import CHUNK, AtomicWriter, ObjectInfo, Store, normalize_path

T = TypeVar("T")


async def _run(fn: Callable[..., T], *args: Any) -> T:
    return await anyio.to_thread.run_sync(fn, *args)


@dataclass(frozen=True)
class UploadLimit:
    """The most one upload may bring: the server's cap, and what the workspace's quota leaves."""

    workspace: str
    max_upload: int | None
    quota: int | None
    used: int  # bytes in use, not counting the file the upload replaces

    def check(self, size: int, *, final: bool) -> None:
        """Raise 413 if ``size`` bytes (``final``: the whole body; else: received so far) is too much."""
        if self.max_upload is not None and size > self.max_upload:
            raise self._too_big(size, final)
        if self.quota is not None and self.used + size > self.quota:
            raise self._over_quota(size, final)

    def _too_big(self, size: int, final: bool) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"this upload is {_amount(size, final)} but the server accepts at most "
            f"{format_bytes(self.max_upload or 0)} per file (max_upload_bytes); split the file or ask "
            "the operator to raise the limit",
            details={"max_upload_bytes": self.max_upload, "upload_bytes": size},
        )

    def _over_quota(self, size: int, final: bool) -> PayloadTooLargeError:
        return PayloadTooLargeError(
            f"workspace {self.workspace!r} would go over its storage quota: "
            f"{format_bytes(self.used)} of {format_bytes(self.quota or 0)} used and this upload is "
            f"{_amount(size, final)}; delete files (`nubis storage rm`) or ask the platform admin "
            "to raise the quota (`nubis workspace quota`)",
            details={"quota_bytes": self.quota, "used_bytes": self.used, "upload_bytes": size},
        )


def _amount(size: int, final: bool) -> str:
    return format_bytes(size) if final else f"at least {format_bytes(size)}"


@dataclass(frozen=True)
class Download:
    path: str
    size: int
    chunks: AsyncIterator[bytes]


def files(ctx: ServerContext, caller: Caller) -> Store:
    return ctx.store.files(caller.workspace)


def _to_model(obj: ObjectInfo) -> StorageObject:
    return StorageObject(path=obj.path, size=obj.size, modified=obj.modified)


async def release(session: AsyncSession) -> None:
    """End the session's transaction so that its connection goes back to the pool."""
    await session.close()


async def upload_limit(
    session: AsyncSession, ctx: ServerContext, caller: Caller, path: str
) -> UploadLimit:
    workspace = await session.get(WorkspaceRow, caller.workspace_id)
    quota = workspace.storage_quota_bytes if workspace is not None else None
    used = 0
    if quota is not None:
        store = files(ctx, caller)
        used = await _run(store.usage) - await _run(store.size_or_zero, path)
    return UploadLimit(caller.workspace, ctx.settings.max_upload_bytes, quota, used)


def _declared_length(content_length: str | None) -> int | None:
    if content_length is None or not content_length.strip().isdigit():
        return None
    return int(content_length)


async def put(
    session: AsyncSession,
    ctx: ServerContext,
    caller: Caller,
    path: str,
    chunks: AsyncIterator[bytes],
    *,
    content_length: str | None,
) -> UploadResult:
    """Stream ``chunks`` to ``path``: visible only once complete, nothing left on any error."""
    clean = normalize_path(path)
    limit = await upload_limit(session, ctx, caller, clean)
    declared = _declared_length(content_length)
    if declared is not None:
        limit.check(declared, final=True)
    await release(session)
    writer = await _run(files(ctx, caller).writer, clean)
    try:
        await receive(chunks, writer, limit)
        if declared is not None and writer.size != declared:
            raise BadRequestError(f"the body had {writer.size} bytes but Content-Length said {declared}")
        sha256 = await _run(writer.commit)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await _run(writer.abort)
        raise
    audit.record(session, caller, "storage.put", clean, {"size": writer.size, "sha256": sha256})
    await session.commit()
    return UploadResult(path=clean, size=writer.size, sha256=sha256)


async def receive(chunks: AsyncIterator[bytes], writer: AtomicWriter, limit: UploadLimit) -> None:
    """Gather ``chunks`` into ~1 MiB blocks; write each in a thread while the next one arrives."""
    pending: asyncio.Future[int] | None = None
    blocks: list[bytes] = []
    buffered = size = 0
    try:
        async for piece in chunks:
            size += len(piece)
            limit.check(size, final=False)
            blocks.append(piece)
            buffered += len(piece)
            if buffered >= CHUNK:
                if pending is not None:
                    await pending
                pending = asyncio.ensure_future(_run(writer.write, b"".join(blocks)))
                blocks, buffered = [], 0
        if pending is not None:
            await pending
        if blocks:
            await _run(writer.write, b"".join(blocks))
    finally:
        if pending is not None:  # on an error, let the write in flight end before the abort
            with anyio.CancelScope(shield=True):
                await asyncio.gather(pending, return_exceptions=True)


async def open_download(
    session: AsyncSession, ctx: ServerContext, caller: Caller, path: str
) -> Download:
    clean = normalize_path(path)
    await release(session)
    fh, size = await _run(files(ctx, caller).open_sized, clean)
    return Download(path=clean, size=size, chunks=_read(fh))


async def _read(fh: Any) -> AsyncIterator[bytes]:
    try:
        while data := await _run(fh.read, CHUNK):
            yield data
    finally:
        with anyio.CancelScope(shield=True):
            await _run(fh.close)


async def list_files(ctx: ServerContext, caller: Caller, prefix: str) -> list[StorageObject]:
    found = await _run(files(ctx, caller).list, prefix)
    return [_to_model(o) for o in found]


async def delete(
    session: AsyncSession, ctx: ServerContext, caller: Caller, path: str, *, recursive: bool
) -> DeleteResult:
    clean = normalize_path(path)
    store = files(ctx, caller)
    deleted = await _run(functools.partial(store.delete, clean, recursive=recursive))
    audit.record(session, caller, "storage.delete", clean, {"files": deleted, "recursive": recursive})
    await session.commit()
    return DeleteResult(path=clean, deleted=deleted)
