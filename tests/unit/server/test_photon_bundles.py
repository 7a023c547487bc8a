"""The server's streamed bundle hash is the builder's content_hash, byte for byte."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from nubis.errors import BundleError
from nubis.photon.bundle import MANIFEST, content_hash
from nubis.server.services import photon_bundles

FILES = {
    "photon.py": b"import nubis\n\n\nclass Demo(nubis.Photon):\n    def run(self) -> None: ...\n",
    "data/empty.txt": b"",
    "data/bär.txt": "ünïcode".encode(),
    "big.bin": bytes(range(256)) * 9000,  # more than one read chunk
}
MANIFEST_BODY = {"name": "demo", "entrypoint": "photon.py:Demo",
                 "handlers": [{"name": "run", "path": "/run"}]}


def bundle(files: dict[str, bytes], digest: str, compression: int = zipfile.ZIP_DEFLATED) -> io.BytesIO:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        zf.writestr(MANIFEST, json.dumps({**MANIFEST_BODY, "content_hash": digest}))
        zf.writestr("data/", b"")  # folders are not files
        for name, data in files.items():
            zf.writestr(name, data)
    return buf


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_LZMA])
def test_streamed_hash_matches_content_hash(compression: int) -> None:
    digest = content_hash(list(FILES.items()))
    manifest = photon_bundles.validate(bundle(FILES, digest, compression))
    assert manifest.content_hash == digest
    assert manifest.name == "demo"


def test_corrupted_data_is_a_damaged_bundle() -> None:
    digest = content_hash(list(FILES.items()))
    raw = bytearray(bundle(FILES, digest, zipfile.ZIP_STORED).getvalue())
    at = raw.index(bytes(range(256)))
    raw[at:at + 4] = b"XXXX"  # CRC no longer matches
    with pytest.raises(BundleError, match=r"the bundle is damaged: Bad CRC-32 for file 'big\.bin'"):
        photon_bundles.validate(io.BytesIO(bytes(raw)))
