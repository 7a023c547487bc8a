"""A stand-in for ``nubis.Client`` in CLI unit tests: the SDK resources a command calls, given as
keyword arguments (``StubClient(workspaces=api)``), usable as a context manager like the real one."""

from __future__ import annotations

from types import SimpleNamespace


class StubClient(SimpleNamespace):
    def __enter__(self) -> StubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        return None
