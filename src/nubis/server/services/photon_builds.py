"""Photons the control plane generates (``nubis model deploy``, ``nubis llm deploy``): built into a
bundle in a subprocess (building imports the photon, and the control plane never imports torch),
then pushed like any other bundle."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from nubis.errors import NubisError

BUILD_TIMEOUT_S = 120


async def build_in_subprocess(script: str, args: list[str], out: Path, *, what: str,
                              timeout_s: float = BUILD_TIMEOUT_S) -> Path:
    """Run ``python -c script *args``, which writes the bundle ``out``; NubisError with the
    subprocess's last lines when it does not."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise NubisError(f"building the photon for {what} took over {timeout_s:g} s") from None
    if process.returncode != 0 or not out.exists():
        lines = output.decode(errors="replace").strip().splitlines()[-3:]
        raise NubisError(f"cannot build a photon for {what}: " + " | ".join(lines))
    return out


async def chunks(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            yield chunk
