"""Limits on a request's head (request line and headers) for every nubis HTTP server.

uvicorn's httptools protocol has none: a client could send a header of any size, which the parser
keeps in memory. :class:`LimitedHttpToolsProtocol` answers ``431 headers_too_large`` and closes
the connection once the head passes :data:`MAX_HEAD_BYTES` or :data:`MAX_HEADERS`; nothing of
that request reaches the app. Pass it as ``uvicorn.Config(http=LimitedHttpToolsProtocol)`` (the
photon server, the gateway and the control plane do).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from nubis.errors import HeadersTooLargeError

MAX_HEAD_BYTES = 64 * 1024  # request line and headers together (nginx: 4 x 8 KiB by default)
MAX_HEADERS = 256
LINGER_S = 2.0  # after a 431, what the client still sends is read and dropped this long

log = logging.getLogger("nubis.http")


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing request heads over the limits with 431.

    Bytes are counted per chunk read from the socket while a head is incomplete, except the chunk
    the head began in: a head may pass the limit by at most one read (256 KiB) before it is
    refused, and a body that follows a head in the same read is never counted.
    """

    max_head_bytes = MAX_HEAD_BYTES
    max_headers = MAX_HEADERS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False
        self._head_began = False  # in the chunk being parsed now
        self._head_bytes = 0
        self._headers = 0
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        self._head_began = False
        super().data_received(data)
        if self._in_head and not self._head_began and not self._refused:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse(f"request headers over {self.max_head_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = self._head_began = True
        self._head_bytes = self._headers = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._refused:
            return
        self._headers += 1
        if self._headers > self.max_headers:
            self._refuse(f"more than {self.max_headers} request headers")
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        if not self._refused:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def _refuse(self, why: str) -> None:
        """Answer 431 and close: the rest of this connection is never parsed. The close lingers
        (as nginx's does): closing with unread input would reset the connection, and the client,
        still sending, could lose the answer."""
        self._refused = True
        log.debug("refused a request from %s: %s", self.client, why)
        err = HeadersTooLargeError(
            f"{why}: send at most {self.max_headers} headers and {self.max_head_bytes} bytes "
            "of request line and headers",
            details={"max_head_bytes": self.max_head_bytes, "max_headers": self.max_headers},
        )
        body = json.dumps(err.to_body()).encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + body
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()
