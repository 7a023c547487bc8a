"""The working folder ``nubis job submit`` uploads as the workers' cwd: a zip without VCS folders,
caches, virtualenvs and what ``.nubisignore`` lists.

``.nubisignore`` (in the folder's top level only) takes this subset of gitignore's syntax:

- blank lines and lines starting with ``#`` are skipped; trailing spaces are dropped;
- ``*`` matches anything but ``/``, ``?`` one character but ``/``, ``[abc]``/``[!abc]`` one of a set,
  ``\\`` escapes the next character;
- a pattern without ``/`` (``*.pt``, ``lightning_logs``) matches a file or folder name at any depth;
  one with a ``/`` in front or in the middle (``/outputs``, ``data/raw``) matches from the top;
- a trailing ``/`` (``runs/``) matches folders only; everything inside an ignored folder is ignored;
- ``**/`` in front matches in any folder, ``/**`` at the end everything inside, ``/**/`` zero or more
  folders;
- ``!pattern`` takes back an earlier match (the last matching line wins); as in git, a file whose
  folder is ignored cannot be taken back.

Not supported: nested ``.nubisignore`` files in subfolders.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from nubis.errors import BadRequestError

IGNORE_FILE = ".nubisignore"
SKIP_DIRS = {".git", "__pycache__", ".venv", "venv", "node_modules", ".mypy_cache", ".pytest_cache",
             ".ruff_cache", ".tox"}
MAX_CODE_BYTES = 100 * 2**20


@dataclass(frozen=True)
class IgnoreRule:
    regex: re.Pattern[str]
    negate: bool
    dir_only: bool
    anchored: bool

    def matches(self, rel: str, *, is_dir: bool) -> bool:
        if self.dir_only and not is_dir:
            return False
        return bool(self.regex.fullmatch(rel if self.anchored else rel.rsplit("/", 1)[-1]))


def _translate(pattern: str) -> str:
    """A gitignore glob as a regular expression (``*`` and ``?`` stop at ``/``)."""
    parts, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            parts.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            parts.append(".*")
            i += 2
        elif pattern[i] == "*":
            parts.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            parts.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) != -1:
            members = pattern[i + 1:end]
            negate = members[0] in "!^"
            members = re.escape(members[1:] if negate else members).replace("\\-", "-")
            parts.append(f"[{'^' if negate else ''}{members}]")
            i = end + 1
        elif pattern[i] == "\\" and i + 1 < len(pattern):
            parts.append(re.escape(pattern[i + 1]))
            i += 2
        else:
            parts.append(re.escape(pattern[i]))
            i += 1
    return "".join(parts)


def parse_ignore(text: str) -> list[IgnoreRule]:
    rules = []
    for raw in text.splitlines():
        line = raw.rstrip(" ")
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = line[1:] if negate else line
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        if not line:
            continue
        anchored = "/" in line
        line = line.lstrip("/")
        rules.append(IgnoreRule(re.compile(_translate(line), re.DOTALL), negate, dir_only, anchored))
    return rules


def is_ignored(rules: list[IgnoreRule], rel: str, *, is_dir: bool) -> bool:
    ignored = False
    for rule in rules:
        if rule.matches(rel, is_dir=is_dir):
            ignored = not rule.negate
    return ignored


@dataclass
class CodeArchive:
    data: bytes
    files: list[tuple[str, int]] = field(default_factory=list)
    """What went in: relative path and size."""
    ignored: int = 0
    """Files and folders left out by ``.nubisignore``."""

    @property
    def size(self) -> int:
        return sum(size for _, size in self.files)


def zip_workdir(folder: Path) -> CodeArchive:
    """The folder as a zip (without VCS, caches, virtualenvs and ``.nubisignore``'s matches),
    refusing more than 100 MiB."""
    ignore_file = folder / IGNORE_FILE
    rules = parse_ignore(ignore_file.read_text()) if ignore_file.is_file() else []
    buf = io.BytesIO()
    archive = CodeArchive(b"")
    total = 0
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for root, dirs, files in os.walk(folder):
            base = Path(root).relative_to(folder).as_posix()
            prefix = "" if base == "." else f"{base}/"
            kept = []
            for d in sorted(dirs):
                if d in SKIP_DIRS:
                    continue
                if is_ignored(rules, prefix + d, is_dir=True):
                    archive.ignored += 1
                    continue
                kept.append(d)
            dirs[:] = kept
            for name in sorted(files):
                rel = prefix + name
                if is_ignored(rules, rel, is_dir=False):
                    archive.ignored += 1
                    continue
                path = Path(root) / name
                size = path.stat().st_size
                total += size
                if total > MAX_CODE_BYTES:
                    raise BadRequestError(
                        f"{folder} holds over {MAX_CODE_BYTES >> 20} MiB: choose a smaller --workdir, list "
                        f"what the job does not need in {IGNORE_FILE} (put data in storage) or pass --no-code"
                    )
                zf.write(path, rel)
                archive.files.append((rel, size))
    archive.data = buf.getvalue()
    return archive
