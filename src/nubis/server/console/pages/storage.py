"""/storage: the workspace's files by folder — upload (a plain form, streamed; with JS a progress
bar), download, delete after a confirmation."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

import anyio.to_thread
from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from nubis.errors import CSRFError, ForbiddenError, ValidationError
from nubis.models.auth import Permission
from nubis.models.storage import StorageObject, normalize_path
from nubis.server.console.auth import CSRF_HEADER, ConsolePage, Page, Writer, same
from nubis.server.console.form_stream import StreamedForm
from nubis.server.console.paging import Paged, clamp_page
from nubis.server.console.responses import ConsoleRoute
from nubis.server.console.templating import render
from nubis.server.deps import Context, Session
from nubis.server.services import storage

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
StoragePath = Annotated[str, Query(max_length=4096)]
ROWS = 100


@dataclass(frozen=True)
class Folder:
    path: str
    name: str
    files: int
    size: int


def listing(prefix: str, found: list[StorageObject]) -> tuple[list[Folder], list[StorageObject]]:
    """The folders right under ``prefix`` (with what they hold) and the files right in it."""
    folders: dict[str, list[StorageObject]] = {}
    files = []
    for obj in found:
        rest = obj.path[len(prefix):]
        head, sep, _ = rest.partition("/")
        if sep:
            folders.setdefault(head, []).append(obj)
        else:
            files.append(obj)
    shown = [Folder(f"{prefix}{name}/", name, len(objs), sum(o.size for o in objs))
             for name, objs in sorted(folders.items())]
    return shown, files


def clean_folder(prefix: str) -> str:
    """``data//x`` → ``data/x/``; the root is ''."""
    clean = normalize_path(prefix, allow_empty=True)
    return f"{clean}/" if clean else ""


def crumbs(folder: str) -> list[tuple[str, str]]:
    parts = [p for p in folder.split("/") if p]
    return [(name, "/".join(parts[:i + 1]) + "/") for i, name in enumerate(parts)]


@router.get("/storage")
async def browse(request: Request, page: Page, ctx: Context, prefix: StoragePath = "",
                 n: Annotated[int, Query(alias="page", ge=1, le=1_000_000)] = 1) -> HTMLResponse:
    """Folders first, then files; ``ROWS`` entries a page."""
    folder = clean_folder(prefix)
    folders, files = listing(folder, await storage.list_files(ctx, page.caller, folder))
    total = len(folders) + len(files)
    pager = Paged(page=clamp_page(n, total, ROWS), total=total, size=ROWS, filters={"prefix": folder})
    start, end = pager.offset, pager.offset + ROWS
    first, last = max(0, start - len(folders)), max(0, end - len(folders))  # files after the folders
    return render(request, "storage.html", {
        "page": page, "folder": folder, "crumbs": crumbs(folder), "pager": pager,
        "folders": folders[start:end], "files": files[first:last]})


@router.get("/storage/download")
async def download(path: StoragePath, page: Page, session: Session, ctx: Context) -> StreamingResponse:
    found = await storage.open_download(session, ctx, page.caller, path)
    name = posixpath.basename(found.path)
    return StreamingResponse(found.chunks, media_type="application/octet-stream", headers={
        "content-length": str(found.size),
        "content-disposition": f"attachment; filename*=UTF-8''{quote(name, safe='')}",
    })


@router.post("/storage/upload")
async def upload(request: Request, page: Page, session: Session, ctx: Context) -> Response:
    """A ``multipart/form-data`` body: ``csrf`` and ``folder`` first (an HTML form sends its fields in
    order), then the file, streamed into storage once the token and the role are checked."""
    form = StreamedForm(request)
    filename = await form.read_until_file()
    check_upload(page, request.headers.get(CSRF_HEADER) or form.fields.get("csrf"))
    folder = clean_folder(form.fields.get("folder", ""))
    name = posixpath.basename(filename.replace("\\", "/"))
    if not name:
        raise ValidationError("the file has no name")
    await storage.put(session, ctx, page.caller, folder + name, form.file_chunks(), content_length=None)
    return to_folder(folder)


def check_upload(page: ConsolePage, csrf: str | None) -> None:
    """What :data:`~nubis.server.console.auth.Writer` checks, without reading the body first."""
    if not same(csrf, page.csrf):
        raise CSRFError("this form is missing the console's CSRF token (or has an old one): "
                        "reload the page and try again")
    if not page.caller.can(Permission.write):
        raise ForbiddenError(f"a {page.caller.role.value} token cannot write in workspace "
                             f"{page.caller.workspace!r}; ask an admin for a token with more rights")


@router.get("/storage/delete")
async def confirm_delete(request: Request, path: StoragePath, page: Page, ctx: Context) -> HTMLResponse:
    """Asks first, saying what would go: a file, or every file under a folder."""
    if not page.can_write:
        raise ForbiddenError(f"a {page.caller.role.value} token cannot delete files")
    clean = normalize_path(path)
    under = len(await storage.list_files(ctx, page.caller, clean + "/"))
    if not under:
        await anyio.to_thread.run_sync(storage.files(ctx, page.caller).info, clean)  # 404 when missing
    message = (f"This folder and the {under} file(s) in it are deleted for good." if under
               else "This file is deleted for good.")
    return render(request, "confirm.html", {
        "page": page, "title": f"Delete {clean}{'/' if under else ''}?", "message": message,
        "action": "/storage/delete", "fields": {"path": clean, **({"recursive": "true"} if under else {})},
        "back": f"/storage?prefix={quote(clean_folder(posixpath.dirname(clean)), safe='/')}"})


@router.post("/storage/delete")
async def delete(page: Writer, session: Session, ctx: Context,
                 path: Annotated[str, Form(max_length=4096)],
                 recursive: Annotated[bool, Form()] = False) -> Response:
    result = await storage.delete(session, ctx, page.caller, path, recursive=recursive)
    return to_folder(clean_folder(posixpath.dirname(result.path)))


def to_folder(folder: str) -> Response:
    return RedirectResponse(f"/storage?prefix={quote(folder, safe='/')}", status_code=303)
