"""``nubis token …`` and ``nubis audit``"""

from __future__ import annotations

from typing import Annotated

import typer

from nubis.cli import render
from nubis.client.client import Client
from nubis.models.auth import Role
from nubis.models.durations import parse_duration

app = typer.Typer(help="API tokens: shown once, stored hashed, expiring, revocable.", no_args_is_help=True)
Output = Annotated[str, typer.Option("--output", "-o", help=render.OUTPUT_HELP)]
@app.command("create")
def create(
    name: Annotated[str, typer.Option(help="a label for the token")] = "token",
    role: Annotated[Role, typer.Option(help="admin, member or viewer")] = Role.member,
    workspace: Annotated[str | None, typer.Option(help="default: your token's workspace")] = None,
    expires: Annotated[str | None, typer.Option(help="lifetime, e.g. 30d")] = None,
    deployment: Annotated[str | None, typer.Option(help="only call this deployment (no API access)")] = None,
    output: Output = "table",
) -> None:
    """Create a token; its secret is printed once."""
    with Client() as client:
        created = client.tokens.create(
            name, role=role, workspace=workspace,
            expires_in_seconds=round(parse_duration(expires, name="--expires", low=1)) if expires else None,
            deployment=deployment,
        )
    if render.check_output(output) == "json":
        render.as_json(created.model_dump(mode="json"))
        return
    render.success(f"token {created.name} ({created.role.value} in {created.workspace}) — "
                   "copy it now, it is not shown again:")
    render.line(created.token)


Workspace = Annotated[str | None, typer.Option(
    help="another workspace's tokens (the platform admin); default: your token's workspace")]
COLUMNS = ["id", "name", "role", "prefix", "created_at", "expires_at", "revoked_at"]
SHOWN_ID = 8  # `nubis token revoke` takes these characters (any unique start of the id)


@app.command("list")
def list_(workspace: Workspace = None, output: Output = "table") -> None:
    """Tokens of a workspace (never their secrets); revoke one by the id shown."""
    render.check_output(output)
    with Client(workspace=workspace) as client:
        found = client.tokens.list()
    if output == "json":
        render.as_json([t.model_dump(mode="json") for t in found])
        return
    rows = [[t.id[:SHOWN_ID], *(render.cell(getattr(t, c)) for c in COLUMNS[1:])] for t in found]
    title = f"tokens of {found[0].workspace}" if found else "tokens"
    render.table(title, COLUMNS, rows, keep=("id", "prefix"))


@app.command("revoke")
def revoke(
    token_id: Annotated[str, typer.Argument(help="the id `nubis token list` shows (any unique start of "
                                                 "the id, at least 4 characters) or the token's prefix")],
    workspace: Workspace = None,
    output: Output = "table",
) -> None:
    """Revoke a token at once."""
    with Client(workspace=workspace) as client:
        render.model(client.tokens.revoke(token_id), output)


def audit(
    limit: Annotated[int, typer.Option(help="how many events")] = 50,
    action: Annotated[str | None, typer.Option(help="e.g. secret.set")] = None,
    output: Output = "table",
) -> None:
    """Who changed what, when (admins)."""
    with Client() as client:
        render.models("audit", client.audit.list(limit=limit, action=action),
                      ["at", "actor", "action", "target"], output)
