"""Input limits: how big, how deep and how many, for everything a caller can send.

One place for the numbers (``docs/platform.md`` "Limits" lists them) and the pure checks that
models, services and backends share. Nothing here does I/O.
"""

from __future__ import annotations

import math
import re
import zipfile
from collections.abc import Iterable, Mapping
from typing import Any

MAX_JSON_BODY = 2**20  # a JSON request body; uploads (storage, photon bundles) stream with their own
MAX_SPEC_BYTES = 256 * 2**10  # a deployment or job spec, as JSON
MAX_ENV_VALUE = 32 * 2**10  # one env value, in UTF-8 bytes
MAX_ENV_VARS = 512
MAX_COMMAND_BYTES = 64 * 2**10  # a job's argv, all arguments together, in UTF-8 bytes
MAX_TIMEOUT_S = 366 * 86400  # a job attempt's timeout
MAX_REPLICAS = 10_000  # per deployment
MAX_VERSION = 2**31 - 1  # photon and model versions, job attempts: a 32-bit column everywhere
MAX_JSON_DEPTH = 32  # free-form JSON values (reported metrics)

MAX_CODE_BYTES = 2**30  # a job's code archive, unpacked
MAX_CODE_FILES = 20_000
MAX_CODE_RATIO = 200  # unpacked / compressed, over the whole archive (a zip bomb is ~1000:1)

_VERSION = re.compile(r"[0-9]{1,10}")


def parse_version(version: str) -> int | None:
    """``"latest"`` → None, ``"3"`` → 3; ``ValueError`` for anything else, also beyond :data:`MAX_VERSION`."""
    if version == "latest":
        return None
    if not _VERSION.fullmatch(version) or int(version) > MAX_VERSION:
        raise ValueError(f"a version is a number up to {MAX_VERSION} or 'latest', not {version[:40]!r}")
    return int(version)


def check_env(env: Mapping[str, str]) -> None:
    """Env values: at most :data:`MAX_ENV_VALUE` bytes each, no NUL (a process cannot get one)."""
    if len(env) > MAX_ENV_VARS:
        raise ValueError(f"{len(env)} env vars; at most {MAX_ENV_VARS}")
    for name, value in env.items():
        if len(value.encode("utf-8", "surrogatepass")) > MAX_ENV_VALUE:
            raise ValueError(f"env {name[:64]!r} is longer than {MAX_ENV_VALUE // 1024} KiB: "
                             "put large values in storage or a secret file")
        if "\0" in value:
            raise ValueError(f"env {name[:64]!r} contains a NUL character")


def check_command(command: Iterable[str]) -> None:
    """A job's argv: at most :data:`MAX_COMMAND_BYTES` in all, no NUL in any argument."""
    total = 0
    for arg in command:
        if "\0" in arg:
            raise ValueError("a command argument contains a NUL character")
        total += len(arg.encode("utf-8", "surrogatepass")) + 1
    if total > MAX_COMMAND_BYTES:
        raise ValueError(f"the command is {total} bytes long; at most {MAX_COMMAND_BYTES // 1024} KiB: "
                         "put long inputs in a file (the job's code archive or storage)")


def check_spec_size(spec_json: str, *, what: str) -> None:
    size = len(spec_json.encode("utf-8", "surrogatepass"))
    if size > MAX_SPEC_BYTES:
        raise ValueError(f"the {what} spec is {size} bytes as JSON; at most {MAX_SPEC_BYTES // 1024} KiB")


def check_finite_json(value: Any, *, depth: int = 0) -> None:
    """A free-form JSON value: finite numbers only, nested at most :data:`MAX_JSON_DEPTH` deep."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"values are nested more than {MAX_JSON_DEPTH} deep")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite (no NaN or Infinity)")
    if isinstance(value, dict):
        for item in value.values():
            check_finite_json(item, depth=depth + 1)
    elif isinstance(value, list):
        for item in value:
            check_finite_json(item, depth=depth + 1)


def check_code_archive(members: list[zipfile.ZipInfo], *, archive_size: int) -> None:
    """A job's code zip, from its central directory: file count, unpacked size, compression ratio.

    ``ValueError`` says which limit it passes. The sizes are what the archive's central directory
    declares, and they hold: ``zipfile`` never writes more than a member's declared size (and fails
    its CRC check when the data would go on).
    """
    if len(members) > MAX_CODE_FILES:
        raise ValueError(f"the code archive holds {len(members)} entries; at most {MAX_CODE_FILES}")
    total = sum(m.file_size for m in members)
    if total > MAX_CODE_BYTES:
        raise ValueError(f"the code archive unpacks to {total} bytes; at most {MAX_CODE_BYTES // 2**20} MiB: "
                         "put data in storage, not in the code")
    if total > 2**20 and total > MAX_CODE_RATIO * max(archive_size, 1):
        raise ValueError(f"the code archive unpacks to {total} bytes from {archive_size}: a ratio above "
                         f"{MAX_CODE_RATIO}:1 looks like a zip bomb")
