"""Scheduled backups (``nubis up --backup-every 6h --backup-keep 14``): a task of the control plane
that writes an archive each period into the backup folder and keeps the newest ``keep``.

The next backup is due one period after the newest archive in the folder (at once if there is
none), so restarts of the platform neither skip nor repeat one. Archives hold no key: restoring
one needs the platform's ``master.key``, kept apart.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from datetime import UTC, datetime
from pathlib import Path

from nubis.models.storage import format_bytes
from nubis.server.backup.create import create_backup
from nubis.server.settings import ServerSettings

log = logging.getLogger("nubis.backup")
NAME = re.compile(r"^nubis-\d{8}T\d{6}Z\.nubis$")
RETRY_S = 300.0  # after a failed backup, try again this much later (or at the period, if shorter)


def archives(folder: Path) -> list[Path]:
    """The scheduled archives in ``folder``, oldest first (their names sort by time)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if NAME.match(p.name))


def prune(folder: Path, keep: int) -> list[Path]:
    """Remove all but the newest ``keep`` archives; returns the removed ones."""
    doomed = archives(folder)[:-keep] if keep > 0 else archives(folder)
    for path in doomed:
        path.unlink(missing_ok=True)
    return doomed


def next_due(folder: Path, every_s: float, now: float) -> float:
    existing = archives(folder)
    return existing[-1].stat().st_mtime + every_s if existing else now


class BackupSchedule:
    def __init__(self, settings: ServerSettings) -> None:
        assert settings.backup_every_s is not None
        self.settings = settings
        self.every_s = settings.backup_every_s
        self.keep = settings.backup_keep
        self.folder = settings.backups_folder

    def backup_once(self, now: datetime) -> Path:
        """Write one archive, then prune; returns its path."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.folder / f"nubis-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}.nubis"
        started = time.monotonic()
        manifest = create_backup(self.settings, path, now=now)
        rows = sum(t.rows for t in manifest.tables.values())
        log.info("backup written to %s in %.1f s: %d rows, %d files (%s), %s", path,
                 time.monotonic() - started, rows, manifest.storage_files,
                 format_bytes(manifest.storage_bytes), format_bytes(path.stat().st_size))
        for old in prune(self.folder, self.keep):
            log.info("backup %s removed (keeping the newest %d)", old, self.keep)
        return path

    async def run(self) -> None:
        log.info("backups every %g s into %s, keeping the newest %d", self.every_s, self.folder, self.keep)
        due = next_due(self.folder, self.every_s, time.time())
        while True:
            await asyncio.sleep(max(0.0, due - time.time()))
            try:
                await asyncio.to_thread(self.backup_once, datetime.now(UTC))
                due = time.time() + self.every_s
            except Exception:
                log.exception("the scheduled backup failed; trying again later")
                due = time.time() + min(RETRY_S, self.every_s)
