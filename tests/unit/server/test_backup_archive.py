"""The backup archive's parts without a server: table digests, the wrapped key, and an archive in
which any flipped byte is found."""

from __future__ import annotations

import io
import tarfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nubis.errors import BackupDamagedError, BackupFailedError, BackupKeyError, BackupTooNewError
from nubis.server.backup.archive import ArchiveWriter, manifest_reserve, read_manifest, read_members
from nubis.server.backup.keys import KeyMaterial, unwrap, wrap
from nubis.server.backup.manifest import Manifest, compare_tables, key_fingerprint, table_digest
from nubis.server.backup.restore import check_manifest

KEY = bytes(range(32))
MEMBERS = {"database/nubis.db": b"SQLite format 3\0" + bytes(3000), "storage/a/é x.txt": b"hello\n" * 100,
           "storage/empty": b"", "home/backend/jobs/j1/checkpoints/ckpt.pt": bytes(range(256)) * 9}


def test_table_digest_ignores_row_order_and_sees_any_change() -> None:
    rows = [(1, "a", None, b"\x00\xff", 1.5), (2, "b", True, None, 0.0), (3, "a", None, None, -2.0)]
    digest = table_digest(rows)
    assert digest.rows == 3
    assert table_digest(reversed(rows)) == digest
    assert table_digest([*rows[:2], (3, "a", None, None, -2.5)]) != digest
    assert table_digest(rows[:2]).rows == 2
    assert table_digest([*rows, rows[0]]) != digest  # a duplicated row counts
    assert table_digest([]) == table_digest([])


def test_compare_tables_names_each_difference() -> None:
    a, b = table_digest([(1,)]), table_digest([(2,)])
    assert compare_tables({"t": a}, {"t": a}) == []
    assert compare_tables({"t": a, "u": a}, {"t": b, "v": a}) == [
        "table t: its rows differ from the backup's (same count, other content)",
        "table u is missing", "table v is not in the backup"]
    twice = table_digest([(1,), (1,)])
    assert compare_tables({"t": a}, {"t": twice}) == ["table t: 2 rows, the backup lists 1"]


def test_wrapped_key_needs_the_passphrase_and_belongs_to_its_fingerprint() -> None:
    blob = wrap(KeyMaterial(KEY, "nbs_admin"), "a long passphrase")
    assert KEY.hex() not in blob.hex() and b"nbs_admin" not in blob
    material = unwrap(blob, "a long passphrase", fingerprint=key_fingerprint(KEY))
    assert material == KeyMaterial(KEY, "nbs_admin")
    with pytest.raises(BackupKeyError, match="wrong passphrase"):
        unwrap(blob, "another passphrase", fingerprint=key_fingerprint(KEY))
    with pytest.raises(BackupKeyError, match="wrong passphrase"):  # moved into another backup's manifest
        unwrap(blob, "a long passphrase", fingerprint=key_fingerprint(bytes(32)))


def write_archive(path: Path) -> Manifest:
    base = Manifest(nubis_version="0.0.0", schema_revision="0008",
                    created_at=datetime(2026, 1, 2, tzinfo=UTC), database="sqlite",
                    tables={"t": table_digest([(1,)])}, files=[],
                    master_key_sha256=key_fingerprint(KEY), key_included=False, storage_url="/srv/storage")
    with ArchiveWriter(path, manifest_reserve=manifest_reserve(base, MEMBERS)) as writer:
        for name, data in MEMBERS.items():
            writer.add_bytes(name, data)
        manifest = base.model_copy(update={"files": writer.files})
        writer.finish(manifest)
    return manifest


def check(path: Path) -> dict[str, bytes]:
    manifest = read_manifest(path)
    out: dict[str, io.BytesIO] = {}

    def sink(entry):  # type: ignore[no-untyped-def]
        out[entry.name] = buffer = io.BytesIO()
        buffer.close = lambda: None  # type: ignore[method-assign]
        return buffer

    read_members(path, manifest, sink)
    return {name: b.getvalue() for name, b in out.items()}


def test_archive_round_trip_is_a_plain_tar_with_the_manifest_first(tmp_path: Path) -> None:
    path = tmp_path / "b.nubis"
    manifest = write_archive(path)
    assert check(path) == MEMBERS
    assert read_manifest(path) == manifest
    with tarfile.open(path) as tar:
        names = tar.getnames()
    assert names == ["manifest.json", *MEMBERS, "checksum.sha256"]
    assert [p.name for p in tmp_path.iterdir()] == ["b.nubis"]  # no temporary file left
    assert path.stat().st_mode & 0o777 == 0o600


def test_any_flipped_byte_is_found(tmp_path: Path) -> None:
    path = tmp_path / "b.nubis"
    write_archive(path)
    good = path.read_bytes()
    flipped = tmp_path / "flipped.nubis"
    positions = sorted({*range(0, len(good), 61), len(good) - 1, 512 + 3, 1024 + 7})
    for pos in positions:
        data = bytearray(good)
        data[pos] ^= 0x20
        flipped.write_bytes(bytes(data))
        with pytest.raises(BackupDamagedError):
            check(flipped)
    flipped.write_bytes(good[: len(good) // 2])
    with pytest.raises(BackupDamagedError, match="damaged or not a nubis backup"):
        check(flipped)
    flipped.write_bytes(b"not a tar at all")
    with pytest.raises(BackupDamagedError, match="not a readable tar file"):
        check(flipped)


def test_a_failed_write_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "b.nubis"
    base = Manifest(nubis_version="0", schema_revision=None, created_at=datetime.now(UTC), database="sqlite",
                    tables={}, files=[], master_key_sha256="0" * 64, key_included=False, storage_url="x")
    with pytest.raises(BackupFailedError, match="could not be read whole"):
        with ArchiveWriter(path, manifest_reserve=manifest_reserve(base, ["storage/x"])) as writer:
            writer.add("storage/x", io.BytesIO(b"short"), 100)  # the source ends before its size
    assert list(tmp_path.iterdir()) == []


def test_members_outside_the_archive_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.nubis"
    write_archive(path)
    manifest = read_manifest(path)
    renamed = manifest.files[-1].model_copy(update={"name": "home/../../x"})
    evil = manifest.model_copy(update={"files": [*manifest.files[:-1], renamed]})
    with pytest.raises(BackupDamagedError, match="members are not the manifest's"):
        read_members(path, evil)


def test_a_backup_from_a_newer_nubis_is_refused(tmp_path: Path) -> None:
    manifest = write_archive(tmp_path / "b.nubis")
    check_manifest(manifest)  # a revision this nubis knows
    with pytest.raises(BackupTooNewError, match=r"schema \(9999_future\) is newer than this nubis knows"):
        check_manifest(manifest.model_copy(update={"schema_revision": "9999_future"}))
    with pytest.raises(BackupTooNewError, match="format 2 is newer"):
        check_manifest(manifest.model_copy(update={"format": 2}))
