"""``python -m nubis.gateway``: serve deployments from a routing table (a URL or a file).

    python -m nubis.gateway --port 8090 --routes-url http://127.0.0.1:8000/api/v1/routes --token-file F
    python -m nubis.gateway --port 8090 --routes-file routes.json [--token-file F]

The token (towards the control plane, and the one ``/metrics`` asks for) is read from a file that
only its owner can read: neither the command line nor the environment shows it to other processes.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import socket
import sys
from pathlib import Path

import uvicorn

from nubis.gateway.metrics import GatewayMetrics
from nubis.gateway.proxy import GatewayApp, GatewaySettings
from nubis.gateway.routing import Router
from nubis.gateway.sources import FileSource, LoadReporter, URLSource
from nubis.photon.http_limits import LimitedHttpToolsProtocol
from nubis.photon.serve import configure_logging, run_until_signal

log = logging.getLogger("nubis.gateway")


def build_gateway(
    *,
    routes_url: str | None = None,
    routes_file: Path | None = None,
    token: str | None = None,
    report_url: str | None = None,
    settings: GatewaySettings | None = None,
    poll_interval: float = 1.0,
) -> GatewayApp:
    """The gateway app with its routing source and load reporter, started by the ASGI lifespan."""
    if (routes_url is None) == (routes_file is None):
        raise ValueError("give exactly one of routes_url and routes_file")
    metrics = GatewayMetrics()
    router = Router(metrics)
    settings = settings or GatewaySettings()
    reporter = LoadReporter(report_url, token, settings.gateway_id)

    async def startup(app: GatewayApp) -> list[asyncio.Task[None]]:
        assert app.session is not None
        if routes_file is not None:
            source = FileSource(routes_file, interval=min(poll_interval, 0.25))
            source.poll(router)  # serve the table from the first request on
            feed = source.run(router)
        else:
            url_source = URLSource(routes_url or "", token, poll_interval)
            await url_source.poll(app.session, router)
            feed = url_source.run(app.session, router)
        return [asyncio.create_task(feed, name="routes"),
                asyncio.create_task(reporter.run(app.session, router), name="load-report")]

    return GatewayApp(router, metrics, settings, startup=startup)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nubis.gateway", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--routes-url", help="control-plane URL that answers the routing table")
    source.add_argument("--routes-file", type=Path, help="JSON routing table, re-read on change")
    secret = parser.add_mutually_exclusive_group()
    secret.add_argument("--token-file", type=Path, default=None,
                        help="file holding the gateway's token: sent to --routes-url and "
                             "--report-url, and needed to read /metrics")
    secret.add_argument("--token", default=None,
                        help="the token itself (visible to `ps`: prefer --token-file)")
    parser.add_argument("--report-url", default=None, help="POST per-deployment load here every 1 s")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="seconds between polls")
    parser.add_argument("--max-tries", type=int, default=3,
                        help="replicas tried when connections are refused")
    parser.add_argument("--connections-per-replica", type=int, default=256)
    parser.add_argument("--gateway-id", default=socket.gethostname())
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    token = args.token
    if args.token_file is not None:
        try:
            token = args.token_file.read_text().strip() or None
        except OSError as exc:
            parser.error(f"cannot read --token-file {args.token_file}: {exc.strerror}")
    settings = GatewaySettings(
        max_tries=args.max_tries, connections_per_host=args.connections_per_replica,
        gateway_id=args.gateway_id,
        metrics_token_sha256=hashlib.sha256(token.encode()).hexdigest() if token else None,
    )
    app = build_gateway(routes_url=args.routes_url, routes_file=args.routes_file,
                        token=token, report_url=args.report_url, settings=settings,
                        poll_interval=args.poll_interval)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, loop="uvloop", http=LimitedHttpToolsProtocol,
        lifespan="on",
        access_log=False, proxy_headers=False, server_header=False, date_header=False,
        log_level=args.log_level, timeout_graceful_shutdown=10, backlog=2048,
    )
    source = args.routes_url or args.routes_file
    log.info("gateway on http://%s:%d, routes from %s", args.host, args.port, source)
    run_until_signal(uvicorn.Server(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
