"""The web console on the wire: a one-time login link (``nubis console``)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class ConsoleLink(BaseModel):
    """Open ``path`` on the control plane's address once, before ``expires_at``: the browser is then
    logged in to the console with the token that asked for the link."""

    path: str = Field(description="/login/<code>: single use")
    expires_at: datetime
