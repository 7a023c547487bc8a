"""The photon registry: versioned bundles per workspace, numbered per name, kept in storage.

Bundles live at ``<name>/<version>.photon`` in the workspace's photon store. A version number is
the highest ever given to the name + 1 (kept in ``photon_names``, so deleting a version never frees
its number); two pushes racing for the same number meet the unique constraint and the loser
takes the next one. Pushing the content of the latest version again changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import IO

from sqlalchemy import and_, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from nubis.errors import ConflictError, NotFoundError, ValidationError
from nubis.models.photons import (
    PHOTON_NAME_PATTERN,
    HandlerSummary,
    PhotonManifest,
    PhotonSummary,
    PhotonVersion,
    PhotonVersionDetail,
    PushedPhoton,
)
from nubis.server.deps import Caller
from nubis.server.orm import PhotonNameRow, PhotonRow, TokenRow
from nubis.server.services import audit, photon_bundles
from nubis.storage import AtomicWriter, ObjectStore, Store

LATEST = "latest"
_VERSION = re.compile(r"[0-9]+")
MAX_VERSION = 2**31 - 1
_NAME = re.compile(PHOTON_NAME_PATTERN)
PUSH_ATTEMPTS = 5


@dataclass(frozen=True)
class BundleDownload:
    chunks: Iterator[bytes]
    size: int
    filename: str
    content_hash: str


def bundle_path(name: str, version: int) -> str:
    return f"{name}/{version}.photon"


def to_model(row: PhotonRow, created_by: str | None = None) -> PhotonVersion:
    manifest = PhotonManifest.model_validate(row.manifest)
    return PhotonVersion(
        name=row.name, version=row.version, ref=f"{row.name}:{row.version}",
        content_hash=row.content_hash, size=row.size,
        handlers=[HandlerSummary(name=h.name, method=h.method, path=h.path, streaming=h.streaming,
                                 max_batch_size=h.max_batch_size) for h in manifest.handlers],
        requirements=manifest.requirements, resources=manifest.resources,
        created_at=row.created_at, created_by=created_by,
    )


async def _actors(session: AsyncSession, rows: list[PhotonRow]) -> dict[str, str]:
    """Token id → 'name (id8)', the form the audit trail uses."""
    ids = {r.created_by for r in rows if r.created_by}
    if not ids:
        return {}
    found = (await session.execute(select(TokenRow.id, TokenRow.name).where(TokenRow.id.in_(ids)))).all()
    return {token_id: f"{name} ({token_id[:8]})" for token_id, name in found}


async def _models(session: AsyncSession, rows: list[PhotonRow]) -> list[PhotonVersion]:
    actors = await _actors(session, rows)
    return [to_model(r, actors.get(r.created_by or "", r.created_by)) for r in rows]


def parse_version(version: str) -> int | None:
    """``"latest"`` → None; ``"3"`` → 3."""
    if version == LATEST:
        return None
    if not _VERSION.fullmatch(version):
        raise ValidationError(f"version must be a number or 'latest', not {version[:50]!r}")
    return int(version)


def _check_name(caller: Caller, name: str) -> None:
    """A name no photon can have is simply not found (and never reaches the database)."""
    if not _NAME.fullmatch(name):
        raise NotFoundError(f"photon {name[:100]!r} not found in workspace {caller.workspace!r}")


async def _latest(session: AsyncSession, workspace_id: str, name: str) -> PhotonRow | None:
    return await session.scalar(
        select(PhotonRow).where(PhotonRow.workspace_id == workspace_id, PhotonRow.name == name)
        .order_by(PhotonRow.version.desc()).limit(1)
    )


async def get_row_or_raise(session: AsyncSession, caller: Caller, name: str, version: str) -> PhotonRow:
    _check_name(caller, name)
    number = parse_version(version)
    if number is None:
        row = await _latest(session, caller.workspace_id, name)
    elif number > MAX_VERSION:
        row = None
    else:
        row = await session.scalar(select(PhotonRow).where(
            PhotonRow.workspace_id == caller.workspace_id, PhotonRow.name == name,
            PhotonRow.version == number,
        ))
    if row is None:
        what = name if number is None else f"{name}:{number}"
        raise NotFoundError(f"photon {what!r} not found in workspace {caller.workspace!r}")
    return row


async def push(
    session: AsyncSession,
    caller: Caller,
    store: ObjectStore,
    chunks: AsyncIterator[bytes],
    *,
    content_type: str | None,
    content_length: str | None,
) -> PushedPhoton:
    """Check the bundle, then store it as the name's next version (or return the unchanged latest)."""
    spool, size = await photon_bundles.receive(
        chunks, content_type=content_type, content_length=content_length,
        limit=photon_bundles.MAX_BUNDLE_BYTES,
    )
    try:
        manifest = await asyncio.to_thread(photon_bundles.validate, spool)
        photons = store.photons(caller.workspace)
        for _ in range(PUSH_ATTEMPTS):
            latest = await _latest(session, caller.workspace_id, manifest.name)
            if latest is not None and latest.content_hash == manifest.content_hash:
                (model,) = await _models(session, [latest])
                return PushedPhoton(**model.model_dump(), unchanged=True)
            given = await session.get(PhotonNameRow, (caller.workspace_id, manifest.name))
            highest = max(latest.version if latest else 0, given.last_version if given else 0)
            row = PhotonRow(
                workspace_id=caller.workspace_id, name=manifest.name,
                version=highest + 1,
                manifest=manifest.model_dump(mode="json"), content_hash=manifest.content_hash,
                size=size, created_by=caller.token_id,
            )
            if await _store_and_insert(session, caller, photons, row, spool):
                (model,) = await _models(session, [row])
                return PushedPhoton(**model.model_dump())
    finally:
        spool.close()
    raise ConflictError(f"photon {manifest.name!r} is being pushed concurrently; try again")


