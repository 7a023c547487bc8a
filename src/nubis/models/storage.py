"""Storage on the wire, and the one rule for paths that server, SDK and workloads share."""

from __future__ import annotations

import unicodedata
from datetime import datetime

from pydantic import BaseModel

from nubis.errors import BadRequestError

MAX_PATH = 1024
MAX_NAME_BYTES = 255  # one folder or file name; the limit of ext4, xfs and most file systems
TMP_DIR = ".nubis-tmp"


class InvalidPathError(BadRequestError):
    code = "invalid_path"
    http_status = 422


def normalize_path(path: str, *, allow_empty: bool = False) -> str:
    """``a//b/./c/`` → ``a/b/c``.

    Rejects ``..``, absolute paths, backslashes, control, format (such as U+202E, which shows
    text backwards) and unencodable characters, U+FFFD (what invalid UTF-8 in a URL decodes to),
    names longer than a file system allows, and the reserved ``.nubis-tmp`` folder. The result is
    NFC-normalised (one spelling per name: "é" is one code point), never starts with ``/``, never
    has an empty, ``.`` or ``..`` segment, and normalising it again changes nothing.
    """
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in path):
        raise InvalidPathError("paths cannot contain control characters")
    if "\ufffd" in path:
        raise InvalidPathError("paths must be valid UTF-8 (this one holds U+FFFD, the mark of invalid bytes)")
    if any(unicodedata.category(c) == "Cf" for c in path):
        raise InvalidPathError("paths cannot contain invisible format characters (such as U+202E or U+200B)")
    path = unicodedata.normalize("NFC", path)
    if "\\" in path:
        raise InvalidPathError("use '/' to separate folders, not '\\'")
    if path.startswith("/"):
        raise InvalidPathError(f"{path!r}: give a path relative to the workspace, without a leading /")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidPathError(f"{path!r}: '..' is not allowed in paths")
    if TMP_DIR in parts:
        raise InvalidPathError(f"{TMP_DIR!r} is reserved for uploads in progress")
    if any(len(p.encode()) > MAX_NAME_BYTES for p in parts):
        raise InvalidPathError(f"folder and file names are at most {MAX_NAME_BYTES} bytes")
    clean = "/".join(parts)
    if not clean and not allow_empty:
        raise InvalidPathError("the path is empty")
    if len(clean) > MAX_PATH:
        raise InvalidPathError(f"paths are at most {MAX_PATH} characters")
    return clean


def format_bytes(size: int) -> str:
    """``1536`` → ``1.5 KiB``: sizes for people, in binary units."""
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


class StorageObject(BaseModel):
    """A file in a workspace's storage."""

    path: str
    size: int
    modified: datetime | None = None


class UploadResult(BaseModel):
    path: str
    size: int
    sha256: str


class DeleteResult(BaseModel):
    path: str
    deleted: int
