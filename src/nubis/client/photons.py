"""``client.photons``: the photon registry (push, list, get, download, delete)."""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import httpx

from nubis.client.base import API, ResourceAPI, raise_for_error
from nubis.errors import ConnectionFailedError
from nubis.models.photons import PhotonSummary, PhotonVersion, PhotonVersionDetail, PushedPhoton
from nubis.photon.build import build_bundle
from nubis.photon.loader import split_target

CHUNK = 1 << 20


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``"echo:2"`` → ("echo", "2"); ``"echo"`` → ("echo", None)."""
    name, _, version = ref.partition(":")
    return name, version or None


class PhotonsAPI(ResourceAPI):
    def push(self, target: str | os.PathLike[str]) -> PushedPhoton:
        """Push a photon: a folder, ``file.py[:Class]`` (built into a bundle first) or a bundle.

        ``result.unchanged`` is true when the same source already was the latest version.
        """
        path, _ = split_target(str(target))
        if path.is_file() and zipfile.is_zipfile(path):
            return self._upload(path)
        with tempfile.TemporaryDirectory(prefix="nubis-push-") as tmp:
            bundle, _ = build_bundle(str(target), Path(tmp) / "bundle.photon")
            return self._upload(bundle)

    def _upload(self, bundle: Path) -> PushedPhoton:
        with bundle.open("rb") as fh:
            response = self._t.request("POST", "/photons", content=fh,
                                       headers={"content-type": "application/zip"})
        return PushedPhoton.model_validate(response.json())

    def list(self) -> list[PhotonSummary]:
        """Each photon's latest version and its number of versions."""
        return [PhotonSummary.model_validate(p) for p in self._t.json("GET", "/photons")]

    def versions(self, name: str) -> list[PhotonVersion]:
        return [PhotonVersion.model_validate(v) for v in self._t.json("GET", f"/photons/{name}")]

    def get(self, name: str, version: int | str = "latest") -> PhotonVersionDetail:
        """One version with its manifest."""
        return PhotonVersionDetail.model_validate(self._t.json("GET", f"/photons/{name}/{version}"))

    def download(self, name: str, version: int | str = "latest", dest: str | os.PathLike[str] = ".") -> Path:
        """Save the bundle to ``dest`` (a file, or a folder for ``NAME-VERSION.photon``)."""
        dest = Path(dest)
        tmp: Path | None = None
        try:
            with self._t.http.stream("GET", f"{API}/photons/{name}/{version}/bundle") as response:
                if response.status_code >= 400:
                    response.read()
                    raise_for_error(response)
                if dest.is_dir():
                    filename = _filename(response.headers.get("content-disposition"))
                    dest = dest / (filename or f"{name}-{version}.photon")
                dest.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
                tmp = Path(tmp_name)
                with os.fdopen(fd, "wb") as fh:
                    for chunk in response.iter_bytes(CHUNK):
                        fh.write(chunk)
            os.replace(tmp, dest)
            tmp = None
        except httpx.TransportError as exc:
            raise ConnectionFailedError(
                f"cannot reach the nubis server at {self._t.credentials.url} ({exc})"
            ) from None
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        return dest

    def delete(self, name: str, version: int | str | None = None) -> None:
        """Delete one version, or with ``version=None`` every version of the photon."""
        self._t.json("DELETE", f"/photons/{name}" if version is None else f"/photons/{name}/{version}")


def _filename(disposition: str | None) -> str | None:
    if not disposition or "filename=" not in disposition:
        return None
    name = disposition.split("filename=", 1)[1].strip().strip('"')
    return os.path.basename(name) or None
