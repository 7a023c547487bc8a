"""``nubis secret …``: values go in (stdin, a hidden prompt or an env var) and are never printed."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from nubis.cli import render
from nubis.client.client import Client
from nubis.errors import BadRequestError, ValidationError
from nubis.models.secrets import SECRET_NAME_RULE, is_valid_secret_name

app = typer.Typer(help="Secrets: stored encrypted, injected into workloads, never shown again.",
                  no_args_is_help=True)
Output = Annotated[str, typer.Option("--output", "-o", help=render.OUTPUT_HELP)]


def read_value(name: str, from_env: str | None) -> str:
    """The value from ``$from_env``, else stdin when piped, else a hidden prompt typed twice."""
    if not is_valid_secret_name(name):  # before asking for a value that would be refused
        raise ValidationError(f"invalid secret name {name!r}: {SECRET_NAME_RULE}")
    if from_env:
        value = os.environ.get(from_env)
        if value is None:
            raise BadRequestError(f"--from-env: the environment variable {from_env} is not set")
    elif not sys.stdin.isatty():
        value = sys.stdin.read().removesuffix("\n").removesuffix("\r")
    else:
        value = typer.prompt(f"value of {name}", hide_input=True, confirmation_prompt=True)
    if not value:
        raise BadRequestError(f"the value of {name} is empty: pipe it on stdin, type it, or use --from-env")
    return value


@app.command("set")
def set_(
    name: Annotated[str, typer.Argument(help="e.g. HF_TOKEN (letters, digits and '_')")],
    from_env: Annotated[str | None, typer.Option(
        "--from-env", metavar="VAR", help="take the value from this environment variable")] = None,
) -> None:
    """Create or replace a secret. The value comes from stdin when piped, else a hidden prompt."""
    value = read_value(name, from_env)
    with Client() as client:
        secret = client.secrets.set(name, value)
    verb = "updated" if secret.updated_at != secret.created_at else "set"
    render.success(f"{verb} secret {secret.name}")


@app.command("list")
def list_(output: Output = "table") -> None:
    """Names and dates of this workspace's secrets (never their values)."""
    with Client() as client:
        render.models("secrets", client.secrets.list(), ["name", "created_at", "updated_at"], output)


@app.command("delete")
def delete(name: str) -> None:
    """Delete a secret."""
    with Client() as client:
        client.secrets.delete(name)
    render.success(f"deleted secret {name}")
