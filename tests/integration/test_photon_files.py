"""Files over HTTP: multipart uploads, base64 in JSON, raw binary responses."""

import base64

import nubis
from nubis.client.photon import build_request, decode_response
from nubis.models.photons import PhotonManifest
from nubis.photon.loader import load_photon
from nubis.photon.runtime import ServeSettings
from nubis.photon.testing import photon_http

Echo = load_photon("examples/echo").cls
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))
B64 = base64.b64encode(PNG).decode()


class Files(nubis.Photon):
    @nubis.handler
    def describe(
        self, file: nubis.File, note: str = "", scale: int = 1, tags: list[str] | None = None
    ) -> dict:
        return {
            "size": len(file),
            "filename": file.filename,
            "content_type": file.content_type,
            "note": note,
            "scale": scale,
            "tags": tags,
        }

    @nubis.handler
    def pair(self, a: nubis.File, b: nubis.File | None = None) -> list[int]:
        return [len(a), len(b) if b else -1]

    @nubis.handler
    def raw(self, n: int) -> bytes:
        return bytes(range(n))

    @nubis.handler
    def untyped_raw(self, n: int):
        return b"\x00" * n

    @nubis.handler
    def named(self) -> nubis.File:
        return nubis.File(b"a,b\n1,2\n", filename='re"port.csv', content_type="text/csv")


async def test_multipart_upload_reaches_the_handler() -> None:
    async with photon_http(Files) as http:
        r = await http.post(
            "/describe",
            files={"file": ("pic.png", PNG, "image/png")},
            data={"note": "hello", "scale": "3", "tags": '["a", "b"]'},
        )
    assert r.status_code == 200
    assert r.json() == {
        "size": len(PNG),
        "filename": "pic.png",
        "content_type": "image/png",
        "note": "hello",
        "scale": 3,
        "tags": ["a", "b"],
    }


async def test_multipart_text_that_looks_like_json_stays_text() -> None:
    async with photon_http(Files) as http:
        for note in ("123", "true", "null", '["x"]', '"quoted"'):
            r = await http.post("/describe", files={"file": ("f", b"x", "text/plain")}, data={"note": note})
            assert r.status_code == 200, r.text
            assert r.json()["note"] == note


async def test_multipart_validation_errors_name_the_field() -> None:
    async with photon_http(Files) as http:
        r = await http.post("/describe", files={"file": ("f", b"x")}, data={"scale": "big"})
        assert r.status_code == 422
        assert [d["field"] for d in r.json()["error"]["details"]] == ["scale"]
        r = await http.post("/describe", files={"other": ("f", b"x")})
        assert r.status_code == 422
        assert {(d["field"], d["type"]) for d in r.json()["error"]["details"]} == {
            ("file", "missing"),
            ("other", "extra_forbidden"),
        }


async def test_optional_files_may_be_left_out() -> None:
    async with photon_http(Files) as http:
        r = await http.post("/pair", files={"a": ("a", b"123")})
        assert r.json() == [3, -1]
        r = await http.post("/pair", files={"a": ("a", b"123"), "b": ("b", b"45")})
        assert r.json() == [3, 2]


async def test_base64_string_in_json() -> None:
    async with photon_http(Files) as http:
        r = await http.post("/describe", json={"file": B64})
    assert r.json()["size"] == len(PNG)
    assert r.json()["filename"] is None
    assert r.json()["content_type"] == "application/octet-stream"


async def test_base64_object_in_json() -> None:
    body = {"file": {"data": B64, "filename": "p.png", "content_type": "image/png"}}
    async with photon_http(Files) as http:
        r = await http.post("/describe", json=body)
    assert r.json()["size"] == len(PNG)
    assert r.json()["filename"] == "p.png"
    assert r.json()["content_type"] == "image/png"


