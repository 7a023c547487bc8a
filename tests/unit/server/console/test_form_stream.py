"""The storage browser's streamed form reader, on a real Starlette app with real multipart bodies."""

from __future__ import annotations

import hashlib
import os

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from nubis.errors import NubisError
from nubis.server.console.form_stream import StreamedForm


async def upload(request: Request) -> JSONResponse:
    try:
        form = StreamedForm(request)
        filename = await form.read_until_file()
        digest, size = hashlib.sha256(), 0
        async for chunk in form.file_chunks():
            digest.update(chunk)
            size += len(chunk)
    except NubisError as exc:
        return JSONResponse({"code": exc.code, "message": exc.message}, status_code=exc.http_status)
    return JSONResponse({"fields": form.fields, "filename": filename, "size": size,
                         "sha256": digest.hexdigest()})


def client() -> httpx.AsyncClient:
    app = Starlette(routes=[Route("/up", upload, methods=["POST"])])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_fields_before_the_file_then_its_bytes_identical() -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # several chunks, with bytes that look like anything
    async with client() as http:
        r = await http.post("/up", data={"csrf": "abc", "folder": "data/x"},
                            files={"file": ("blob ü.bin", data, "application/octet-stream")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["fields"] == {"csrf": "abc", "folder": "data/x"}
    assert body["filename"] == "blob ü.bin"
    assert body["size"] == len(data) and body["sha256"] == hashlib.sha256(data).hexdigest()


async def test_no_file_chosen_is_a_validation_error() -> None:
    async with client() as http:
        empty = await http.post("/up", data={"csrf": "abc"}, files={"file": ("", b"")})
        missing = await http.post("/up", files={"x": (None, "only a field")})
    assert empty.status_code == 422 and "choose a file" in empty.json()["message"]
    assert missing.status_code == 422 and "no file" in missing.json()["message"]


async def test_not_multipart_and_malformed_bodies_are_400() -> None:
    async with client() as http:
        urlencoded = await http.post("/up", data={"csrf": "abc"})
        broken = await http.post("/up", content=b"--zz\r\nno headers here",
                                 headers={"content-type": "multipart/form-data; boundary=zz"})
        two = await http.post("/up", files=[("file", ("a", b"1")), ("other", ("b", b"2"))])
    assert urlencoded.status_code == 400 and "multipart/form-data" in urlencoded.json()["message"]
    assert broken.status_code in (400, 422)
    assert two.status_code == 400 and "one file" in two.json()["message"]


async def test_an_oversized_field_is_refused() -> None:
    async with client() as http:
        r = await http.post("/up", data={"folder": "x" * 5000}, files={"file": ("a", b"1")})
    assert r.status_code == 400 and "too long" in r.json()["message"]
