"""Which headers cross the gateway (RFC 9110 §7.6.1: hop-by-hop headers stop here)."""

from __future__ import annotations

from collections.abc import Iterable

from nubis.photon.runtime import REPLICA_KEY_HEADER

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"proxy-connection",
    b"te", b"trailer", b"transfer-encoding", b"upgrade",
})
# the gateway sets these itself, towards the replica
# (and the replica key: only the gateway's own, added per replica, may reach a replica)
REQUEST_DROP = HOP_BY_HOP | {b"host", b"content-length", b"x-forwarded-for", b"x-forwarded-host",
                             b"x-forwarded-proto", REPLICA_KEY_HEADER.encode()}
# uvicorn frames the body (content-length stays when the replica sent one)
RESPONSE_DROP = HOP_BY_HOP


def _named_in_connection(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    names: set[bytes] = set()
    for key, value in headers:
        if key.lower() == b"connection":
            names.update(v.strip().lower() for v in value.split(b",") if v.strip())
    return frozenset(names)


def request_headers(
    headers: list[tuple[bytes, bytes]],
    *,
    client: str | None,
    host: bytes | None,
    scheme: str,
    strip_authorization: bool,
) -> list[tuple[str, str]]:
    """The client's headers as sent on to a replica: hop-by-hop ones removed (with those the
    Connection header names), Authorization removed when the gateway consumed it, and the
    X-Forwarded-* headers set by the gateway (a client cannot forge them)."""
    extra = _named_in_connection(headers) if any(k == b"connection" for k, _ in headers) else ()
    out: list[tuple[str, str]] = []
    for key, value in headers:
        if key in REQUEST_DROP or key in extra:
            continue
        if strip_authorization and key == b"authorization":
            continue
        out.append((key.decode("latin-1"), value.decode("latin-1")))
    if client:
        out.append(("x-forwarded-for", client))
    if host:
        out.append(("x-forwarded-host", host.decode("latin-1")))
    out.append(("x-forwarded-proto", scheme))
    return out


def response_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """A replica's response headers as sent to the client, lower-cased, hop-by-hop ones removed."""
    raw = list(raw)
    extra = _named_in_connection(raw)
    out = []
    for key, value in raw:
        name = key.lower()
        if name in RESPONSE_DROP or name in extra:
            continue
        out.append((name, value))
    return out


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of ``name`` (lower-case) in ASGI headers."""
    for key, value in headers:
        if key == name:
            return value
    return None