async def _store_and_insert(
    session: AsyncSession, caller: Caller, photons: Store, row: PhotonRow, spool: IO[bytes]
) -> bool:
    """Write the bundle, insert its row, then make both visible; False if the version was taken.

    The bundle is written before the row is flushed (no database lock held while copying) and
    becomes visible at its path only once the row holds its version number.
    """
    path = bundle_path(row.name, row.version)
    writer = await asyncio.to_thread(photons.writer, path)
    try:
        await asyncio.to_thread(_copy, spool, writer)
        session.add(row)
        await _remember_version(session, row)
        audit.record(session, caller, "photon.push", f"{row.name}:{row.version}",
                     {"content_hash": row.content_hash, "size": row.size})
        await session.flush()
    except IntegrityError:
        await asyncio.to_thread(writer.abort)
        await session.rollback()
        return False
    except BaseException:
        await asyncio.to_thread(writer.abort)
        raise
    try:
        await asyncio.to_thread(writer.commit)
        await session.commit()
    except BaseException:
        await session.rollback()
        await asyncio.to_thread(_discard, photons, path)
        raise
    return True


async def _remember_version(session: AsyncSession, row: PhotonRow) -> None:
    given = await session.get(PhotonNameRow, (row.workspace_id, row.name))
    if given is None:
        session.add(PhotonNameRow(workspace_id=row.workspace_id, name=row.name, last_version=row.version))
    else:
        given.last_version = max(given.last_version, row.version)


def _copy(spool: IO[bytes], writer: AtomicWriter) -> None:
    spool.seek(0)
    while data := spool.read(photon_bundles.CHUNK):
        writer.write(data)


def _discard(photons: Store, path: str) -> None:
    with contextlib.suppress(NotFoundError):
        photons.delete(path)


async def list_photons(session: AsyncSession, caller: Caller) -> list[PhotonSummary]:
    """The latest version of every photon name, with how many versions each has."""
    per_name = (
        select(PhotonRow.name, func.max(PhotonRow.version).label("latest"),
               func.count().label("versions"))
        .where(PhotonRow.workspace_id == caller.workspace_id)
        .group_by(PhotonRow.name).subquery()
    )
    found = (await session.execute(
        select(PhotonRow, per_name.c.versions)
        .join(per_name, and_(PhotonRow.name == per_name.c.name, PhotonRow.version == per_name.c.latest))
        .where(PhotonRow.workspace_id == caller.workspace_id)
        .order_by(PhotonRow.name)
    )).all()
    models = await _models(session, [row for row, _ in found])
    return [
        PhotonSummary(
            name=m.name, latest=m.version, versions=count, ref=m.ref, content_hash=m.content_hash,
            size=m.size, handlers=[h.name for h in m.handlers], created_at=m.created_at,
            created_by=m.created_by,
        )
        for m, (_, count) in zip(models, found, strict=True)
    ]


async def _versions(session: AsyncSession, caller: Caller, name: str) -> list[PhotonRow]:
    _check_name(caller, name)
    rows = list((await session.scalars(
        select(PhotonRow).where(PhotonRow.workspace_id == caller.workspace_id, PhotonRow.name == name)
        .order_by(PhotonRow.version)
    )).all())
    if not rows:
        raise NotFoundError(f"photon {name!r} not found in workspace {caller.workspace!r}")
    return rows


async def list_versions(session: AsyncSession, caller: Caller, name: str) -> list[PhotonVersion]:
    return await _models(session, await _versions(session, caller, name))


async def get(session: AsyncSession, caller: Caller, name: str, version: str) -> PhotonVersionDetail:
    row = await get_row_or_raise(session, caller, name, version)
    (model,) = await _models(session, [row])
    return PhotonVersionDetail(**model.model_dump(), manifest=PhotonManifest.model_validate(row.manifest))


async def open_bundle(
    session: AsyncSession, caller: Caller, store: ObjectStore, name: str, version: str
) -> BundleDownload:
    row = await get_row_or_raise(session, caller, name, version)
    photons = store.photons(caller.workspace)
    path = bundle_path(row.name, row.version)
    try:
        info = await asyncio.to_thread(photons.info, path)
    except NotFoundError:
        raise NotFoundError(f"the bundle of {row.name}:{row.version} is missing from storage; "
                            "push it again") from None
    return BundleDownload(chunks=photons.iter_bytes(path), size=info.size,
                          filename=f"{row.name}-{row.version}.photon", content_hash=row.content_hash)


async def delete_version(
    session: AsyncSession, caller: Caller, store: ObjectStore, name: str, version: str
) -> None:
    """Delete one version and its bundle. Its number is not given again."""
    row = await get_row_or_raise(session, caller, name, version)
    await _delete(session, caller, store, name, [row], f"{row.name}:{row.version}")


async def delete_all(session: AsyncSession, caller: Caller, store: ObjectStore, name: str) -> None:
    """Delete every version of a photon and their bundles."""
    rows = await _versions(session, caller, name)
    await _delete(session, caller, store, name, rows, name)


async def _delete(
    session: AsyncSession, caller: Caller, store: ObjectStore, name: str, rows: list[PhotonRow],
    target: str,
) -> None:
    """Rows go first (flushed, not committed), then bundles, then the commit. Numbers are never
    reused, so this never removes a newer bundle."""
    for row in rows:
        await session.delete(row)
    audit.record(session, caller, "photon.delete", target, {"versions": [r.version for r in rows]})
    await session.flush()
    photons = store.photons(caller.workspace)
    for row in rows:
        await asyncio.to_thread(_discard, photons, bundle_path(name, row.version))
    await session.commit()
