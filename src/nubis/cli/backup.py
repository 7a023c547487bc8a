"""``nubis backup create|verify|restore``: run on the machine that runs the platform (they read its
home, database and storage directly, as ``nubis up`` does), while it runs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from nubis.cli import render
from nubis.errors import BadRequestError
from nubis.home import nubis_home
from nubis.models.storage import format_bytes
from nubis.server.backup import Manifest, RestoreTarget, create_backup, restore_backup, verify_backup
from nubis.server.backup.keys import PASSPHRASE_ENV, check_passphrase
from nubis.server.settings import ServerSettings

app = typer.Typer(help="Backups of the whole platform: database, storage, checkpoints (the key if asked).",
                  no_args_is_help=True)
Output = Annotated[str, typer.Option("--output", "-o", help=render.OUTPUT_HELP)]
Home = Annotated[Path | None, typer.Option(help="the platform's state folder (default: $NUBIS_HOME)")]


def platform_settings(home: Path | None, db: str | None, storage: str | None) -> ServerSettings:
    """The platform as ``nubis up`` runs it: options given here, else what the running ``nubis up``
    wrote in ``server.json``, else the home's defaults."""
    home = home or nubis_home()
    running: dict[str, Any] = {}
    server_file = home / "server.json"
    if server_file.is_file():
        running = json.loads(server_file.read_text())
    return ServerSettings(home=home, db_url=db or running.get("db_url"),
                          storage_url=storage or running.get("storage_url"))


def read_passphrase(*, confirm: bool) -> str:
    """``$NUBIS_BACKUP_PASSPHRASE``, else a hidden prompt (typed twice when it wraps a key)."""
    value = os.environ.get(PASSPHRASE_ENV)
    if value is None:
        if not sys.stdin.isatty():
            raise BadRequestError(f"the backup passphrase: set {PASSPHRASE_ENV}, or run in a terminal to "
                                  "type it")
        value = typer.prompt("backup passphrase", hide_input=True, confirmation_prompt=confirm)
    return check_passphrase(value)


def summary(manifest: Manifest) -> dict[str, Any]:
    return {
        "created_at": manifest.created_at.isoformat(), "nubis_version": manifest.nubis_version,
        "schema_revision": manifest.schema_revision, "database": manifest.database,
        "tables": len(manifest.tables), "rows": sum(t.rows for t in manifest.tables.values()),
        "storage_files": manifest.storage_files, "storage_bytes": manifest.storage_bytes,
        "key_included": manifest.key_included, "master_key_sha256": manifest.master_key_sha256,
    }


def describe(manifest: Manifest) -> str:
    s = summary(manifest)
    key = "the master key wrapped with a passphrase" if s["key_included"] else "no key"
    return (f"{s['rows']} rows in {s['tables']} tables ({s['database']}, schema {s['schema_revision']}), "
            f"{s['storage_files']} files ({format_bytes(s['storage_bytes'])}), {key}")


@app.command("create")
def create(
    path: Annotated[Path, typer.Argument(help="the archive to write (a new file)")],
    include_key: Annotated[bool, typer.Option(
        "--include-key", help=f"put the master key in, wrapped with a passphrase (${PASSPHRASE_ENV} "
                              "or a prompt)")] = False,
    home: Home = None,
    db: Annotated[str | None, typer.Option("--db", help="database URL (default: the running platform's)")] = (
        None),
    storage: Annotated[str | None, typer.Option(help="storage URL (default: the running platform's)")] = None,
    output: Output = "table",
) -> None:
    """Back up the platform (it may be running): database, storage, checkpoints, in one archive."""
    render.check_output(output)
    passphrase = read_passphrase(confirm=True) if include_key else None
    manifest = create_backup(platform_settings(home, db, storage), path, passphrase=passphrase)
    if output == "json":
        render.as_json({"path": str(path), **summary(manifest)})
        return
    render.success(f"backup written to {path}: {describe(manifest)}")
    if not include_key:
        render.line("restoring it needs this platform's master key: keep a copy of its master.key apart "
                    "from the backups (or use --include-key)")


@app.command("verify")
def verify(
    path: Annotated[Path, typer.Argument(help="the archive")],
    output: Output = "table",
) -> None:
    """Read a whole archive and check every byte, file and table, without restoring it."""
    render.check_output(output)
    verified = verify_backup(path)
    if output == "json":
        render.as_json({"path": str(path), "ok": True, "tables_checked": verified.tables_checked,
                        **summary(verified.manifest)})
        return
    manifest = verified.manifest
    what = "every table checked" if verified.tables_checked else "a readable dump; tables checked on restore"
    render.success(f"{path} is intact ({what}): {describe(manifest)}, "
                   f"made {manifest.created_at:%Y-%m-%d %H:%M:%S %Z} by nubis {manifest.nubis_version}")


@app.command("restore")
def restore(
    path: Annotated[Path, typer.Argument(help="the archive")],
    home: Annotated[Path, typer.Option(help="the new home: a folder that does not exist yet, or is empty")],
    database: Annotated[str | None, typer.Option(
        help="a PostgreSQL backup: the empty database to restore into")] = None,
    storage: Annotated[str | None, typer.Option(
        help="an empty folder or s3://bucket/prefix for the files (default: the new home's storage)")] = None,
    master_key_file: Annotated[Path | None, typer.Option(
        help="the backed-up platform's master.key (for a backup made without --include-key)")] = None,
    output: Output = "table",
) -> None:
    """Restore an archive into a new, empty home; nothing is written unless all of it checks out."""
    render.check_output(output)
    restored = restore_backup(path, RestoreTarget(home, database=database, storage=storage),
                              master_key_file=master_key_file,
                              passphrase=lambda: read_passphrase(confirm=False))
    start = ["nubis", "up", "--home", str(home)]
    start += ["--db", database] if database else []
    start += ["--storage", storage] if storage else []
    if output == "json":
        render.as_json({"home": str(home), **summary(restored.manifest),
                        "replicas_restarted": restored.settled.replicas_restarted,
                        "jobs_requeued": restored.settled.jobs_requeued, "start": start})
        return
    render.success(f"restored into {home}: {describe(restored.manifest)}")
    render.line(f"at its first start, {restored.settled.replicas_restarted} replica(s) start again and "
                f"{restored.settled.jobs_requeued} job(s) resume from their checkpoints")
    if not restored.admin_token_restored:
        render.line("the old tokens work; a new admin token is written to the home at the first start")
    render.line("start it with: ", (" ".join(start), "bold"))
