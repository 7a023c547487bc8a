"""The HTTP layer every resource API shares: auth header, typed errors, JSON decoding."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx

from nubis.client.config import Credentials
from nubis.errors import ConnectionFailedError, error_from_body

API = "/api/v1"


def raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    raise error_from_body(response.status_code, body)


class Transport:
    """One httpx client bound to a server, a token and (optionally) a workspace."""

    def __init__(self, credentials: Credentials, *, timeout: float = 60.0) -> None:
        self.credentials = credentials
        headers = {"authorization": f"Bearer {credentials.token}"}
        if credentials.workspace:
            headers["x-nubis-workspace"] = credentials.workspace
        self.http = httpx.Client(base_url=credentials.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, API + path, **kwargs)
        except httpx.TransportError as exc:
            raise ConnectionFailedError(
                f"cannot reach the nubis server at {self.credentials.url} ({exc}); is `nubis up` running?"
            ) from None
        raise_for_error(response)
        return response

    @contextlib.contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A response whose body is read as it arrives; typed errors as :meth:`request`."""
        try:
            with self.http.stream(method, API + path, **kwargs) as response:
                if response.status_code >= 400:
                    response.read()
                raise_for_error(response)
                yield response
        except httpx.ConnectError as exc:
            raise ConnectionFailedError(
                f"cannot reach the nubis server at {self.credentials.url} ({exc}); is `nubis up` running?"
            ) from None
        except httpx.TransportError as exc:
            raise ConnectionFailedError(
                f"lost the connection to the nubis server at {self.credentials.url} ({exc!r})"
            ) from None

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()


class ResourceAPI:
    def __init__(self, transport: Transport) -> None:
        self._t = transport
