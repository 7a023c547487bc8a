"""``nubis photon …``: run a photon locally, build a bundle, call a running photon; the registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from nubis.cli import render
from nubis.client.client import Client
from nubis.client.photon import PhotonClient
from nubis.client.photons import parse_ref
from nubis.errors import BadRequestError
from nubis.models.resources import parse_bytes
from nubis.photon.build import build_bundle
from nubis.photon.runtime import ServeSettings
from nubis.photon.serve import serve

app = typer.Typer(help="Write, run and package photons (model services as Python classes).",
                  no_args_is_help=True)

Target = Annotated[str, typer.Argument(help="path.py, path.py:Class, a folder with photon.py, or a bundle")]


@app.command("run")
def run(
    target: Target,
    host: Annotated[str, typer.Option(help="address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to serve on")] = 8080,
    token: Annotated[str | None, typer.Option(envvar="NUBIS_PHOTON_TOKEN",
                                              help="require this bearer token")] = None,
    max_body_size: Annotated[str | None, typer.Option(help="request body limit, e.g. 64Mi")] = None,
    debug: Annotated[bool, typer.Option(help="include tracebacks in error bodies")] = False,
) -> None:
    """Serve a photon on this machine until Ctrl-C."""
    settings = ServeSettings.from_env(
        token=token,
        debug=debug or None,
        max_body_size=parse_bytes(max_body_size) if max_body_size else None,
    )
    raise typer.Exit(serve(target, host=host, port=port, settings=settings))


@app.command("build")
def build(
    target: Target,
    output: Annotated[Path | None, typer.Option("--output", "-o",
                                                help="bundle file (default NAME.photon)")] = None,
    output_format: Annotated[str, typer.Option("--format", help="table or json")] = "table",
) -> None:
    """Package a photon's folder and manifest.json into a bundle (a zip; no pickle)."""
    path, manifest = build_bundle(target, output)
    if output_format == "json":
        render.as_json({"path": str(path), **manifest.model_dump(mode="json")})
        return
    render.success(f"built {path} — {manifest.name}, {len(manifest.handlers)} handlers, "
                   f"sha256 {manifest.content_hash[:12] if manifest.content_hash else '?'}")
    render.table("handlers", ["name", "method", "path", "batch", "streaming"], [
        [h.name, h.method, h.path, h.max_batch_size if h.max_batch_size > 1 else "-",
         "yes" if h.streaming else "-"]
        for h in manifest.handlers
    ])


@app.command("call")
def call(
    url: Annotated[str, typer.Argument(help="the photon's URL, e.g. http://127.0.0.1:8080")],
    handler: Annotated[str, typer.Argument(help="handler name")],
    data: Annotated[str, typer.Option("--data", "-d", help="JSON object of parameters")] = "{}",
    token: Annotated[str | None, typer.Option(envvar="NUBIS_PHOTON_TOKEN")] = None,
) -> None:
    """Call one handler of a running photon and print the result as JSON."""
    try:
        params = json.loads(data)
    except ValueError:
        raise BadRequestError("--data must be a JSON object, e.g. '{\"text\": \"hi\"}'") from None
    if not isinstance(params, dict):
        raise BadRequestError("--data must be a JSON object of the handler's parameters")
    with PhotonClient(url, token) as client:
        result = client.call(handler, **params)
        if client.handler_info(handler).streaming:
            for item in result:
                render.as_json(item)
        elif hasattr(result, "data"):
            render.line(f"{len(result.data)} bytes of {result.content_type}")
        else:
            render.as_json(result)


Output = Annotated[str, typer.Option("--output", "-o", help=render.OUTPUT_HELP)]
Ref = Annotated[str, typer.Argument(help="NAME or NAME:VERSION (VERSION may be 'latest')")]


@app.command("push")
def push(target: Target, output: Output = "table") -> None:
    """Push a photon to the registry: a folder or file is built into a bundle first."""
    with Client() as client:
        pushed = client.photons.push(target)
    if render.check_output(output) == "json":
        render.as_json(pushed.model_dump(mode="json"))
    elif pushed.unchanged:
        render.success(f"{pushed.ref} is already the latest version (sha256 {pushed.content_hash[:12]}); "
                       "nothing changed")
    else:
        render.success(f"pushed {pushed.ref} (sha256 {pushed.content_hash[:12]})")


@app.command("list")
def list_(
    name: Annotated[str | None, typer.Argument(help="list this photon's versions")] = None,
    output: Output = "table",
) -> None:
    """Photons in the registry (latest versions), or every version of one."""
    with Client() as client:
        if name is not None:
            render.models(f"versions of {name}", client.photons.versions(name),
                          ["ref", "content_hash", "size", "created_at", "created_by"], output)
            return
        photons = client.photons.list()
    if render.check_output(output) == "json":
        render.as_json([p.model_dump(mode="json") for p in photons])
        return
    render.table("photons", ["name", "latest", "versions", "handlers", "pushed", "by"], [
        [p.name, p.latest, p.versions, ", ".join(p.handlers), f"{p.created_at:%Y-%m-%d %H:%M}", p.created_by]
        for p in photons
    ])


@app.command("get")
def get(ref: Ref, output: Output = "table") -> None:
    """Show one version; ``--output json`` prints its manifest."""
    name, version = parse_ref(ref)
    with Client() as client:
        detail = client.photons.get(name, version or "latest")
    if render.check_output(output) == "json":
        render.as_json(detail.manifest.model_dump(mode="json"))
        return
    render.line((detail.ref, "bold"), f"  sha256 {detail.content_hash[:12]} · {detail.size} bytes · "
                f"pushed {detail.created_at:%Y-%m-%d %H:%M} by {detail.created_by or '-'}")
    render.line(f"entrypoint {detail.manifest.entrypoint} · requirements "
                f"{', '.join(detail.requirements) or '-'}")
    render.table("handlers", ["name", "method", "path", "batch", "streaming"], [
        [h.name, h.method, h.path, h.max_batch_size if h.max_batch_size > 1 else "-",
         "yes" if h.streaming else "-"]
        for h in detail.handlers
    ])


@app.command("delete")
def delete(ref: Ref, yes: Annotated[bool, typer.Option("--yes", help="do not ask")] = False) -> None:
    """Delete one version (NAME:VERSION), or every version of a photon (NAME)."""
    name, version = parse_ref(ref)
    if version is None and not yes:
        typer.confirm(f"delete every version of photon {name!r}?", abort=True)
    with Client() as client:
        client.photons.delete(name, version)
    render.success(f"deleted {ref}" if version else f"deleted every version of {name}")
