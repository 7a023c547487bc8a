"""Receiving and checking a pushed bundle before anything is stored.

A bundle is accepted only when it is a zip with a valid ``manifest.json``, safe member paths,
source files whose hash matches the manifest's, the entrypoint file among them, and handlers
that its source defines (``photon_handlers``, read with ``ast``, never imported).
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import zipfile
import zlib
from collections.abc import AsyncIterator
from typing import IO, Any

import pydantic

from nubis.errors import BundleError, PayloadTooLargeError, UnsupportedMediaTypeError
from nubis.models.photons import MANIFEST_FORMAT, PHOTON_NAME_PATTERN, PhotonManifest
from nubis.photon.bundle import MANIFEST, is_safe_member
from nubis.server.services import photon_handlers

MAX_BUNDLE_BYTES = 512 * 2**20
MAX_SOURCE_BYTES = 2**30
MAX_MANIFEST_BYTES = 2**20
MAX_MEMBERS = 50_000
SPOOL_IN_MEMORY = 8 * 2**20
CHUNK = 2**20
BUNDLE_TYPES = frozenset({"application/zip", "application/x-zip-compressed", "application/octet-stream"})
HOW_TO_BUILD = "push a folder with `nubis photon push DIR`, or a bundle from `nubis photon build`"

_NAME = re.compile(PHOTON_NAME_PATTERN)
_DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError, OSError)


async def receive(
    chunks: AsyncIterator[bytes],
    *,
    content_type: str | None,
    content_length: str | None,
    limit: int = MAX_BUNDLE_BYTES,
) -> tuple[IO[bytes], int]:
    """Spool a request body (memory, then disk) up to ``limit`` bytes; returns (file, size)."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media not in BUNDLE_TYPES:
        raise UnsupportedMediaTypeError(
            f"send the bundle as the raw body with content-type application/zip, not {media or 'none'!r}"
        )
    too_large = PayloadTooLargeError(f"the bundle is larger than {limit // 2**20} MiB: bundles "
                                     "carry source, not data; put data and weights in storage")
    if content_length and content_length.isdigit() and int(content_length) > limit:
        raise too_large
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)  # noqa: SIM115 - caller closes
    size = 0
    try:
        async for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise too_large
            spool.write(chunk)
    except BaseException:
        spool.close()
        raise
    if size == 0:
        spool.close()
        raise BundleError(f"the request body is empty: {HOW_TO_BUILD}")
    spool.seek(0)
    return spool, size


def validate(fh: IO[bytes]) -> PhotonManifest:
    """The bundle's manifest, once every check passed; else :class:`BundleError` (422)."""
    fh.seek(0)
    try:
        zf = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, OSError):
        raise BundleError(f"the body is not a zip file: {HOW_TO_BUILD}") from None
    with zf:
        try:
            manifest = _manifest(zf)
            members = [m for m in zf.infolist() if not m.is_dir() and m.filename != MANIFEST]
            _check_members(members)
            _check_entrypoint(manifest, {m.filename for m in members})
            digest = _hash(zf, members)
            if digest == manifest.content_hash:  # the source is the one built: read its handlers
                photon_handlers.check_handlers(zf, manifest, [m.filename for m in members])
        except _DAMAGED as exc:
            raise BundleError(f"the bundle is damaged: {exc}") from None
    if digest != manifest.content_hash:
        raise BundleError(
            f"content hash {digest[:12]} does not match the manifest's {manifest.content_hash[:12]}: "
            "a file was changed after the bundle was built, or the bundle is damaged"
        )
    return manifest


def _manifest(zf: zipfile.ZipFile) -> PhotonManifest:
    try:
        info = zf.getinfo(MANIFEST)
    except KeyError:
        raise BundleError(f"the bundle has no {MANIFEST}: {HOW_TO_BUILD}") from None
    if info.file_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{MANIFEST} is larger than {MAX_MANIFEST_BYTES // 2**20} MiB")
    try:
        manifest = PhotonManifest.model_validate_json(zf.read(info))
    except pydantic.ValidationError as exc:
        raise BundleError(f"invalid {MANIFEST}: {_first_error(exc)}") from None
    if manifest.format > MANIFEST_FORMAT:
        raise BundleError(f"{MANIFEST} has format {manifest.format}; this server reads format "
                          f"{MANIFEST_FORMAT}: upgrade the server")
    if not _NAME.fullmatch(manifest.name):
        raise BundleError(f"invalid photon name {manifest.name[:100]!r}: use lower-case letters, "
                          "digits and '-', at most 63 characters")
    if not manifest.handlers:
        raise BundleError(f"{MANIFEST} lists no handlers: a photon needs at least one @handler")
    if not manifest.content_hash:
        raise BundleError(f"{MANIFEST} has no content_hash: {HOW_TO_BUILD}")
    return manifest


def _first_error(exc: pydantic.ValidationError) -> str:
    error: dict[str, Any] = dict(exc.errors()[0])
    where = ".".join(str(p) for p in error.get("loc", ()))
    return f"{where}: {error['msg']}" if where else str(error["msg"])


def _check_members(members: list[zipfile.ZipInfo]) -> None:
    if len(members) > MAX_MEMBERS:
        raise BundleError(f"the bundle holds {len(members)} files; at most {MAX_MEMBERS}")
    unsafe = sorted(m.filename for m in members if not is_safe_member(m.filename))
    if unsafe:
        raise BundleError(f"unsafe paths in the bundle: {unsafe[:5]}")
    names = [m.filename for m in members]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise BundleError(f"the bundle holds the same path twice: {dup[:5]}")
    total = sum(m.file_size for m in members)
    if total > MAX_SOURCE_BYTES:
        raise BundleError(f"the bundle unpacks to {total} bytes; at most {MAX_SOURCE_BYTES}")


def _check_entrypoint(manifest: PhotonManifest, files: set[str]) -> None:
    rel, _, class_name = manifest.entrypoint.partition(":")
    if not rel.endswith(".py") or not class_name.isidentifier():
        raise BundleError(f"bad entrypoint {manifest.entrypoint!r}: expected '<file>.py:<Class>'")
    if rel not in files:
        raise BundleError(f"the entrypoint file {rel!r} is not in the bundle")


def _hash(zf: zipfile.ZipFile, members: list[zipfile.ZipInfo]) -> str:
    """:func:`nubis.photon.bundle.content_hash`, streamed: sha256 over (path, size, bytes)."""
    h = hashlib.sha256()
    for member in sorted(members, key=lambda m: m.filename):
        h.update(member.filename.encode())
        h.update(b"\0%d\0" % member.file_size)
        read = 0
        with zf.open(member) as src:
            while data := src.read(CHUNK):
                h.update(data)
                read += len(data)
        if read != member.file_size:
            raise BundleError(f"the bundle is damaged: {member.filename} is truncated")
    return h.hexdigest()
