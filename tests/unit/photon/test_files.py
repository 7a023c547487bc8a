"""``nubis.File``: validation from base64 / objects / bytes, serialization, schema."""

import base64

import pydantic
import pytest

import nubis
from nubis import File

ADAPTER = pydantic.TypeAdapter(File)
PNG_HEADER = b"\x89PNG\r\n\x1a\n"
B64 = base64.b64encode(PNG_HEADER).decode()


def test_defaults() -> None:
    f = File(b"abc")
    assert f.data == b"abc"
    assert f.filename is None
    assert f.content_type == "application/octet-stream"
    assert len(f) == 3


def test_bytearray_is_copied_to_bytes() -> None:
    raw = bytearray(b"abc")
    f = File(raw)
    raw[0] = ord("z")
    assert f.data == b"abc"
    assert type(f.data) is bytes


def test_equality_and_hash_use_data_name_and_type() -> None:
    a = File(b"x", "a.txt", "text/plain")
    assert a == File(b"x", "a.txt", "text/plain")
    assert hash(a) == hash(File(b"x", "a.txt", "text/plain"))
    assert a != File(b"x", "b.txt", "text/plain")
    assert a != File(b"y", "a.txt", "text/plain")
    assert a != b"x"


def test_repr_shows_size_not_content() -> None:
    assert repr(File(b"secret", "a.bin")) == (
        "File(filename='a.bin', content_type='application/octet-stream', 6 bytes)"
    )


def test_is_exported_at_top_level() -> None:
    assert nubis.File is File


def test_validates_a_plain_base64_string() -> None:
    assert ADAPTER.validate_python(B64) == File(PNG_HEADER)


def test_validates_a_data_url() -> None:
    assert ADAPTER.validate_python(f"data:image/png;base64,{B64}") == File(PNG_HEADER)


def test_validates_an_object_with_name_and_type() -> None:
    value = {"data": B64, "filename": "x.png", "content_type": "image/png"}
    assert ADAPTER.validate_python(value) == File(PNG_HEADER, "x.png", "image/png")
    assert ADAPTER.validate_python({"data": B64}) == File(PNG_HEADER)


def test_validates_from_a_json_body() -> None:
    model = pydantic.create_model("M", file=(File, ...))
    parsed = model.model_validate_json(f'{{"file": {{"data": "{B64}", "filename": "p.png"}}}}')
    assert parsed.file == File(PNG_HEADER, "p.png")


def test_bytes_and_files_pass_through() -> None:
    f = File(b"abc", "a")
    assert ADAPTER.validate_python(f) is f
    assert ADAPTER.validate_python(b"abc") == File(b"abc")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not base64!", "file data is not valid base64"),
        ("abc", "file data is not valid base64"),  # bad padding
        ({"data": "!!"}, "file data is not valid base64"),
        ({"data": B64, "name": "x"}, "unexpected keys in a file object: ['name']"),
        ({"data": 3}, "a file's 'data' must be a base64 string"),
        (42, "expected a file: a multipart upload, a base64 string or"),
        ({"filename": "x"}, "expected a file"),
    ],
)
def test_rejects_what_is_not_a_file(value: object, message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        ADAPTER.validate_python(value)
    assert message in info.value.errors()[0]["msg"]


def test_serializes_to_a_base64_object() -> None:
    f = File(PNG_HEADER, "x.png", "image/png")
    assert f.to_base64() == B64
    assert ADAPTER.dump_python(f) == {"data": B64, "filename": "x.png", "content_type": "image/png"}
    assert ADAPTER.validate_python(ADAPTER.dump_python(f)) == f


def test_json_schema_is_a_base64_binary_string() -> None:
    assert ADAPTER.json_schema() == {
        "type": "string",
        "format": "binary",
        "contentEncoding": "base64",
        "description": "a multipart upload, or base64 in a JSON body",
    }
