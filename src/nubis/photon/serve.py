"""``python -m nubis.photon.serve TARGET``: serve one photon with uvicorn (locally and as a replica)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

import uvicorn

from nubis.errors import NubisError
from nubis.models.resources import parse_bytes
from nubis.photon.app import build_app
from nubis.photon.build import manifest_for
from nubis.photon.http_limits import MAX_HEAD_BYTES, LimitedHttpToolsProtocol
from nubis.photon.loader import load_photon
from nubis.photon.runtime import REPLICA_KEY_ENV, ServeSettings

log = logging.getLogger("nubis.photon")


def configure_logging(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)-9s %(message)s"))
    root = logging.getLogger("nubis")
    if not root.handlers:
        root.addHandler(handler)
    root.setLevel(level.upper())
    root.propagate = False


def serve(
    target: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8080,
    settings: ServeSettings | None = None,
    log_level: str = "info",
) -> int:
    """Serve until SIGINT/SIGTERM; returns the process exit code (1 if loading or init() failed)."""
    configure_logging(log_level)
    settings = settings or ServeSettings.from_env()
    os.environ.pop(REPLICA_KEY_ENV, None)  # kept in settings only: user code never sees it
    try:
        loaded = load_photon(target)
    except NubisError as exc:
        print(exc.message, file=sys.stderr)
        return 1
    manifest = loaded.manifest or manifest_for(loaded)
    app = build_app(loaded.cls, settings, manifest=manifest)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        access_log=False,
        log_level=log_level,
        timeout_graceful_shutdown=settings.graceful_timeout,
        http=LimitedHttpToolsProtocol,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
    )
    server = uvicorn.Server(config)
    init_failed: list[str] = []

    def stop_on_failure(error: str) -> None:
        init_failed.append(error)
        server.should_exit = True

    app.state.runtime.on_init_failed.append(stop_on_failure)
    paths = ", ".join(f"{h.method} {h.path}" for h in manifest.handlers) or "no handlers"
    log.info("photon %s on http://%s:%d — %s — docs at /docs", manifest.name, host, port, paths)
    run_until_signal(server)
    if init_failed or not server.started:
        return 1
    return 0


def run_until_signal(server: uvicorn.Server) -> None:
    """Serve until SIGINT/SIGTERM, drain, return (the process then exits 0, not by the signal).

    uvicorn drains, then re-raises the signal to the handler set before it started; a no-op
    handler there lets a drained shutdown end normally.
    """
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _drained)
    server.run()


def _drained(signum: int, frame: object) -> None:
    log.info("stopped after %s", signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nubis.photon.serve", description=__doc__)
    parser.add_argument("target", help="path.py, path.py:Class, a folder with photon.py, or a bundle")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN'")
    parser.add_argument("--max-body-size", default=None, help="e.g. 64Mi (default)")
    parser.add_argument("--debug", action="store_true", default=None, help="tracebacks in errors")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    settings = ServeSettings.from_env(
        token=args.token,
        debug=args.debug,
        max_body_size=parse_bytes(args.max_body_size) if args.max_body_size else None,
    )
    return serve(args.target, host=args.host, port=args.port, settings=settings,
                 log_level=args.log_level)


if __name__ == "__main__":
    sys.exit(main())
