"""The workspace's OpenAI base URL, ``/<workspace>/v1/...``: pure helpers for the proxy.

``POST /<workspace>/v1/chat/completions`` and ``/v1/completions`` go to the LLM deployment whose
model id is the body's ``model``; ``GET /<workspace>/v1/models`` lists the LLM deployments the
caller may call. Errors on ``/v1/`` paths take OpenAI's shape (``message``, ``type``, ``param``,
``code``; nubis's ``details`` kept) so that the ``openai`` client raises the matching class.
"""

from __future__ import annotations

import json
from typing import Any

from nubis.errors import NubisError
from nubis.gateway.routing import Deployment

ROUTED = frozenset({b"/chat/completions", b"/completions"})
MODELS = b"/models"
OPENAI_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 404: "invalid_request_error",
                413: "invalid_request_error", 422: "invalid_request_error"}


def is_openai_path(rest: bytes) -> bool:
    """A deployment path answered in OpenAI's error shape (``/<ws>/<name>/v1/...``)."""
    return rest == b"/v1" or rest.startswith(b"/v1/")


def openai_error_body(exc: NubisError, *, param: str | None = None, code: str | None = None) -> bytes:
    error: dict[str, Any] = {
        "message": exc.message,
        "type": OPENAI_TYPES.get(exc.http_status, "server_error" if exc.http_status >= 500 else "error"),
        "param": param,
        "code": code or exc.code,
        "details": exc.details,
    }
    return json.dumps({"error": error}).encode()


def requested_model(body: bytes) -> str | None:
    """The JSON body's ``model`` field (None when the body is not a JSON object with a string one)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    model = data.get("model") if isinstance(data, dict) else None
    return model if isinstance(model, str) and model else None


def may_use_workspace(deployments: list[Deployment], authorization: bytes | None, *, now: float) -> bool:
    """Whether the caller's token is one of the workspace's: some private deployment of it accepts
    the token (public deployments accept anyone and tell nothing)."""
    return any(d.route.access == "private" and d.allows(authorization, now=now) for d in deployments)


def models_list(workspace: str, deployments: list[Deployment], authorization: bytes | None,
                *, now: float) -> bytes:
    """OpenAI's list shape over the LLM deployments the caller may call."""
    data = [
        {"id": d.route.llm_model, "object": "model", "created": 0, "owned_by": workspace,
         "deployment": d.route.name}
        for d in deployments
        if d.route.llm_model is not None and d.allows(authorization, now=now)
    ]
    return json.dumps({"object": "list", "data": data}).encode()
