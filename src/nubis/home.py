"""``$NUBIS_HOME`` (default ``~/.nubis``): the one folder nubis keeps local state in."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_HOME = Path("~/.nubis")


def nubis_home() -> Path:
    return Path(os.environ.get("NUBIS_HOME") or DEFAULT_HOME).expanduser()


def write_private(path: Path, data: bytes) -> None:
    """Create ``path`` readable by its owner only (0600), atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
