"""Scheduled backups' retention and timing, on files only."""

from __future__ import annotations

import os
from pathlib import Path

from nubis.server.backup.schedule import archives, next_due, prune


def make(folder: Path, stamp: str, mtime: float) -> Path:
    path = folder / f"nubis-{stamp}.nubis"
    path.write_bytes(b"x")
    os.utime(path, (mtime, mtime))
    return path


def test_prune_keeps_the_newest_and_leaves_other_files(tmp_path: Path) -> None:
    stamps = ["20260101T000000Z", "20260101T060000Z", "20260101T120000Z", "20251231T180000Z"]
    for i, stamp in enumerate(stamps):
        make(tmp_path, stamp, 1000.0 + i)
    (tmp_path / "mine.nubis").write_bytes(b"kept: not a scheduled archive")
    (tmp_path / ".nubis-20260101T180000Z.nubis.ab12cd34.partial").write_bytes(b"in progress")
    removed = prune(tmp_path, 2)
    assert [p.name for p in removed] == ["nubis-20251231T180000Z.nubis", "nubis-20260101T000000Z.nubis"]
    kept = ["nubis-20260101T060000Z.nubis", "nubis-20260101T120000Z.nubis"]
    assert [p.name for p in archives(tmp_path)] == kept
    assert (tmp_path / "mine.nubis").exists()
    assert prune(tmp_path, 2) == []


def test_the_next_backup_is_one_period_after_the_newest(tmp_path: Path) -> None:
    assert next_due(tmp_path / "none-yet", 3600, now=5000.0) == 5000.0
    make(tmp_path, "20260101T000000Z", 100.0)
    make(tmp_path, "20260101T010000Z", 3700.0)
    assert next_due(tmp_path, 3600, now=5000.0) == 7300.0
