"""Bundles the registry refuses, with their exact error bodies; nothing is stored on failure."""

from __future__ import annotations

import io
import json
import sys
import zipfile
from pathlib import Path

import pytest

from nubis.photon.build import build_bundle
from nubis.photon.bundle import MANIFEST, content_hash
from nubis.server.services import photon_bundles

from platform_fixtures import Platform

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HOW = "push a folder with `nubis photon push DIR`, or a bundle from `nubis photon build`"


@pytest.fixture(autouse=True)
def restore_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.fixture
def echo(tmp_path: Path) -> tuple[dict, dict[str, bytes]]:
    """The echo example's manifest and files, to assemble bundles from."""
    path, _ = build_bundle(str(EXAMPLES / "echo"), tmp_path / "echo.photon")
    with zipfile.ZipFile(path) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    return json.loads(files.pop(MANIFEST)), files


def make_zip(manifest: dict | None, files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        if manifest is not None:
            zf.writestr(MANIFEST, json.dumps(manifest))
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def rehash(manifest: dict, files: dict[str, bytes]) -> dict:
    return {**manifest, "content_hash": content_hash(list(files.items()))}


def invalid(message: str) -> dict:
    return {"error": {"code": "invalid_bundle", "message": message, "details": None}}


async def push(platform: Platform, body: bytes, content_type: str = "application/zip"):
    return await platform.http.post("/api/v1/photons", content=body,
                                    headers={**platform.admin, "content-type": content_type})


async def assert_nothing_stored(platform: Platform) -> None:
    assert (await platform.http.get("/api/v1/photons", headers=platform.admin)).json() == []
    root = Path(platform.ctx.store.root)
    assert [p for p in root.rglob("*") if p.is_file()] == []


async def test_not_a_zip(platform: Platform) -> None:
    r = await push(platform, b"print('hello')\n")
    assert r.status_code == 422
    assert r.json() == invalid(f"the body is not a zip file: {HOW}")
    await assert_nothing_stored(platform)


async def test_empty_body(platform: Platform) -> None:
    r = await push(platform, b"")
    assert r.json() == invalid(f"the request body is empty: {HOW}")


async def test_no_manifest(platform: Platform, echo: tuple[dict, dict[str, bytes]]) -> None:
    _, files = echo
    r = await push(platform, make_zip(None, files))
    assert r.status_code == 422
    assert r.json() == invalid(f"the bundle has no manifest.json: {HOW}")
    await assert_nothing_stored(platform)


async def test_tampered_file(platform: Platform, echo: tuple[dict, dict[str, bytes]]) -> None:
    manifest, files = echo
    tampered = {**files, "photon.py": files["photon.py"] + b"\nimport os; os.system('evil')\n"}
    actual = content_hash(list(tampered.items()))
    r = await push(platform, make_zip(manifest, tampered))
    assert r.status_code == 422
    assert r.json() == invalid(
        f"content hash {actual[:12]} does not match the manifest's {manifest['content_hash'][:12]}: "
        "a file was changed after the bundle was built, or the bundle is damaged"
    )
    await assert_nothing_stored(platform)


@pytest.mark.parametrize("member", ["../evil.py", "/etc/evil.py", "a/../../evil.py", "a\\evil.py"])
async def test_unsafe_member_paths(platform: Platform, echo: tuple[dict, dict[str, bytes]],
                                   member: str) -> None:
    manifest, files = echo
    files = {**files, member: b"x = 1\n"}
    r = await push(platform, make_zip(rehash(manifest, files), files))
    assert r.status_code == 422
    assert r.json() == invalid(f"unsafe paths in the bundle: [{member!r}]")
    await assert_nothing_stored(platform)


async def test_missing_entrypoint(platform: Platform, echo: tuple[dict, dict[str, bytes]]) -> None:
    manifest, files = echo
    files = {"main.py": files["photon.py"]}
    r = await push(platform, make_zip(rehash(manifest, files), files))
    assert r.status_code == 422
    assert r.json() == invalid("the entrypoint file 'photon.py' is not in the bundle")
    await assert_nothing_stored(platform)


@pytest.mark.parametrize(("change", "message"), [
    ({"handlers": []}, "manifest.json lists no handlers: a photon needs at least one @handler"),
    ({"handlers": None}, "invalid manifest.json: handlers: Input should be a valid array"),
    ({"name": "Bad_Name"}, "invalid photon name 'Bad_Name': use lower-case letters, digits and '-', "
                           "at most 63 characters"),
    ({"entrypoint": "photon.py"}, "bad entrypoint 'photon.py': expected '<file>.py:<Class>'"),
    ({"content_hash": None}, f"manifest.json has no content_hash: {HOW}"),
    ({"format": 99}, "manifest.json has format 99; this server reads format 1: upgrade the server"),
    ({"resources": {"cpu": -1}}, "invalid manifest.json: resources.cpu: Input should be greater than 0"),
])
async def test_invalid_manifests(platform: Platform, echo: tuple[dict, dict[str, bytes]],
                                 change: dict, message: str) -> None:
    manifest, files = echo
    r = await push(platform, make_zip({**manifest, **change}, files))
    assert r.status_code == 422
    assert r.json() == invalid(message)
    await assert_nothing_stored(platform)


async def test_manifest_that_is_not_json(platform: Platform, echo: tuple[dict, dict[str, bytes]]) -> None:
    _, files = echo
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(MANIFEST, "{not json")
        for name, data in files.items():
            zf.writestr(name, data)
    r = await push(platform, buf.getvalue())
    assert r.status_code == 422
    assert r.json()["error"]["message"].startswith("invalid manifest.json: Invalid JSON")


async def test_duplicate_members(platform: Platform, echo: tuple[dict, dict[str, bytes]]) -> None:
    manifest, files = echo
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(MANIFEST, json.dumps(manifest))
        for name, data in files.items():
            zf.writestr(name, data)
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr("photon.py", b"class Other: pass\n")
    r = await push(platform, buf.getvalue())
    assert r.json() == invalid("the bundle holds the same path twice: ['photon.py']")
    await assert_nothing_stored(platform)


async def test_wrong_content_type(platform: Platform, echo: tuple[dict, dict[str, bytes]]) -> None:
    manifest, files = echo
    r = await push(platform, make_zip(manifest, files), content_type="application/json")
    assert r.status_code == 415
    assert r.json() == {"error": {
        "code": "unsupported_media_type", "details": None,
        "message": "send the bundle as the raw body with content-type application/zip, "
                   "not 'application/json'",
    }}


async def test_too_large(platform: Platform, echo: tuple[dict, dict[str, bytes]],
                         monkeypatch: pytest.MonkeyPatch) -> None:
    manifest, files = echo
    monkeypatch.setattr(photon_bundles, "MAX_BUNDLE_BYTES", 2 * 2**20)
    files = {**files, "weights.bin": bytes(range(256)) * 12_000}  # 3 MB, stored without compression
    body = make_zip(rehash(manifest, files), files)
    r = await push(platform, body)
    assert r.status_code == 413
    assert r.json() == {"error": {
        "code": "payload_too_large", "details": None,
        "message": "the bundle is larger than 2 MiB: bundles carry source, not data; "
                   "put data and weights in storage",
    }}

    async def chunked():  # no content-length: counted while streaming
        for start in range(0, len(body), 65536):
            yield body[start:start + 65536]

    r = await platform.http.post("/api/v1/photons", content=chunked(),
                                 headers={**platform.admin, "content-type": "application/zip"})
    assert r.status_code == 413
    await assert_nothing_stored(platform)