async def test_invalid_base64_is_a_validation_error() -> None:
    async with photon_http(Files) as http:
        r = await http.post("/describe", json={"file": "not base64 at all!"})
    assert r.status_code == 422
    assert r.json() == {
        "error": {
            "code": "validation_error",
            "message": "invalid request: file (Value error, file data is not valid base64)",
            "details": [
                {
                    "field": "file",
                    "message": "Value error, file data is not valid base64",
                    "type": "value_error",
                }
            ],
        }
    }


async def test_a_file_comes_back_as_the_raw_body_with_its_type() -> None:
    async with photon_http(Echo) as http:
        r = await http.post("/reverse", files={"file": ("a.txt", b"abc", "text/plain")})
    assert r.status_code == 200
    assert r.content == b"cba"
    assert r.headers["content-type"].startswith("text/plain")
    assert r.headers["content-disposition"] == 'inline; filename="a.txt.reversed"'


async def test_a_file_from_base64_json_comes_back_raw() -> None:
    async with photon_http(Echo) as http:
        r = await http.post("/reverse", json={"file": B64})
    assert r.content == PNG[::-1]
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["content-disposition"] == 'inline; filename="file.reversed"'


async def test_bytes_come_back_as_octet_stream() -> None:
    async with photon_http(Files) as http:
        r = await http.post("/raw", json={"n": 5})
        assert r.content == b"\x00\x01\x02\x03\x04"
        assert r.headers["content-type"] == "application/octet-stream"
        assert "content-disposition" not in r.headers
        r = await http.post("/untyped_raw", json={"n": 3})
        assert r.content == b"\x00\x00\x00"
        assert r.headers["content-type"] == "application/octet-stream"


async def test_filenames_are_quoted_safely() -> None:
    async with photon_http(Files) as http:
        r = await http.post("/named", json={})
    assert r.content == b"a,b\n1,2\n"
    assert r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"] == 'inline; filename="report.csv"'


async def test_an_upload_over_the_limit_is_413() -> None:
    async with photon_http(Files, ServeSettings(max_body_size=1000)) as http:
        r = await http.post("/describe", files={"file": ("big", b"x" * 5000)})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"


async def test_a_streamed_upload_without_length_is_limited_too() -> None:
    async with photon_http(Files, ServeSettings(max_body_size=1000)) as http:
        request = http.build_request("POST", "/describe", files={"file": ("big", b"x" * 5000)})
        body = request.read()

        async def chunks():
            for i in range(0, len(body), 256):
                yield body[i : i + 256]

        r = await http.post(
            "/describe",
            content=chunks(),
            headers={"content-type": request.headers["content-type"]},
        )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "payload_too_large"


async def test_a_malformed_multipart_body_is_a_bad_request() -> None:
    async with photon_http(Files) as http:
        r = await http.post(
            "/describe",
            content=b"garbage",
            headers={"content-type": "multipart/form-data; boundary=xyz"},
        )
        assert r.status_code == 400
        assert r.json() == {
            "error": {
                "code": "bad_request",
                "message": "invalid multipart body: Invalid multipart data.",
                "details": None,
            }
        }
        r = await http.post("/describe", content=b"garbage", headers={"content-type": "multipart/form-data"})
        assert r.status_code == 400
        assert r.json()["error"]["message"] == ("invalid multipart body: Missing boundary in multipart.")


async def test_the_clients_multipart_encoding_round_trips() -> None:
    async with photon_http(Files) as http:
        manifest = PhotonManifest.model_validate((await http.get("/_nubis/manifest")).json())
        info = next(h for h in manifest.handlers if h.name == "describe")
        params = {
            "file": nubis.File(PNG, "p.png", "image/png"),
            "note": "007",
            "scale": 2,
            "tags": ["x", "y"],
        }
        r = await http.request(**build_request(info, params))
    assert decode_response(r) == {
        "size": len(PNG),
        "filename": "p.png",
        "content_type": "image/png",
        "note": "007",
        "scale": 2,
        "tags": ["x", "y"],
    }
