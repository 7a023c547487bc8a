"""Which headers the gateway passes on, in both directions."""

from nubis.gateway.headers import request_headers, response_headers


def test_request_headers_drop_hop_by_hop_and_authorization() -> None:
    given = [
        (b"host", b"gw:8090"), (b"authorization", b"Bearer nbs_x"), (b"connection", b"keep-alive, x-trace"),
        (b"keep-alive", b"timeout=5"), (b"x-trace", b"1"), (b"transfer-encoding", b"chunked"),
        (b"te", b"trailers"), (b"upgrade", b"h2c"), (b"content-length", b"3"),
        (b"x-forwarded-for", b"6.6.6.6"), (b"content-type", b"application/json"), (b"x-user", b"u"),
    ]
    out = request_headers(given, client="10.0.0.1", host=b"gw:8090", scheme="http",
                          strip_authorization=True)
    assert out == [
        ("content-type", "application/json"), ("x-user", "u"),
        ("x-forwarded-for", "10.0.0.1"), ("x-forwarded-host", "gw:8090"), ("x-forwarded-proto", "http"),
    ]


def test_request_headers_keep_authorization_for_public() -> None:
    out = request_headers([(b"authorization", b"Basic abc")], client=None, host=None, scheme="https",
                          strip_authorization=False)
    assert out == [("authorization", "Basic abc"), ("x-forwarded-proto", "https")]


def test_response_headers() -> None:
    raw = [(b"Content-Type", b"text/event-stream"), (b"Transfer-Encoding", b"chunked"),
           (b"Connection", b"close, X-Hop"), (b"X-Hop", b"1"), (b"Content-Length", b"5"),
           (b"X-Request-Id", b"abc")]
    assert response_headers(raw) == [
        (b"content-type", b"text/event-stream"), (b"content-length", b"5"), (b"x-request-id", b"abc"),
    ]
