"""httpx clients for the platform's own calls: replica probes, LLM queue scrapes, webhook deliveries,
the console's calls through the gateway.

httpx builds an SSL context for every client it makes, TLS or not — loading the whole CA bundle,
milliseconds of CPU each time. One context, made once, serves every client here: a control plane
probing one idle replica each second spent about 0.16 of a core on those contexts alone."""

from __future__ import annotations

import functools
import ssl
from typing import Any

import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The SSL context every client here shares (httpx's defaults: certifi's CAs, SSL_CERT_FILE)."""
    return httpx.create_ssl_context()


def async_client(**options: Any) -> httpx.AsyncClient:
    """``httpx.AsyncClient(**options)`` on the shared SSL context."""
    return httpx.AsyncClient(verify=tls_context(), **options)
