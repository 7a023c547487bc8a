"""How the photon client encodes calls and decodes answers (no server needed)."""

import httpx
import pytest

from nubis import File
from nubis.client.photon import build_request, decode_response
from nubis.errors import HandlerError, NubisError, ValidationError
from nubis.models.photons import HandlerInfo

POST = HandlerInfo(name="run", path="/run")
GET = HandlerInfo(name="info", path="/info", method="GET")


def test_get_sends_query_parameters() -> None:
    assert build_request(GET, {"q": "x", "n": 2}) == {
        "method": "GET",
        "url": "/info",
        "params": {"q": "x", "n": 2},
    }


def test_post_sends_json() -> None:
    assert build_request(POST, {"text": "hi", "n": [1, 2]}) == {
        "method": "POST",
        "url": "/run",
        "json": {"text": "hi", "n": [1, 2]},
    }


def test_files_switch_to_multipart_with_json_fields() -> None:
    f = File(b"abc", "a.txt", "text/plain")
    request = build_request(
        POST, {"file": f, "raw": b"xyz", "note": "123", "n": 3, "tags": ["a"], "skip": None}
    )
    assert request == {
        "method": "POST",
        "url": "/run",
        "files": {
            "file": ("a.txt", b"abc", "text/plain"),
            "raw": ("raw", b"xyz", "application/octet-stream"),
        },
        "data": {"note": "123", "n": "3", "tags": '["a"]'},
    }


def response(status: int, content: bytes, content_type: str, **headers: str) -> httpx.Response:
    return httpx.Response(status, content=content, headers={"content-type": content_type, **headers})


def test_json_answers_are_decoded() -> None:
    assert decode_response(response(200, b'{"a": 1}', "application/json")) == {"a": 1}
    assert decode_response(response(200, b"null", "application/json")) is None


def test_binary_answers_become_files() -> None:
    r = response(200, b"\x00\x01", "image/png", **{"content-disposition": 'inline; filename="x.png"'})
    assert decode_response(r) == File(b"\x00\x01", "x.png", "image/png")
    assert decode_response(response(200, b"z", "application/octet-stream")) == File(b"z")


def test_error_answers_raise_the_typed_error() -> None:
    body = b'{"error": {"code": "validation_error", "message": "bad", "details": [{"field": "x"}]}}'
    with pytest.raises(ValidationError) as info:
        decode_response(response(422, body, "application/json"))
    assert info.value.message == "bad"
    assert info.value.details == [{"field": "x"}]

    body = b'{"error": {"code": "handler_error", "message": "ValueError: no", "details": null}}'
    with pytest.raises(HandlerError):
        decode_response(response(500, body, "application/json"))


def test_error_answers_that_are_not_ours_keep_the_status_and_text() -> None:
    with pytest.raises(NubisError) as info:
        decode_response(response(502, b"Bad Gateway", "text/plain"))
    assert type(info.value) is NubisError
    assert info.value.message == "HTTP 502: Bad Gateway"
    assert info.value.http_status == 502
