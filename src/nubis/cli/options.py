"""Option values the CLI reads the same way in several commands."""

from __future__ import annotations

from nubis.errors import BadRequestError
from nubis.models.resources import parse_node_labels


def node_selector(pairs: list[str] | None) -> dict[str, str]:
    """``--node-label nubis.io/pool=a100`` (repeatable) → ``{"nubis.io/pool": "a100"}``."""
    try:
        return parse_node_labels(pairs or [])
    except ValueError as exc:
        raise BadRequestError(str(exc)) from None
