"""``create_backup``: the database, the storage and the local checkpoints of a platform that may be
running, in one archive.

Order matters while the platform runs: the database is copied first (one consistent instant),
then the storage is listed and read. A row in the copy therefore finds its file (files are written
before the rows that name them); a file written later is in the archive with no row (harmless).
Storage objects are replaced by atomic renames, so an open object reads whole, old or new.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nubis._version import __version__
from nubis.errors import BackupFailedError, ConflictError
from nubis.models.storage import TMP_DIR
from nubis.server.backup import postgres, sqlite
from nubis.server.backup.archive import ArchiveWriter, manifest_reserve, safe_name
from nubis.server.backup.keys import KeyMaterial, decode_key_file, wrap
from nubis.server.backup.manifest import (
    HOME_PREFIX,
    KEY_NAME,
    STORAGE_PREFIX,
    Manifest,
    key_fingerprint,
)
from nubis.server.backup.sqlite import DatabaseSnapshot
from nubis.server.settings import ServerSettings
from nubis.storage import ObjectStore

log = logging.getLogger("nubis.backup")
MASTER_KEY_ENV = "NUBIS_MASTER_KEY"
SPOOL_BYTES = 64 << 20


@dataclass(frozen=True)
class Source:
    """One file to archive: its member name, its path (in the store or on disk), its mtime."""

    name: str
    path: str
    mtime: float


def read_master_key(settings: ServerSettings) -> bytes:
    """The platform's key as ``nubis up`` finds it (``NUBIS_MASTER_KEY`` first), never created."""
    env = os.environ.get(MASTER_KEY_ENV)
    if env:
        return decode_key_file(env.encode(), MASTER_KEY_ENV)
    path = settings.master_key_file
    if not path.is_file():
        raise BackupFailedError(f"no master key at {path} (nor {MASTER_KEY_ENV}): is {settings.home} the "
                                "platform's home? Pass --home, or set NUBIS_HOME")
    return decode_key_file(path.read_bytes(), str(path))


def snapshot_database(settings: ServerSettings, work: Path) -> DatabaseSnapshot:
    url = settings.database
    if url.startswith("sqlite"):
        return sqlite.snapshot(sqlite.sqlite_path(url), work / "nubis.db")
    if url.startswith("postgresql"):
        return asyncio.run(postgres.snapshot(url, work / "nubis.pgdump"))
    raise BackupFailedError(f"cannot back up the database {url.split(':', 1)[0]}: SQLite or PostgreSQL only")


def storage_sources(store: ObjectStore) -> list[Source]:
    """Every object under the store's root, but uploads in progress."""
    if not store.fs.exists(store.root):
        return []
    root = store.fs._strip_protocol(store.root)
    sources = []
    for full, info in sorted(store.fs.find(store.root, detail=True).items()):
        rel = store.fs._strip_protocol(full)[len(root):].lstrip("/")
        if info.get("type") != "file" or TMP_DIR in rel.split("/"):
            continue
        name = STORAGE_PREFIX + rel
        if not safe_name(name):
            log.warning("not backed up: storage object %r has a name a tar member cannot carry", rel)
            continue
        modified = info.get("mtime") or info.get("LastModified") or 0
        mtime = modified.timestamp() if isinstance(modified, datetime) else float(modified)
        sources.append(Source(name, full, mtime))
    return sources


def checkpoint_sources(home: Path) -> list[Source]:
    """Checkpoints that the local backend keeps under the home (``backend/jobs/<job>/checkpoints``)."""
    sources = []
    for folder in sorted((home / "backend" / "jobs").glob("*/checkpoints")):
        for dirpath, _, names in os.walk(folder):
            for filename in sorted(names):
                path = Path(dirpath) / filename
                name = HOME_PREFIX + path.relative_to(home).as_posix()
                if path.is_file() and not path.is_symlink() and safe_name(name):
                    sources.append(Source(name, str(path), path.stat().st_mtime))
    return sources


def _copy_storage(writer: ArchiveWriter, store: ObjectStore, sources: list[Source]) -> None:
    for source in sources:
        try:
            fh: Any = store.fs.open(source.path, "rb")
        except FileNotFoundError:  # deleted since the listing
            continue
        with fh:
            size = os.fstat(fh.fileno()).st_size if store.local else int(fh.size)
            writer.add(source.name, fh, size, mtime=source.mtime)


def _copy_checkpoints(writer: ArchiveWriter, sources: list[Source]) -> None:
    """Workers may write checkpoints in place: read each whole first, then archive what was read."""
    for source in sources:
        try:
            with open(source.path, "rb") as fh, tempfile.SpooledTemporaryFile(SPOOL_BYTES) as spool:
                shutil.copyfileobj(fh, spool, 1 << 20)
                size = spool.tell()
                spool.seek(0)
                writer.add(source.name, spool, size, mtime=source.mtime)  # type: ignore[arg-type]
        except FileNotFoundError:
            continue


def create_backup(settings: ServerSettings, dest: Path, *, passphrase: str | None = None,
                  now: datetime | None = None) -> Manifest:
    """Write the archive ``dest`` (the key in it, wrapped, only with a ``passphrase``)."""
    dest = dest.expanduser().absolute()
    if dest.exists():
        raise ConflictError(f"{dest} exists already: choose a new file name")
    if not dest.parent.is_dir():
        raise BackupFailedError(f"the folder {dest.parent} does not exist")
    key = read_master_key(settings)
    store = ObjectStore.from_url(settings.storage)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as work:
        db = snapshot_database(settings, Path(work))
        storage, checkpoints = storage_sources(store), checkpoint_sources(settings.home)
        base = Manifest(nubis_version=__version__, schema_revision=db.revision,
                        created_at=now or datetime.now(UTC),
                        database="sqlite" if db.member == sqlite.MEMBER else "postgresql", tables=db.tables,
                        files=[], master_key_sha256=key_fingerprint(key), key_included=passphrase is not None,
                        storage_url=settings.storage)
        names = [db.member, KEY_NAME, *(s.name for s in storage), *(s.name for s in checkpoints)]
        with ArchiveWriter(dest, manifest_reserve=manifest_reserve(base, names)) as writer:
            with open(db.file, "rb") as fh:
                writer.add(db.member, fh, os.fstat(fh.fileno()).st_size)
            _copy_storage(writer, store, storage)
            _copy_checkpoints(writer, checkpoints)
            if passphrase is not None:
                token = settings.admin_token_file
                admin = token.read_text().strip() if token.is_file() else None
                writer.add_bytes(KEY_NAME, wrap(KeyMaterial(key, admin), passphrase))
            manifest = base.model_copy(update={"files": writer.files})
            writer.finish(manifest)
    return manifest
