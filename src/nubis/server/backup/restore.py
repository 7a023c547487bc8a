"""``restore_backup`` into a new home, and ``verify_backup``.

A restore checks what it can before it writes a byte: the manifest (format, schema revision), an
empty target (home, storage, database), the master key against the manifest's fingerprint. It then
reads the archive once into a staging folder next to the home, checking every member's sha256 and
the archive's checksum, loads the database and compares every table with the manifest's digests,
upgrades the schema, settles the workloads (``settle.py``) and renames the staging folder into
place. On any failure the staging folder, and what was loaded into a target database or storage,
is removed: the target stays as empty as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import tarfile
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from alembic.script import ScriptDirectory
from alembic.util import CommandError

from nubis.errors import (
    BackupDamagedError,
    BackupKeyError,
    BackupTooNewError,
    BadRequestError,
    RestoreTargetNotEmptyError,
)
from nubis.home import write_private
from nubis.server.backup import postgres, sqlite
from nubis.server.backup.archive import damaged, read_manifest, read_members
from nubis.server.backup.create import MASTER_KEY_ENV
from nubis.server.backup.keys import (
    KeyMaterial,
    check_fingerprint,
    decode_key_file,
    encode_key_file,
    unwrap,
)
from nubis.server.backup.manifest import (
    DATABASE_PREFIX,
    FORMAT_VERSION,
    HOME_PREFIX,
    KEY_NAME,
    STORAGE_PREFIX,
    FileEntry,
    Manifest,
    TableDigest,
    compare_tables,
)
from nubis.server.backup.settle import Settled, settle
from nubis.server.db import Database, alembic_config
from nubis.server.settings import database_url
from nubis.storage import ObjectStore

Passphrase = Callable[[], str]


@dataclass(frozen=True)
class RestoreTarget:
    home: Path
    database: str | None = None
    """An empty PostgreSQL database for a PostgreSQL backup; None: SQLite in the home."""
    storage: str | None = None
    """An empty folder or ``s3://`` prefix; None: ``<home>/storage``."""


@dataclass(frozen=True)
class Restored:
    manifest: Manifest
    settled: Settled
    key_source: str
    admin_token_restored: bool


def check_manifest(manifest: Manifest) -> None:
    if manifest.format > FORMAT_VERSION:
        raise BackupTooNewError(f"the backup's format {manifest.format} is newer than this nubis reads "
                                f"({FORMAT_VERSION}): restore it with nubis {manifest.nubis_version} "
                                "or later")
    if manifest.schema_revision is None:
        return
    try:
        ScriptDirectory.from_config(alembic_config()).get_revision(manifest.schema_revision)
    except CommandError:
        raise BackupTooNewError(
            f"the backup's database schema ({manifest.schema_revision}) is newer than this nubis knows: "
            f"restore it with nubis {manifest.nubis_version} or later") from None


def _folder_empty(path: Path, what: str) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise RestoreTargetNotEmptyError(f"{what} {path} is not empty: restore into a new, empty one")


def check_target(target: RestoreTarget, manifest: Manifest) -> None:
    _folder_empty(target.home, "the home")
    if target.storage is not None:
        if target.storage.startswith("s3://"):
            store = ObjectStore.from_url(target.storage)
            if store.fs.exists(store.root) and store.fs.find(store.root):
                raise RestoreTargetNotEmptyError(f"the storage {target.storage} is not empty")
        else:
            _folder_empty(Path(target.storage.removeprefix("file://")), "the storage folder")
    if manifest.database == "postgresql":
        if target.database is None or not database_url(target.database, target.home).startswith("postgresql"):
            raise BadRequestError("this backup holds a PostgreSQL database: give an empty PostgreSQL "
                                  "database to restore it into (--database postgresql://…)")
        asyncio.run(postgres.check_empty(database_url(target.database, target.home)))
    elif target.database is not None:
        raise BadRequestError("this backup holds a SQLite database: it is restored into the home's nubis.db "
                              "(leave out --database)")


def _key_blob(archive: Path, manifest: Manifest) -> bytes:
    entry = next((f for f in manifest.files if f.name == KEY_NAME), None)
    try:
        with tarfile.open(archive, "r:") as tar:
            fh = tar.extractfile(KEY_NAME) if entry is not None else None
            blob = fh.read() if fh is not None else None
    except (tarfile.TarError, KeyError, EOFError) as exc:
        raise damaged(archive, f"its wrapped key cannot be read ({exc})") from None
    if entry is None or blob is None or len(blob) != entry.size:
        raise damaged(archive, "its wrapped key is missing")
    if FileEntry(name=KEY_NAME, size=len(blob), sha256=hashlib.sha256(blob).hexdigest()) != entry:
        raise damaged(archive, f"{KEY_NAME} does not match its sha256 in the manifest")
    return blob


def resolve_key(archive: Path, manifest: Manifest, *, master_key_file: Path | None,
                passphrase: Passphrase) -> tuple[KeyMaterial, str]:
    """The backed-up platform's key (and admin token), checked against the manifest's fingerprint;
    with where it came from: a key file, the archive (unwrapped), or ``NUBIS_MASTER_KEY``."""
    fingerprint = manifest.master_key_sha256
    if master_key_file is not None:
        try:
            key = decode_key_file(master_key_file.read_bytes(), str(master_key_file))
        except OSError as exc:
            raise BackupKeyError(f"cannot read the master key file {master_key_file}: {exc}") from None
        check_fingerprint(key, fingerprint, source=f"the key in {master_key_file}")
        return KeyMaterial(key), "file"
    if manifest.key_included:
        return unwrap(_key_blob(archive, manifest), passphrase(), fingerprint=fingerprint), "archive"
    env = os.environ.get(MASTER_KEY_ENV)
    if env:
        key = decode_key_file(env.encode(), MASTER_KEY_ENV)
        check_fingerprint(key, fingerprint, source=MASTER_KEY_ENV)
        return KeyMaterial(key), "env"
    raise BackupKeyError("this backup does not hold the master key (it was made without --include-key): "
                         "pass --master-key-file with the backed-up platform's master.key")


