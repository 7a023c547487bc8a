"""What a backup archive holds, said in its first member (``manifest.json``), and the table digests
that let a restore prove that every row came back.

A table's digest is its row count and an order-independent hash: the sum, modulo 2**256, of the
sha256 of each row's canonical encoding (a JSON list of its values). No ``ORDER BY`` is needed, so
the digest does not depend on collations or on which columns make the primary key.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
CHECKSUM_NAME = "checksum.sha256"
KEY_NAME = "key.json"
DATABASE_PREFIX = "database/"
STORAGE_PREFIX = "storage/"
HOME_PREFIX = "home/"
MODULUS = 1 << 256

DatabaseKind = Literal["sqlite", "postgresql"]


class TableDigest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: int
    sha256: str


class FileEntry(BaseModel):
    """One member of the archive: ``database/…``, ``storage/<path>``, ``home/<path>`` or ``key.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    size: int
    sha256: str


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: int = FORMAT_VERSION
    nubis_version: str
    schema_revision: str | None
    created_at: dt.datetime
    database: DatabaseKind
    tables: dict[str, TableDigest]
    files: list[FileEntry]
    master_key_sha256: str
    """sha256 of the master key (never the key): a restore checks the key it is given against it."""
    key_included: bool
    storage_url: str
    """Where the backed-up platform kept its storage (for the operator's information)."""

    def to_bytes(self) -> bytes:
        return self.model_dump_json(indent=1).encode()

    @property
    def storage_bytes(self) -> int:
        return sum(f.size for f in self.files if f.name.startswith(STORAGE_PREFIX))

    @property
    def storage_files(self) -> int:
        return sum(1 for f in self.files if f.name.startswith(STORAGE_PREFIX))


def key_fingerprint(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()


def canonical_value(value: Any) -> Any:
    """A value JSON has no type for: bytes as base64, times as ISO 8601, anything else as text."""
    if isinstance(value, bytes | bytearray | memoryview):
        return {"base64": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return str(value)


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=True,
                            default=canonical_value)


def row_bytes(row: Sequence[Any]) -> bytes:
    """A row's canonical encoding: a JSON list of its values (``canonical_value`` for the others)."""
    return _ENCODER.encode(tuple(row)).encode()


class DigestBuilder:
    """Feed rows in any order; ``digest()`` is the same for the same multiset of rows."""

    def __init__(self) -> None:
        self.rows = 0
        self._sum = 0

    def add(self, row: Sequence[Any]) -> None:
        self.rows += 1
        self._sum = (self._sum + int.from_bytes(hashlib.sha256(row_bytes(row)).digest(), "big")) % MODULUS

    def digest(self) -> TableDigest:
        return TableDigest(rows=self.rows, sha256=self._sum.to_bytes(32, "big").hex())


def table_digest(rows: Iterable[Sequence[Any]]) -> TableDigest:
    builder = DigestBuilder()
    for row in rows:
        builder.add(row)
    return builder.digest()


def quoted(name: str) -> str:
    """A table name as an SQL identifier (the same quoting in SQLite and PostgreSQL)."""
    return '"' + name.replace('"', '""') + '"'


def compare_tables(expected: dict[str, TableDigest], actual: dict[str, TableDigest]) -> list[str]:
    """Every difference, one line each (empty: the database holds exactly what the manifest lists)."""
    problems = []
    for name in sorted(expected.keys() | actual.keys()):
        want, got = expected.get(name), actual.get(name)
        if want is None:
            problems.append(f"table {name} is not in the backup")
        elif got is None:
            problems.append(f"table {name} is missing")
        elif want.rows != got.rows:
            problems.append(f"table {name}: {got.rows} rows, the backup lists {want.rows}")
        elif want.sha256 != got.sha256:
            problems.append(f"table {name}: its rows differ from the backup's (same count, other content)")
    return problems
