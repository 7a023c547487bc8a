"""Entry point of the ``nubis`` command: every NubisError becomes one line and exit code 1."""

from __future__ import annotations

import sys

import typer

from nubis._version import __version__
from nubis.cli import (
    alerts,
    backup,
    console,
    deployments,
    jobs,
    llm,
    models,
    nodes,
    photon,
    render,
    secrets,
    storage,
    tokens,
    up,
    usage,
    workspaces,
)
from nubis.errors import NubisError

app = typer.Typer(help="nubis: a self-hostable AI cloud.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
app.command()(up.up)
app.command()(up.login)
app.command()(up.whoami)
app.add_typer(photon.app, name="photon")
app.command("deploy")(deployments.deploy)
app.add_typer(deployments.app, name="deployment")
app.add_typer(jobs.app, name="job")
app.command("train")(models.train)
app.add_typer(models.app, name="model")
app.add_typer(llm.app, name="llm")
app.add_typer(workspaces.app, name="workspace")
app.add_typer(tokens.app, name="token")
app.add_typer(secrets.app, name="secret")
app.add_typer(storage.app, name="storage")
app.add_typer(nodes.app, name="node")
app.command("audit")(tokens.audit)
app.add_typer(backup.app, name="backup")
app.add_typer(alerts.app, name="alert")
app.command("usage")(usage.usage)
app.command("console")(console.console)


@app.command()
def version() -> None:
    """Print the nubis version."""
    render.out.print(__version__)


def main() -> None:
    try:
        app()
    except NubisError as exc:
        render.error(exc)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