class _Staging:
    """Where the archive's members land: the future home, and the storage if it goes elsewhere."""

    def __init__(self, target: RestoreTarget) -> None:
        self.root = target.home.parent / f".{target.home.name}.restore-{uuid.uuid4().hex[:8]}"
        self.root.mkdir(mode=0o700, parents=True)
        self.work = self.root / ".restore"
        self.storage = self.root / "storage" if target.storage is None else self.work / "storage"

    def path_of(self, name: str) -> Path | None:
        if name.startswith(DATABASE_PREFIX):
            return (self.root / "nubis.db" if name == sqlite.MEMBER
                    else self.work / name.removeprefix(DATABASE_PREFIX))
        if name.startswith(STORAGE_PREFIX):
            return self.storage / name.removeprefix(STORAGE_PREFIX)
        if name.startswith(HOME_PREFIX):
            return self.root / name.removeprefix(HOME_PREFIX)
        return None

    def sink(self, entry: FileEntry) -> BinaryIO | None:
        path = self.path_of(entry.name)
        if path is None:
            return None
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")


def _check_tables(manifest: Manifest, tables: dict[str, TableDigest]) -> None:
    problems = compare_tables(manifest.tables, tables)
    if problems:
        raise BackupDamagedError("the restored database is not the backed-up one: " + "; ".join(problems[:5]))


async def _load_database(manifest: Manifest, staging: _Staging, target: RestoreTarget) -> Settled:
    """Load (PostgreSQL), compare every table with the manifest, upgrade the schema, settle."""
    if manifest.database == "sqlite":
        _check_tables(manifest, sqlite.describe(staging.root / "nubis.db")[0])
        return await _upgrade_and_settle(database_url(None, staging.root), manifest)
    assert target.database is not None
    url = database_url(target.database, target.home)
    await postgres.check_empty(url)
    try:
        await postgres.restore(url, staging.work / postgres.MEMBER.removeprefix(DATABASE_PREFIX))
        _check_tables(manifest, (await postgres.describe(url))[0])
        return await _upgrade_and_settle(url, manifest)
    except BaseException:
        await postgres.drop_tables(url)
        raise


async def _upgrade_and_settle(url: str, manifest: Manifest) -> Settled:
    db = Database(url)
    try:
        await db.migrate()
        return await settle(db, backed_up_at=manifest.created_at)
    finally:
        await db.dispose()


def _place_storage(staging: _Staging, storage: str) -> None:
    store = ObjectStore.from_url(storage)
    for path in sorted(p for p in staging.storage.rglob("*") if p.is_file()):
        remote = f"{store.root}/{path.relative_to(staging.storage).as_posix()}"
        if store.local:
            os.makedirs(os.path.dirname(remote), exist_ok=True)
        store.fs.put_file(str(path), remote)


def _undo_storage(storage: str) -> None:
    with contextlib.suppress(OSError):
        store = ObjectStore.from_url(storage)
        if store.fs.exists(store.root):
            for path in store.fs.find(store.root):
                store.fs.rm_file(path)


def restore_backup(archive: Path, target: RestoreTarget, *, master_key_file: Path | None = None,
                   passphrase: Passphrase) -> Restored:
    """Restore ``archive`` into ``target`` (see the module's docstring); ``passphrase()`` is asked
    only when the key comes from the archive."""
    manifest = read_manifest(archive)
    check_manifest(manifest)
    check_target(target, manifest)
    material, key_source = resolve_key(archive, manifest, master_key_file=master_key_file,
                                       passphrase=passphrase)
    staging = _Staging(target)
    loaded = False
    try:
        read_members(archive, manifest, staging.sink)
        settled = asyncio.run(_load_database(manifest, staging, target))
        loaded = manifest.database == "postgresql"
        if key_source != "env":
            write_private(staging.root / "master.key", encode_key_file(material.master_key))
        if material.admin_token:
            write_private(staging.root / "admin.token", (material.admin_token + "\n").encode())
        if target.storage is not None:
            _place_storage(staging, target.storage)
        shutil.rmtree(staging.work, ignore_errors=True)
        if target.home.exists():
            target.home.rmdir()
        os.rename(staging.root, target.home)
    except BaseException:
        shutil.rmtree(staging.root, ignore_errors=True)
        if target.storage is not None:
            _undo_storage(target.storage)
        if loaded and target.database is not None:
            asyncio.run(postgres.drop_tables(database_url(target.database, target.home)))
        raise
    return Restored(manifest, settled, key_source, material.admin_token is not None)


@dataclass(frozen=True)
class Verified:
    manifest: Manifest
    tables_checked: bool


def verify_backup(archive: Path) -> Verified:
    """Read the whole archive as a restore would, without restoring: every member's sha256, the
    checksum, and (SQLite) every table's digest; a PostgreSQL dump is listed by ``pg_restore``."""
    manifest = read_manifest(archive)
    check_manifest(manifest)
    with tempfile.TemporaryDirectory(prefix="nubis-verify-") as work:
        db_file = Path(work) / "database"

        def sink(entry: FileEntry) -> BinaryIO | None:
            return open(db_file, "wb") if entry.name.startswith(DATABASE_PREFIX) else None

        read_members(archive, manifest, sink)
        if manifest.database == "sqlite":
            _check_tables(manifest, sqlite.describe(db_file)[0])
        else:
            asyncio.run(postgres.list_dump(db_file))
    return Verified(manifest, manifest.database == "sqlite")
