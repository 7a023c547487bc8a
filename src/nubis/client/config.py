"""Where the SDK and CLI find the server and the token.

Order: arguments, then ``NUBIS_URL`` / ``NUBIS_TOKEN``, then ``$NUBIS_HOME/credentials.json``
(written by ``nubis login``), then the local server's ``$NUBIS_HOME/server.json`` and
``admin.token`` (written by ``nubis up``), so the CLI on the server's machine needs no set-up.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from nubis.errors import UnauthorizedError
from nubis.home import nubis_home, write_private

DEFAULT_URL = "http://127.0.0.1:8400"


@dataclass(frozen=True)
class Credentials:
    url: str
    token: str
    workspace: str | None = None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def resolve(
    url: str | None = None,
    token: str | None = None,
    workspace: str | None = None,
    *,
    home: Path | None = None,
) -> Credentials:
    home = home or nubis_home()
    login = _read_json(home / "credentials.json")
    local = _read_json(home / "server.json")
    url = url or os.environ.get("NUBIS_URL") or login.get("url") or local.get("url") or DEFAULT_URL
    token = token or os.environ.get("NUBIS_TOKEN") or login.get("token")
    if not token:
        token_file = home / "admin.token"
        if token_file.exists():
            token = token_file.read_text().strip()
    if not token:
        raise UnauthorizedError(
            "no token: run `nubis up` on this machine, `nubis login --url URL --token TOKEN`, "
            "or set NUBIS_TOKEN"
        )
    workspace = workspace or os.environ.get("NUBIS_WORKSPACE") or login.get("workspace")
    return Credentials(url=url.rstrip("/"), token=token, workspace=workspace)


def save_login(credentials: Credentials, *, home: Path | None = None) -> Path:
    path = (home or nubis_home()) / "credentials.json"
    data = {"url": credentials.url, "token": credentials.token, "workspace": credentials.workspace}
    write_private(path, json.dumps(data).encode())
    return path
