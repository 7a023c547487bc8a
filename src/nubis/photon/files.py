"""``nubis.File``: binary inputs (multipart upload or base64 in JSON) and outputs."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema


class File:
    """A file passed to or returned from a handler.

    As a parameter it accepts a multipart upload, a base64 string, or
    ``{"data": "<base64>", "filename": ..., "content_type": ...}`` in a JSON body.
    Returned from a handler, it is sent as the raw body with its ``content_type``.
    """

    __slots__ = ("content_type", "data", "filename")

    def __init__(
        self,
        data: bytes,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> None:
        self.data = bytes(data)
        self.filename = filename
        self.content_type = content_type or "application/octet-stream"

    def __len__(self) -> int:
        return len(self.data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, File):
            return NotImplemented
        return (self.data, self.filename, self.content_type) == (
            other.data,
            other.filename,
            other.content_type,
        )

    def __hash__(self) -> int:
        return hash((self.data, self.filename, self.content_type))

    def __repr__(self) -> str:
        return f"File(filename={self.filename!r}, content_type={self.content_type!r}, {len(self)} bytes)"

    def to_base64(self) -> str:
        return base64.b64encode(self.data).decode("ascii")

    @classmethod
    def _validate(cls, value: Any) -> File:
        if isinstance(value, File):
            return value
        if isinstance(value, bytes | bytearray | memoryview):
            return cls(bytes(value))
        if isinstance(value, str):
            return cls(_b64decode(value))
        if isinstance(value, dict) and "data" in value:
            extra = set(value) - {"data", "filename", "content_type"}
            if extra:
                raise ValueError(f"unexpected keys in a file object: {sorted(extra)}")
            data = value["data"]
            raw = _b64decode(data) if isinstance(data, str) else data
            if not isinstance(raw, bytes | bytearray):
                raise ValueError("a file's 'data' must be a base64 string")
            return cls(bytes(raw), value.get("filename"), value.get("content_type"))
        raise ValueError(
            "expected a file: a multipart upload, a base64 string or "
            '{"data": "<base64>", "filename": ..., "content_type": ...}'
        )

    def _serialize(self) -> dict[str, Any]:
        return {"data": self.to_base64(), "filename": self.filename, "content_type": self.content_type}

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._validate,
            serialization=core_schema.plain_serializer_function_ser_schema(cls._serialize),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "string",
            "format": "binary",
            "contentEncoding": "base64",
            "description": "a multipart upload, or base64 in a JSON body",
        }


def _b64decode(text: str) -> bytes:
    if text.startswith("data:") and "," in text:  # data URL: data:image/png;base64,....
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("file data is not valid base64") from exc
