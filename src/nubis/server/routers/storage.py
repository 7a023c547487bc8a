"""/api/v1/storage: a workspace's files. Bodies stream both ways (raw bytes, not multipart)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import ClientDisconnect

from nubis.errors import BadRequestError
from nubis.models.storage import DeleteResult, StorageObject, UploadResult
from nubis.server.deps import Context, Reader, Session, Writer
from nubis.server.services import storage


class AnyPathConvertor(Convertor[str]):
    """Starlette's ``path`` stops at a newline; this one does not, so such a path gets its 422
    from ``normalize_path`` like every other bad path (and not a 404 for a missing route)."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


# A named addition to Starlette's convertor table (routes look them up by name when defined).
register_url_convertor("anypath", AnyPathConvertor())
router = APIRouter(prefix="/api/v1/storage", tags=["storage"])

RAW_BODY = {"requestBody": {"required": True,
                            "content": {"application/octet-stream": {"schema": {"type": "string",
                                                                                 "format": "binary"}}}}}
RAW_RESPONSE = {200: {"content": {"application/octet-stream": {"schema": {"type": "string",
                                                                           "format": "binary"}}},
                      "description": "the file's bytes"}}


async def _body(request: Request) -> AsyncIterator[bytes]:
    try:
        async for chunk in request.stream():
            yield chunk
    except ClientDisconnect:
        raise BadRequestError("the client went away before the end of the upload; nothing was stored") \
            from None


@router.get("")
async def list_files(
    caller: Reader,
    ctx: Context,
    prefix: Annotated[str, Query(description="a folder ('data/') or the start of paths")] = "",
) -> list[StorageObject]:
    return await storage.list_files(ctx, caller, prefix)


@router.put("/{path:anypath}", status_code=201, openapi_extra=RAW_BODY)
async def put_file(
    path: str, request: Request, caller: Writer, session: Session, ctx: Context
) -> UploadResult:
    """Upload the raw request body to ``path`` (replacing any file there); returns its sha256."""
    return await storage.put(session, ctx, caller, path, _body(request),
                             content_length=request.headers.get("content-length"))


@router.get("/{path:anypath}", response_class=StreamingResponse, responses=RAW_RESPONSE)
async def get_file(path: str, caller: Reader, session: Session, ctx: Context) -> StreamingResponse:
    download = await storage.open_download(session, ctx, caller, path)
    return StreamingResponse(download.chunks, media_type="application/octet-stream",
                             headers={"content-length": str(download.size)})


@router.delete("/{path:anypath}")
async def delete_file(
    path: str,
    caller: Writer,
    session: Session,
    ctx: Context,
    recursive: Annotated[bool, Query(description="delete every file under a folder")] = False,
) -> DeleteResult:
    return await storage.delete(session, ctx, caller, path, recursive=recursive)
