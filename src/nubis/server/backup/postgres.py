"""PostgreSQL: ``pg_dump`` (custom format) of one exported snapshot, and the table digests taken in
that same snapshot, so the dump and the manifest describe the same instant; ``pg_restore`` into an
empty database in one transaction."""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from nubis.errors import BackupFailedError, RestoreTargetNotEmptyError
from nubis.server.backup.manifest import DigestBuilder, TableDigest, quoted
from nubis.server.backup.sqlite import DatabaseSnapshot

MEMBER = "database/nubis.pgdump"
DUMP_OPTIONS = ("--format=custom", "--no-owner", "--no-privileges")
TABLES = ("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
          "AND table_type = 'BASE TABLE' ORDER BY table_name")


def plain_url(url: str) -> str:
    """The libpq/asyncpg form of a SQLAlchemy URL (``postgresql+asyncpg://`` → ``postgresql://``)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def find_tool(name: str) -> str:
    """``pg_dump``/``pg_restore`` on PATH, else the newest under /usr/lib/postgresql (Debian)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=_major_version)
    if candidates:
        return candidates[-1]
    raise BackupFailedError(f"{name} is not installed: it comes with PostgreSQL's client tools "
                            "(Debian/Ubuntu: apt install postgresql-client)")


def _major_version(path: str) -> int:
    major = Path(path).parts[-3]
    return int(major) if major.isdigit() else 0


async def run_tool(name: str, args: Sequence[str], url: str | None) -> None:
    """Run a PostgreSQL tool on ``url``; the password goes in the environment, not the command line."""
    env = {**os.environ}
    if url is not None:
        parsed = make_url(plain_url(url))
        if parsed.password:
            env["PGPASSWORD"] = str(parsed.password)
        args = [*args, f"--dbname={parsed.set(password=None).render_as_string(hide_password=False)}"]
    pipe = asyncio.subprocess
    proc = await asyncio.create_subprocess_exec(find_tool(name), *args, env=env, stdout=pipe.DEVNULL,
                                                stderr=pipe.PIPE)
    _, stderr = await proc.communicate()
    if proc.returncode != 0:
        tail = " | ".join(stderr.decode(errors="replace").strip().splitlines()[-3:])
        raise BackupFailedError(f"{name} failed (exit {proc.returncode}): {tail}")


async def _connect(url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(plain_url(url), timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        where = make_url(url).render_as_string()  # the password hidden
        raise BackupFailedError(f"cannot reach the database {where}: {exc}") from exc


async def _describe(conn: asyncpg.Connection) -> tuple[dict[str, TableDigest], str | None]:
    """Digests of every table, read inside the caller's transaction."""
    tables = {}
    for record in await conn.fetch(TABLES):
        builder = DigestBuilder()
        async for row in conn.cursor(f"SELECT * FROM {quoted(record[0])}", prefetch=2000):
            builder.add(tuple(row.values()))
        tables[record[0]] = builder.digest()
    revision = None
    if "alembic_version" in tables:
        revision = await conn.fetchval("SELECT version_num FROM alembic_version")
    return tables, revision


async def snapshot(url: str, dest: Path) -> DatabaseSnapshot:
    conn = await _connect(url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            name = await conn.fetchval("SELECT pg_export_snapshot()")
            args = [*DUMP_OPTIONS, f"--snapshot={name}", f"--file={dest}"]
            dump = asyncio.create_task(run_tool("pg_dump", args, url))
            try:  # the digests are read while pg_dump runs, in the same snapshot
                tables, revision = await _describe(conn)
            finally:
                with contextlib.suppress(BackupFailedError):
                    await dump  # the snapshot must outlive pg_dump's reading
            await dump  # its error, if any
    finally:
        await conn.close()
    return DatabaseSnapshot(dest, MEMBER, tables, revision)


async def describe(url: str) -> tuple[dict[str, TableDigest], str | None]:
    conn = await _connect(url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            return await _describe(conn)
    finally:
        await conn.close()


async def check_empty(url: str) -> None:
    conn = await _connect(url)
    try:
        names = [r[0] for r in await conn.fetch(TABLES)]
    finally:
        await conn.close()
    if names:
        raise RestoreTargetNotEmptyError(
            f"the database {make_url(url).render_as_string()} already has {len(names)} table(s) "
            f"({', '.join(names[:5])}): restore into a new, empty database")


async def restore(url: str, dump: Path) -> None:
    """``pg_restore`` in one transaction: all of it, or (on any error) nothing."""
    await run_tool("pg_restore", ["--single-transaction", "--exit-on-error", "--no-owner",
                                  "--no-privileges", str(dump)], url)


async def drop_tables(url: str) -> None:
    """Undo a restore whose rows did not match the manifest (the target was empty before)."""
    conn = await _connect(url)
    try:
        async with conn.transaction():
            for record in await conn.fetch(TABLES):
                await conn.execute(f"DROP TABLE IF EXISTS {quoted(record[0])} CASCADE")
    finally:
        await conn.close()


async def list_dump(dump: Path) -> None:
    """``pg_restore --list``: the dump reads as a PostgreSQL archive."""
    await run_tool("pg_restore", ["--list", str(dump)], None)
