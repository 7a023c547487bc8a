"""The backup archive: one tar file, ``manifest.json`` first and ``checksum.sha256`` last.

Written in one pass: the manifest's place is reserved first (its size is bounded before any data
is read), members stream in while their sha256 is taken, then the manifest is written into its
place. Everything is written to a hidden temporary name that is renamed at the end, so a path
never holds half an archive.

``checksum.sha256`` covers every byte before it: sha256(sha256(manifest member) + sha256(the
bytes between the members' data: tar headers and padding)); each member's data is covered by its
sha256, which the manifest lists. A reader also checks that nothing but zeros follows it, so one
flipped byte anywhere in the file is found (and every byte is hashed once).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import posixpath
import tarfile
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from pydantic import ValidationError as PydanticValidationError

from nubis.errors import BackupDamagedError, BackupFailedError, NotFoundError
from nubis.server.backup.manifest import CHECKSUM_NAME, MANIFEST_NAME, FileEntry, Manifest

BLOCK = tarfile.BLOCKSIZE
CHUNK = 1 << 20
ENTRY_OVERHEAD = 200
MEMBER_MTIME = 0  # the manifest's header is written twice and must come out the same


def padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _member(name: str, size: int, mtime: float = MEMBER_MTIME) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o600
    info.mtime = int(mtime)
    return info


class _HashingWriter:
    """The tar's file object: hashes what goes through while ``active``, but the ``skip`` range
    (a member's data, which its own sha256 in the manifest covers)."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.sha = hashlib.sha256()
        self.active = False
        self.pos = 0
        self.skip = (0, 0)

    def write(self, data: bytes) -> int:
        if self.active:
            start, end = self.skip
            lo, hi = self.pos, self.pos + len(data)
            view = memoryview(data)
            if hi <= start or lo >= end:
                self.sha.update(view)
            else:
                self.sha.update(view[:max(0, start - lo)])
                self.sha.update(view[max(0, end - lo):])
        self.pos += len(data)
        return self.raw.write(data)

    def tell(self) -> int:
        return self.pos


class _HashingReader:
    """What ``TarFile.addfile`` copies from: ``size`` bytes at most, hashed as they are read."""

    def __init__(self, source: IO[bytes]) -> None:
        self.source = source
        self.sha = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.source.read(n)
        self.sha.update(data)
        return data


class ArchiveWriter:
    """``add`` members, then ``finish(manifest)``; ``abort()`` (or an exception inside ``with``)
    removes the temporary file."""

    def __init__(self, path: Path, *, manifest_reserve: int) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._raw = os.fdopen(fd, "wb", buffering=CHUNK)
        self._out = _HashingWriter(self._raw)
        self._tar = tarfile.TarFile(fileobj=self._out, mode="w", format=tarfile.PAX_FORMAT,  # type: ignore[arg-type]
                                    copybufsize=CHUNK)
        self._reserve = manifest_reserve
        self._tar.addfile(_member(MANIFEST_NAME, manifest_reserve), io.BytesIO(b" " * manifest_reserve))
        self._out.active = True
        self.files: list[FileEntry] = []

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None:
            self.abort()

    def add(self, name: str, source: IO[bytes], size: int, *, mtime: float = MEMBER_MTIME) -> FileEntry:
        """Copy exactly ``size`` bytes of ``source`` into the member ``name``."""
        reader = _HashingReader(source)
        info = _member(name, size, mtime)
        data_at = self._out.pos + len(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        self._out.skip = (data_at, data_at + size)
        try:
            self._tar.addfile(info, reader)  # type: ignore[arg-type]
        except OSError as exc:  # "unexpected end of data": the source is shorter than it said
            raise BackupFailedError(f"{name} could not be read whole: {exc}") from exc
        entry = FileEntry(name=name, size=size, sha256=reader.sha.hexdigest())
        self.files.append(entry)
        return entry

    def add_bytes(self, name: str, data: bytes) -> FileEntry:
        return self.add(name, io.BytesIO(data), len(data))

    def finish(self, manifest: Manifest) -> None:
        """Write the checksum member, the manifest into its place, and rename into ``path``."""
        body = manifest.to_bytes()
        if len(body) > self._reserve:
            raise BackupFailedError(f"the manifest ({len(body)} bytes) outgrew its reserved {self._reserve}")
        head = manifest_region(body, self._reserve)
        self._out.active = False
        total = combined_checksum(hashlib.sha256(head).digest(), self._out.sha.digest())
        self._tar.addfile(_member(CHECKSUM_NAME, len(total)), io.BytesIO(total))
        self._tar.close()
        self._raw.flush()
        os.pwrite(self._raw.fileno(), head, 0)
        os.fsync(self._raw.fileno())
        self._raw.close()
        os.replace(self.tmp, self.path)
        with contextlib.suppress(OSError):
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._raw.close()
        self.tmp.unlink(missing_ok=True)


def manifest_region(body: bytes, reserve: int) -> bytes:
    """The manifest member's bytes: header, the JSON padded with spaces to ``reserve``, tar padding."""
    header = _member(MANIFEST_NAME, reserve).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    data = body + b" " * (reserve - len(body))
    return header + data + b"\0" * (padded(reserve) - reserve)


def combined_checksum(manifest_sha: bytes, body_sha: bytes) -> bytes:
    return (hashlib.sha256(manifest_sha + body_sha).hexdigest() + "\n").encode()


def damaged(path: Path, why: str) -> BackupDamagedError:
    return BackupDamagedError(f"{path} is damaged or not a nubis backup: {why}")


def read_manifest(path: Path) -> Manifest:
    """The first member, parsed; ``BackupDamagedError`` for anything else."""
    try:
        with tarfile.open(path, "r:") as tar:
            first = tar.next()
            if first is None or first.name != MANIFEST_NAME or not first.isreg():
                raise damaged(path, f"its first member is not {MANIFEST_NAME}")
            fh = tar.extractfile(first)
            assert fh is not None
            return Manifest.model_validate_json(fh.read())
    except FileNotFoundError:
        raise NotFoundError(f"no backup at {path}") from None
    except (tarfile.TarError, EOFError) as exc:
        raise damaged(path, f"not a readable tar file ({exc})") from None
    except (PydanticValidationError, UnicodeDecodeError) as exc:
        raise damaged(path, f"its manifest does not parse ({str(exc).splitlines()[0]})") from None


Sink = Callable[[FileEntry], BinaryIO | None]


@dataclass(frozen=True)
class _Layout:
    members: list[tarfile.TarInfo]
    manifest_end: int
    trailer: tarfile.TarInfo


def _layout(path: Path, manifest: Manifest) -> _Layout:
    try:
        with tarfile.open(path, "r:") as tar:
            members = tar.getmembers()
    except (tarfile.TarError, EOFError) as exc:
        raise damaged(path, f"not a readable tar file ({exc})") from None
    if len(members) < 2 or members[0].name != MANIFEST_NAME or members[-1].name != CHECKSUM_NAME:
        raise damaged(path, "it does not end with its checksum (truncated, or a header is broken)")
    inner = members[1:-1]
    listed = {f.name: f for f in manifest.files}
    names = [m.name for m in inner]
    if len(set(names)) != len(names) or set(names) != set(listed):
        missing = sorted(set(listed) - set(names))[:3]
        extra = sorted(set(names) - set(listed))[:3]
        raise damaged(path, f"its members are not the manifest's (missing {missing}, not listed {extra})")
    for m in members:
        if not m.isreg() or not safe_name(m.name):
            raise damaged(path, f"member {m.name!r} is not a plain file with a safe name")
        if m.name in listed and listed[m.name].size != m.size:
            raise damaged(path, f"{m.name} is {m.size} bytes, the manifest says {listed[m.name].size}")
    first = members[0]
    return _Layout(inner, first.offset_data + padded(first.size), members[-1])


def safe_name(name: str) -> bool:
    parts = name.split("/")
    return (not name.startswith("/") and "\\" not in name and "\0" not in name
            and all(p not in ("", ".", "..") for p in parts) and posixpath.normpath(name) == name)


def read_members(path: Path, manifest: Manifest, sink: Sink | None = None) -> None:
    """Read the whole archive once: every member's sha256 against the manifest, the checksum over
    every byte, zeros after it. ``sink(entry)`` may return a file each member's bytes go to."""
    layout = _layout(path, manifest)
    listed = {f.name: f for f in manifest.files}
    body = hashlib.sha256()
    with open(path, "rb") as fh:
        head = fh.read(layout.manifest_end)
        pos = layout.manifest_end
        for member in layout.members:
            body.update(fh.read(member.offset_data - pos))
            entry = listed[member.name]
            dest = sink(entry) if sink is not None else None
            digest = _copy_member(fh, member.size, dest)
            if digest != entry.sha256:
                raise damaged(path, f"{member.name} does not match its sha256 in the manifest")
            end = member.offset_data + padded(member.size)
            body.update(fh.read(end - member.offset_data - member.size))
            pos = end
        expected = combined_checksum(hashlib.sha256(head).digest(), body.digest())
        header = _member(CHECKSUM_NAME, len(expected)).tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        if pos != layout.trailer.offset_data - BLOCK or fh.read(BLOCK) != header:
            raise damaged(path, "unexpected bytes before its checksum")
        if fh.read(layout.trailer.size) != expected:
            raise damaged(path, "its checksum does not match its bytes")
        for chunk in iter(lambda: fh.read(CHUNK), b""):  # tar padding and end-of-archive blocks
            if chunk.count(0) != len(chunk):
                raise damaged(path, "bytes follow its checksum")


def _copy_member(fh: BinaryIO, size: int, dest: BinaryIO | None) -> str:
    sha = hashlib.sha256()
    left = size
    while left:
        chunk = fh.read(min(CHUNK, left))
        if not chunk:
            break
        left -= len(chunk)
        sha.update(chunk)
        if dest is not None:
            dest.write(chunk)
    if dest is not None:
        dest.close()
    return sha.hexdigest()


def manifest_reserve(base: Manifest, names: Iterable[str]) -> int:
    """An upper bound of the manifest's size once ``names`` are listed in it (with their sizes and
    sha256): ``base`` lists no files yet; each entry takes at most its name escaped as ASCII JSON
    (longer than UTF-8) plus the keys, the indentation, a 20-digit size and 64 hex digits."""
    return len(base.to_bytes()) + sum(len(json.dumps(name)) + ENTRY_OVERHEAD for name in names) + 1024
