"""SQLite: a consistent copy of a live database through the online backup API, and its digests."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nubis.errors import BackupDamagedError, BackupFailedError
from nubis.server.backup.manifest import TableDigest, quoted, table_digest

MEMBER = "database/nubis.db"
TABLES = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"


@dataclass(frozen=True)
class DatabaseSnapshot:
    """A database copied to ``file`` (archived as ``member``), with its digests and schema revision."""

    file: Path
    member: str
    tables: dict[str, TableDigest]
    revision: str | None


def sqlite_path(url: str) -> Path:
    """``sqlite+aiosqlite:////abs/x.db`` → ``/abs/x.db``."""
    return Path(url.split(":///", 1)[1].split("?", 1)[0])


@contextlib.contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, timeout=30)
    try:
        yield conn
    finally:
        conn.close()


def snapshot(source: Path, dest: Path) -> DatabaseSnapshot:
    """Copy the live database at ``source`` into ``dest`` in one step: a read transaction, so
    writers (WAL mode) go on and the copy is the database as of one instant."""
    if not source.is_file():
        raise BackupFailedError(f"no database at {source}: is this the platform's home (--home)?")
    try:
        with connect(source) as src, connect(dest) as dst:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    except sqlite3.Error as exc:
        raise BackupFailedError(f"copying the database {source} failed: {exc}") from exc
    tables, revision = describe(dest)
    return DatabaseSnapshot(dest, MEMBER, tables, revision)


def describe(path: Path) -> tuple[dict[str, TableDigest], str | None]:
    """Every table's digest and the Alembic revision of the database file at ``path``."""
    try:
        with connect(path) as conn:
            names = [r[0] for r in conn.execute(TABLES)]
            tables = {name: table_digest(conn.execute(f"SELECT * FROM {quoted(name)}")) for name in names}
            revision = None
            if "alembic_version" in tables:
                row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
                revision = row[0] if row else None
    except sqlite3.DatabaseError as exc:
        raise BackupDamagedError(f"the database in the backup does not open: {exc}") from exc
    return tables, revision
