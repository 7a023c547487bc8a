"""``nubis up``, ``nubis login``, ``nubis whoami``."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from nubis.cli import render
from nubis.client.client import Client
from nubis.client.config import Credentials, save_login
from nubis.home import nubis_home
from nubis.models.durations import parse_duration
from nubis.server.main import run
from nubis.server.settings import DEFAULT_GATEWAY_PORT, DEFAULT_PORT, ServerSettings

Output = Annotated[str, typer.Option("--output", "-o", help=render.OUTPUT_HELP)]


class BackendName(StrEnum):
    local = "local"
    ray = "ray"


def up(
    home: Annotated[Path | None, typer.Option(help="state folder (default $NUBIS_HOME or ~/.nubis)")] = None,
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="API and console port")] = DEFAULT_PORT,
    gateway_port: Annotated[int, typer.Option(help="the gateway's port (deployments' endpoints)")] = (
        DEFAULT_GATEWAY_PORT),
    db: Annotated[str | None, typer.Option("--db", help="database URL (default: SQLite in home)")] = None,
    storage: Annotated[str | None, typer.Option(help="storage URL: a folder or s3://bucket/prefix")] = None,
    trust_members: Annotated[bool, typer.Option(
        "--trust-members", help="run workloads unsandboxed: members are then as trusted as admins "
                                "(needed for several workspaces where no sandbox is possible)")] = False,
    backend: Annotated[BackendName, typer.Option(
        help="where workloads run: this machine, or a Ray cluster (needs nubis's ray extra)")] = (
        BackendName.local),
    ray_address: Annotated[str, typer.Option(
        help="with --backend ray: the cluster's address ('auto': the one `ray start` runs here)")] = "auto",
    advertise_url: Annotated[str | None, typer.Option(
        help="how workloads on other machines reach the API, e.g. http://10.0.0.5:8400 "
             "(default: this machine's --host and --port)")] = None,
    shared_storage: Annotated[bool, typer.Option(
        "--shared-storage", help="with --backend ray: the --storage folder is mounted at the same path on "
                                 "every node (else use S3)")] = False,
    backup_every: Annotated[str | None, typer.Option(
        help="write a backup archive this often, e.g. 6h or 1d (see nubis backup)")] = None,
    backup_keep: Annotated[int, typer.Option(min=1, help="with --backup-every: archives to keep")] = 14,
    backup_dir: Annotated[Path | None, typer.Option(
        help="with --backup-every: where archives go (default: the home's backups/)")] = None,
    alert_interval: Annotated[str, typer.Option(
        help="how often the alert rules are evaluated, e.g. 15s (see nubis alert)")] = "15s",
    alert_retry: Annotated[str, typer.Option(
        help="the first wait before a failed webhook delivery is retried (it doubles each time)")] = "2s",
) -> None:
    """Start the nubis platform on this machine (Ctrl-C stops it)."""
    backup_every_s = (parse_duration(backup_every, name="--backup-every", low=1)
                      if backup_every is not None else None)
    alert_interval_s = parse_duration(alert_interval, name="--alert-interval", low=1)
    alert_retry_s = parse_duration(alert_retry, name="--alert-retry", low=1)
    settings = ServerSettings(home=home or nubis_home(), host=host, port=port, db_url=db,
                              storage_url=storage, gateway_port=gateway_port, start_gateway=True,
                              trust_members=trust_members, backend=backend.value, ray_address=ray_address,
                              shared_storage=shared_storage, advertise_url=advertise_url,
                              backup_every_s=backup_every_s,
                              backup_keep=backup_keep, backup_dir=backup_dir,
                              alert_interval_s=alert_interval_s, alert_retry_s=alert_retry_s)
    raise typer.Exit(run(settings))


def login(
    url: Annotated[str, typer.Option(help="the server, e.g. http://10.0.0.5:8400")],
    token: Annotated[str, typer.Option(prompt=True, hide_input=True, help="an API token")],
    workspace: Annotated[str | None, typer.Option(help="act in this workspace")] = None,
) -> None:
    """Check a token against a server and store it for later commands."""
    credentials = Credentials(url=url.rstrip("/"), token=token, workspace=workspace)
    with Client(credentials.url, credentials.token, workspace=workspace) as client:
        me = client.whoami()
    path = save_login(credentials)
    render.success(f"logged in to {url} as {me.token_name} ({me.role.value} in {me.workspace}); "
                   f"saved to {path}")


def whoami(output: Output = "table") -> None:
    """Show the token in use: its name, workspace and role."""
    with Client() as client:
        me = client.whoami()
        if render.check_output(output) == "json":
            render.as_json({**me.model_dump(mode="json"), "url": client.url})
        else:
            render.line(f"{me.token_name} · {me.role.value} in workspace {me.workspace}"
                        f"{' · platform admin' if me.superuser else ''} · {client.url}")
