"""``nubis up``: the control plane on this machine with embedded defaults."""

from __future__ import annotations

import json
import logging
import os
import shlex
from types import FrameType

import uvicorn

from nubis.home import DEFAULT_HOME, write_private
from nubis.photon.http_limits import MAX_HEAD_BYTES, LimitedHttpToolsProtocol
from nubis.photon.serve import configure_logging, run_until_signal
from nubis.server.app import build_context, create_app
from nubis.server.context import ServerContext
from nubis.server.settings import ServerSettings

log = logging.getLogger("nubis.server")


def describe(settings: ServerSettings) -> list[str]:
    """What ``nubis up`` prints first; with a home other than ``~/.nubis``, the line the CLI needs."""
    default_home = settings.home.expanduser().resolve() == DEFAULT_HOME.expanduser().resolve()
    reader = ("the CLI on this machine reads it" if default_home
              else "the CLI reads it after the export below")
    lines = [
        f"console     {settings.url}/  (log in with a token, or run `nubis console`)",
        f"API + docs  {settings.url}  ({settings.url}/docs)",
        f"gateway     {settings.gateway_url}/<workspace>/<deployment>/<handler>",
        f"admin token {settings.admin_token_file}  ({reader})",
        f"state       {settings.home}",
        f"database    {settings.db_url or settings.home / 'nubis.db'}",
        f"storage     {settings.storage}",
    ]
    if not default_home:
        lines.append(f"for the CLI in another shell: export NUBIS_HOME={shlex.quote(str(settings.home))}")
    return lines


class _Server(uvicorn.Server):
    """uvicorn's server that also tells the app it is stopping (the console's streams then end)."""

    def __init__(self, config: uvicorn.Config, ctx: ServerContext) -> None:
        super().__init__(config)
        self.ctx = ctx

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.ctx.stopping = True
        super().handle_exit(sig, frame)


def run(settings: ServerSettings, *, log_level: str = "info") -> int:
    configure_logging(log_level)
    ctx = build_context(settings)
    app = create_app(ctx)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, lifespan="on",
                            access_log=False, log_level=log_level, timeout_graceful_shutdown=30,
                            http=LimitedHttpToolsProtocol, h11_max_incomplete_event_size=MAX_HEAD_BYTES)
    server = _Server(config, ctx)
    info = {"url": settings.url, "gateway_url": settings.gateway_url, "pid": os.getpid(),
            "db_url": settings.db_url, "storage_url": settings.storage_url}  # what `nubis backup` reads
    write_private(settings.server_file, json.dumps(info).encode())
    for line in [*describe(settings), ctx.isolation]:
        log.info("%s", line)
    try:
        run_until_signal(server)
    finally:
        settings.server_file.unlink(missing_ok=True)
    return 0 if server.started else 1
