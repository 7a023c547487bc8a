"""``nubis storage …``: put, ls, get and rm the files of your workspace."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from nubis.cli import render
from nubis.client.client import Client
from nubis.client.storage import local_files
from nubis.errors import BadRequestError, ConflictError, NotFoundError
from nubis.models.storage import StorageObject, UploadResult, format_bytes, normalize_path

app = typer.Typer(help="Files in your workspace's storage: datasets, checkpoints, models.",
                  no_args_is_help=True)
Output = Annotated[str, typer.Option("--output", "-o", help=render.OUTPUT_HELP)]


@contextlib.contextmanager
def _local_errors() -> Iterator[None]:
    """A local file that cannot be read or written is one readable line too, not a traceback."""
    try:
        yield
    except OSError as exc:
        raise BadRequestError(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")) from None


@app.command("put")
def put(
    local: Annotated[Path, typer.Argument(help="a file, or a folder to upload with all its files")],
    remote: Annotated[str | None, typer.Argument(help="where to put it (default: its name); "
                                                       "'data/' puts a file into data/")] = None,
    output: Output = "table",
) -> None:
    """Upload a file or a folder; prints each file's sha256."""
    render.check_output(output)
    target = local.name if remote is None else remote
    with Client() as client, _local_errors():
        if local.is_dir():
            results = _put_dir(client, local, target)
        elif local.is_file():
            if target.endswith("/"):
                target += local.name
            with render.transfer(local.name, local.stat().st_size) as advance:
                results = [client.storage.put(target, local, progress=advance)]
        else:
            raise NotFoundError(f"no local file or folder {local}")
    _print_uploads(results, output)


def _put_dir(client: Client, local: Path, remote: str) -> list[UploadResult]:
    files = local_files(local)
    if not files:
        raise NotFoundError(f"{local} has no files to upload")
    total = sum(path.stat().st_size for path, _ in files)
    with render.transfer(f"{len(files)} files", total) as advance:
        return client.storage.put_dir(remote, local, progress=advance)


def _print_uploads(results: list[UploadResult], output: str) -> None:
    if output == "json":
        render.as_json([r.model_dump(mode="json") for r in results])
        return
    for r in results:
        render.success(f"{r.path}  {format_bytes(r.size)}  sha256 {r.sha256}")


@app.command("ls")
def ls(
    prefix: Annotated[str, typer.Argument(help="a folder ('data/') or the start of paths")] = "",
    output: Output = "table",
) -> None:
    """List files, recursively, with their sizes."""
    render.check_output(output)
    with Client() as client:
        found = client.storage.list(prefix)
    if output == "json":
        render.as_json([o.model_dump(mode="json") for o in found])
        return
    rows = [[o.path, format_bytes(o.size), f"{o.modified:%Y-%m-%d %H:%M}" if o.modified else "-"]
            for o in found]
    total = format_bytes(sum(o.size for o in found))
    render.table(f"{len(found)} files, {total}", ["path", "size", "modified"], rows)


@app.command("get")
def get(
    remote: Annotated[str, typer.Argument(help="a file, or a folder to download with all its files")],
    local: Annotated[Path, typer.Argument(help="where to write it (default: here)")] = Path("."),
) -> None:
    """Download a file, or every file under a folder."""
    clean = normalize_path(remote)
    with Client() as client, _local_errors():
        found = client.storage.list(clean)
        match = next((o for o in found if o.path == clean), None)
        if match is not None:
            with render.transfer(Path(clean).name, match.size) as advance:
                written = client.storage.get(clean, local, progress=advance)
            render.success(f"{clean} → {written}  {format_bytes(match.size)}")
            return
        _get_dir(client, clean, local, [o for o in found if o.path.startswith(clean + "/")])


def _get_dir(client: Client, remote: str, local: Path, objects: list[StorageObject]) -> None:
    if not objects:
        raise NotFoundError(f"no file or folder {remote!r} in storage; see `nubis storage ls`")
    total = sum(o.size for o in objects)
    with render.transfer(f"{len(objects)} files", total) as advance:
        written = client.storage.get_dir(remote, local, progress=advance)
    render.success(f"{remote}/ → {local}  {len(written)} files, {format_bytes(total)}")


@app.command("rm")
def rm(
    path: str,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="every file under a folder")] = False,
) -> None:
    """Delete a file, or with --recursive a folder and everything in it."""
    with Client() as client:
        try:
            result = client.storage.delete(path, recursive=recursive)
        except ConflictError as exc:  # the API's words are `recursive=true`; the CLI's are --recursive
            folder = exc.details.get("folder") if isinstance(exc.details, dict) else None
            if folder is None:
                raise
            raise ConflictError(f"{folder!r} is a folder: add --recursive to delete it and everything in it",
                                details=exc.details) from None
    what = "1 file" if result.deleted == 1 else f"{result.deleted} files"
    render.success(f"deleted {what} at {result.path}")
