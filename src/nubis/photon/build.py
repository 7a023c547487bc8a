"""``nubis photon build``: make a bundle from a photon file or folder."""

from __future__ import annotations

import os
import sys
import tempfile
import zipfile
from datetime import UTC, datetime
from pathlib import Path

from nubis._version import __version__
from nubis.errors import BundleError
from nubis.models.photons import PhotonManifest
from nubis.photon.bundle import MANIFEST, content_hash, source_files
from nubis.photon.loader import LoadedPhoton, load_photon, split_target

MAX_BUNDLE_BYTES = 1 << 30


def build_bundle(target: str, out: Path | None = None) -> tuple[Path, PhotonManifest]:
    """Zip the photon at ``target`` (file, file:Class or folder) with its manifest."""
    path, _ = split_target(target)
    if path.is_file() and zipfile.is_zipfile(path):
        raise BundleError(f"{path} is already a bundle")
    loaded = load_photon(target)
    files = [(rel, full.read_bytes()) for rel, full in source_files(loaded.root)]
    total = sum(len(data) for _, data in files)
    if total > MAX_BUNDLE_BYTES:
        raise BundleError(
            f"{loaded.root} holds {total} bytes: bundles carry source, not data; "
            "put data and weights in storage"
        )
    manifest = manifest_for(loaded, content_hash(files))
    out = out or Path(f"{manifest.name}.photon")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(MANIFEST, manifest.model_dump_json(indent=2))
            for rel, data in files:
                zf.writestr(rel, data)
        os.replace(tmp, out)  # atomic: no half-written bundle is ever visible
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out, manifest


def manifest_for(loaded: LoadedPhoton, digest: str | None = None) -> PhotonManifest:
    cls = loaded.cls
    return PhotonManifest(
        name=cls.photon_name(),
        entrypoint=loaded.entrypoint,
        handlers=cls.handler_infos(),
        requirements=list(cls.requirements),
        resources=cls.resources,
        content_hash=digest,
        nubis_version=__version__,
        python_version=sys.version.split()[0],
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
