"""Backup and restore: time and size of ``nubis backup`` vs a plain copy of the same state.

    python bench/backup.py                 # 1 GiB of storage and 100k rows, SQLite and PostgreSQL
    python bench/backup.py --small         # 64 MiB and 10k rows: a quick run
    python bench/backup.py --only sqlite --rounds 5

For each database a platform's state is built (migrated schema, ``--rows`` audit rows, ``--storage``
of random files in 4 MiB objects plus small ones), then measured side by side in one run:

- SQLite: ``create_backup`` vs ``cp -r`` of the home; ``restore_backup`` vs ``cp -r`` back.
- PostgreSQL: ``create_backup`` vs ``pg_dump -Fc`` + ``cp -r`` of the storage; ``restore_backup``
  vs ``pg_restore`` into an empty database + ``cp -r`` back.

nubis reads every byte once per step and hashes it (sha256), checks every table's digest, writes
one archive and fsyncs it; ``cp -r`` neither hashes nor syncs. The page cache is warm for both
(files were just written); the machine's other work is not controlled (see the machine line).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from _common import format_table, machine_line, median
from sqlalchemy import insert

from nubis.models.resources import parse_bytes
from nubis.models.storage import format_bytes
from nubis.server.backup import RestoreTarget, create_backup, restore_backup, verify_backup
from nubis.server.backup.postgres import find_tool, plain_url
from nubis.server.db import Database
from nubis.server.orm import AuditEventRow
from nubis.server.security import load_or_create_master_key
from nubis.server.services import tokens, workspaces
from nubis.server.settings import ServerSettings

PG_ADMIN_URL = os.environ.get("NUBIS_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
OBJECT = 4 << 20
SMALL_FILES = 1000


@dataclass
class Row:
    database: str
    step: str
    nubis: float
    baseline: float
    baseline_name: str
    unit: str

    def cells(self) -> list[str]:
        show = format_bytes if self.unit == "bytes" else (lambda v: f"{v:.2f} s")
        return [self.database, self.step, show(self.nubis), f"{show(self.baseline)} ({self.baseline_name})",
                f"{self.nubis / self.baseline:.2f}x" if self.baseline else "-"]


def timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


async def _pg(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def pg_databases(n: int) -> Iterator[list[str]]:
    names = [f"nubis_bench_{uuid.uuid4().hex[:10]}" for _ in range(n)]
    for name in names:
        asyncio.run(_pg(f'CREATE DATABASE "{name}"'))
    try:
        yield [f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}" for name in names]
    finally:
        for name in names:
            asyncio.run(_pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _fill_database(settings: ServerSettings, rows: int) -> None:
    db = Database(settings.database)
    try:
        await db.migrate()
        async with db.sessions() as session:
            await tokens.bootstrap(session, new_admin_token=True)
            workspace = await workspaces.get_by_name(session, workspaces.DEFAULT_WORKSPACE)
            assert workspace is not None
            for start in range(0, rows, 10_000):
                batch = [{"workspace_id": workspace.id, "actor": "bench", "action": "storage.put",
                          "target": f"data/file-{i}.bin", "details": {"i": i, "size": i * 7}}
                         for i in range(start, min(rows, start + 10_000))]
                await session.execute(insert(AuditEventRow), batch)
            await session.commit()
    finally:
        await db.dispose()


def build_state(settings: ServerSettings, *, rows: int, storage: int) -> None:
    load_or_create_master_key(settings.master_key_file)
    asyncio.run(_fill_database(settings, rows))
    files = Path(settings.storage) / "workspaces" / "default" / "files" / "data"
    files.mkdir(parents=True)
    for i in range(SMALL_FILES):
        (files / f"small-{i}.json").write_bytes(b'{"n": %d}\n' % i)
    for i in range(max(1, (storage - SMALL_FILES * 10) // OBJECT)):
        (files / f"shard-{i:05d}.bin").write_bytes(os.urandom(OBJECT))


def remove(*paths: Path) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def bench_sqlite(work: Path, *, rows: int, storage: int, rounds: int) -> list[Row]:
    settings = ServerSettings(home=work / "home")
    build_state(settings, rows=rows, storage=storage)
    times: dict[str, list[float]] = defaultdict(list)
    archive, copy, restored, back = work / "sqlite.nubis", work / "copy", work / "restored", work / "back"
    for _ in range(rounds):  # nubis and its baseline alternate: both see the same machine
        remove(archive, copy, restored, back)
        times["backup"].append(timed(lambda: create_backup(settings, archive)))
        times["cp"].append(timed(lambda: sh("cp", "-r", str(settings.home), str(copy))))
        times["verify"].append(timed(lambda: verify_backup(archive)))
        times["restore"].append(timed(lambda: restore_backup(archive, RestoreTarget(restored),
                                                             master_key_file=settings.master_key_file,
                                                             passphrase=str)))
        times["cp back"].append(timed(lambda: sh("cp", "-r", str(copy), str(back))))
    t = {k: median(v) for k, v in times.items()}
    return [Row("sqlite", "backup", t["backup"], t["cp"], "cp -r", "s"),
            Row("sqlite", "verify", t["verify"], t["cp"], "cp -r", "s"),
            Row("sqlite", "restore", t["restore"], t["cp back"], "cp -r", "s"),
            Row("sqlite", "size", archive.stat().st_size, tree_bytes(copy), "cp -r", "bytes")]


def bench_postgres(work: Path, *, rows: int, storage: int, rounds: int) -> list[Row]:
    times: dict[str, list[float]] = defaultdict(list)
    archive, dump = work / "pg.nubis", work / "plain.pgdump"
    copy, restored, back = work / "storage-copy", work / "restored", work / "storage-back"
    with pg_databases(1) as (source,):
        settings = ServerSettings(home=work / "home", db_url=source)
        build_state(settings, rows=rows, storage=storage)

        def plain_backup() -> None:
            sh(find_tool("pg_dump"), "--format=custom", f"--file={dump}", f"--dbname={plain_url(source)}")
            sh("cp", "-r", settings.storage, str(copy))

        for _ in range(rounds):
            remove(archive, dump, copy, restored, back)
            with pg_databases(2) as (target, plain_target):
                def plain_restore() -> None:
                    sh(find_tool("pg_restore"), "--single-transaction", f"--dbname={plain_url(plain_target)}",
                       str(dump))
                    sh("cp", "-r", str(copy), str(back))

                times["backup"].append(timed(lambda: create_backup(settings, archive)))
                times["plain"].append(timed(plain_backup))
                times["verify"].append(timed(lambda: verify_backup(archive)))
                into = RestoreTarget(restored, database=target)
                times["restore"].append(timed(lambda into=into: restore_backup(  # type: ignore[misc]
                    archive, into, master_key_file=settings.master_key_file, passphrase=str)))
                times["plain back"].append(timed(plain_restore))
    t = {k: median(v) for k, v in times.items()}
    plain_size = dump.stat().st_size + tree_bytes(copy)
    return [Row("postgresql", "backup", t["backup"], t["plain"], "pg_dump + cp -r", "s"),
            Row("postgresql", "verify", t["verify"], t["plain"], "pg_dump + cp -r", "s"),
            Row("postgresql", "restore", t["restore"], t["plain back"], "pg_restore + cp -r", "s"),
            Row("postgresql", "size", archive.stat().st_size, plain_size, "pg_dump + cp -r", "bytes")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="64 MiB and 10k rows")
    parser.add_argument("--rows", type=int, default=None, help="audit rows (default 100000)")
    parser.add_argument("--storage", default=None, help="bytes of files, e.g. 1Gi (default)")
    parser.add_argument("--only", choices=["sqlite", "postgresql"], default=None)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are shown")
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temp folder)")
    args = parser.parse_args()
    rows = args.rows or (10_000 if args.small else 100_000)
    storage = parse_bytes(args.storage or ("64Mi" if args.small else "1Gi"))
    print(f"backup/restore of {format_bytes(storage)} of storage and {rows} rows, median of {args.rounds} "
          f"rounds; {machine_line()}")
    results: list[Row] = []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="nubis-bench-backup-") as scratch:
        for name, run in (("sqlite", bench_sqlite), ("postgresql", bench_postgres)):
            if args.only in (None, name):
                work = Path(scratch) / name
                work.mkdir()
                results += run(work, rows=rows, storage=storage, rounds=args.rounds)
                shutil.rmtree(work)
    print(format_table(["database", "step", "nubis", "baseline", "nubis / baseline"],
                       [r.cells() for r in results]))
    print("verify: nubis backup verify of the archive (no baseline does it: its ratio is against the plain "
          "backup). nubis hashes every byte and checks every table; cp -r does neither.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
