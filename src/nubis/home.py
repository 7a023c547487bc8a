"""``$NUBIS_HOME`` (default ``~/.nubis``): the one folder nubis keeps local state in."""

from __future__ import annotations

import os
from pathlib import Path


def nubis_home() -> Path:
    return Path(os.environ.get("NUBIS_HOME") or Path.home() / ".nubis").expanduser()
