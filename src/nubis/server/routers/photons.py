"""/api/v1/photons — the photon registry: push bundles, list, get manifests, download, delete."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from nubis.models.photons import PhotonSummary, PhotonVersion, PhotonVersionDetail, PushedPhoton
from nubis.server.deps import Context, Reader, Session, Writer
from nubis.server.services import photons

router = APIRouter(prefix="/api/v1/photons", tags=["photons"])

_BUNDLE_BODY = {
    "requestBody": {
        "required": True,
        "description": "the bundle zip (`nubis photon build`), as the raw body",
        "content": {media: {"schema": {"type": "string", "format": "binary"}}
                    for media in ("application/zip", "application/octet-stream")},
    }
}


@router.post("", status_code=201, openapi_extra=_BUNDLE_BODY,
             responses={200: {"description": "the same content already was the latest version"}})
async def push_photon(
    request: Request, response: Response, caller: Writer, session: Session, ctx: Context
) -> PushedPhoton:
    """Push a bundle: it becomes the name's next version (201), or, unchanged, the latest (200)."""
    pushed = await photons.push(
        session, caller, ctx.store, request.stream(),
        content_type=request.headers.get("content-type"),
        content_length=request.headers.get("content-length"),
    )
    if pushed.unchanged:
        response.status_code = 200
    return pushed


@router.get("")
async def list_photons(caller: Reader, session: Session) -> list[PhotonSummary]:
    """Each photon's latest version, with its number of versions."""
    return await photons.list_photons(session, caller)


@router.get("/{name}")
async def list_versions(name: str, caller: Reader, session: Session) -> list[PhotonVersion]:
    return await photons.list_versions(session, caller, name)


@router.get("/{name}/{version}")
async def get_photon(name: str, version: str, caller: Reader, session: Session) -> PhotonVersionDetail:
    """One version with its full manifest; ``version`` may be ``latest``."""
    return await photons.get(session, caller, name, version)


@router.get("/{name}/{version}/bundle", response_class=StreamingResponse,
            responses={200: {"content": {"application/zip": {}}}})
async def download_bundle(
    name: str, version: str, caller: Reader, session: Session, ctx: Context
) -> StreamingResponse:
    bundle = await photons.open_bundle(session, caller, ctx.store, name, version)
    return StreamingResponse(bundle.chunks, media_type="application/zip", headers={
        "content-length": str(bundle.size),
        "content-disposition": f'attachment; filename="{bundle.filename}"',
        "x-nubis-content-hash": bundle.content_hash,
    })


@router.delete("/{name}/{version}", status_code=204)
async def delete_version(name: str, version: str, caller: Writer, session: Session, ctx: Context) -> None:
    await photons.delete_version(session, caller, ctx.store, name, version)


@router.delete("/{name}", status_code=204)
async def delete_photon(name: str, caller: Writer, session: Session, ctx: Context) -> None:
    """Delete every version of the photon and their bundles."""
    await photons.delete_all(session, caller, ctx.store, name)
