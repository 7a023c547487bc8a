"""Echo: the smallest photon. Used by the README, the tests and bench/serving.py."""

import time
from collections.abc import Iterator

import nubis


class Echo(nubis.Photon):
    """Echoes text back, adds numbers, counts, and reverses files."""

    resources = nubis.Resources(cpu=0.5, memory="256Mi")

    @nubis.handler
    def echo(self, text: str) -> dict[str, str]:
        """Return the text unchanged (sync handler: runs in a worker thread)."""
        return {"text": text}

    @nubis.handler
    async def aecho(self, text: str) -> dict[str, str]:
        """Return the text unchanged (async handler: runs on the event loop)."""
        return {"text": text}

    @nubis.handler
    def add(self, a: float, b: float = 0.0) -> float:
        """a + b"""
        return a + b

    @nubis.handler
    def count(self, n: int = 5, delay: float = 0.0) -> Iterator[int]:
        """Stream 0 .. n-1 as Server-Sent Events."""
        for i in range(n):
            if delay:
                time.sleep(delay)
            yield i

    @nubis.handler
    def reverse(self, file: nubis.File) -> nubis.File:
        """Return the uploaded file's bytes reversed."""
        return nubis.File(file.data[::-1], filename=f"{file.filename or 'file'}.reversed",
                          content_type=file.content_type)
