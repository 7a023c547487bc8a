"""A ``multipart/form-data`` body read as it arrives, for the storage browser's upload form.

The small fields that come before the file (the CSRF token, the folder) are read first, so that
the caller checks them before a byte of the file is stored; the file's bytes then stream on into
storage, which applies the upload limit and the workspace's quota as they come. Nothing is
spooled to a temporary file, and a second file part is refused.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from nubis.errors import BadRequestError, ValidationError

MAX_FIELD_BYTES = 4096
MAX_FIELDS = 16
MAX_BOUNDARY = 200


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    header_field: bytes = b""
    header_value: bytes = b""


class StreamedForm:
    """Fields before the file with :meth:`read_until_file`, then the file with :meth:`file_chunks`."""

    def __init__(self, request: Request) -> None:
        kind, params = parse_options_header(request.headers.get("content-type", ""))
        boundary = params.get(b"boundary", b"")
        if kind != b"multipart/form-data" or not boundary or len(boundary) > MAX_BOUNDARY:
            raise BadRequestError("the upload must be sent as multipart/form-data (an HTML form with "
                                  "enctype=\"multipart/form-data\")")
        self._request = request
        self._events: deque[tuple[str, bytes]] = deque()
        self._part = _Part()
        self._parts: deque[dict[bytes, bytes]] = deque()
        self._parser = MultipartParser(boundary, callbacks={
            "on_part_begin": self._begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._data,
            "on_part_end": self._end,
        })
        self._source = self._parse()
        self.fields: dict[str, str] = {}

    # the parser's callbacks: they only queue what they saw

    def _begin(self) -> None:
        self._part = _Part()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._part.header_field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._part.header_value += data[start:end]

    def _header_end(self) -> None:
        self._part.headers[self._part.header_field.strip().lower()] = self._part.header_value.strip()
        self._part.header_field = self._part.header_value = b""

    def _headers_finished(self) -> None:
        self._parts.append(self._part.headers)
        self._events.append(("headers", b""))

    def _data(self, data: bytes, start: int, end: int) -> None:
        self._events.append(("data", data[start:end]))

    def _end(self) -> None:
        self._events.append(("end", b""))

    async def _parse(self) -> AsyncIterator[tuple[str, bytes]]:
        try:
            async for chunk in self._request.stream():
                self._parser.write(chunk)
                while self._events:
                    yield self._events.popleft()
        except ClientDisconnect:
            raise BadRequestError("the browser went away before the end of the upload; nothing was stored") \
                from None
        except MultipartParseError as exc:
            raise BadRequestError(f"the upload's form data is malformed: {exc}") from None
        self._parser.finalize()
        while self._events:
            yield self._events.popleft()

    async def read_until_file(self) -> str:
        """Read the fields up to the file part (into :attr:`fields`); returns the file's name."""
        name = b""
        value = bytearray()
        async for kind, data in self._source:
            if kind == "headers":
                name, filename = _disposition(self._parts.popleft())
                if filename is not None:
                    if not filename:
                        raise ValidationError("choose a file to upload")
                    return filename
                value.clear()
            elif kind == "data":
                value += data
                if len(value) > MAX_FIELD_BYTES:
                    raise BadRequestError(f"form field {name.decode(errors='replace')!r} is too long")
            elif len(self.fields) >= MAX_FIELDS:
                raise BadRequestError("the upload form has too many fields")
            else:
                self.fields[name.decode(errors="replace")] = value.decode(errors="replace")
        raise ValidationError("the form holds no file: choose a file to upload")

    async def file_chunks(self) -> AsyncIterator[bytes]:
        """The file's bytes as they arrive; then the rest of the body is read (and must hold no file)."""
        async for kind, data in self._source:
            if kind == "end":
                break
            if kind == "data":
                yield data
        async for kind, _data in self._source:
            if kind == "headers" and _disposition(self._parts.popleft())[1] is not None:
                raise BadRequestError("upload one file at a time")


def _disposition(headers: dict[bytes, bytes]) -> tuple[bytes, str | None]:
    """A part's field name and, for a file part, its file name ('' when no file was chosen)."""
    kind, params = parse_options_header(headers.get(b"content-disposition", b""))
    if kind != b"form-data" or b"name" not in params:
        raise BadRequestError("a part of the upload's form data has no field name")
    filename = params.get(b"filename")
    return params[b"name"], None if filename is None else filename.decode(errors="replace")
