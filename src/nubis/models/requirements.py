"""A job's pip requirements: read from a ``requirements.txt`` and checked, with no I/O.

A requirement is one PEP 508 line (``name[extras] specifiers ; markers`` or ``name @ url``); the
platform installs the ones its own environment lacks into a cached virtualenv. pip's options
(``-r``, ``-e``, ``--index-url``, ``--hash`` …) are refused: the operator's pip settings choose the
index, and each line becomes one argument of ``pip install``.
"""

from __future__ import annotations

import re

MAX_REQUIREMENTS = 200
MAX_REQUIREMENT_CHARS = 512
MAX_REQUIREMENTS_FILE_BYTES = 64 * 2**10

_REQUIREMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\s*(\[[A-Za-z0-9._,\s-]*\])?\s*([(<=>!~;@].*)?$")
_OPTION = re.compile(r"(^|\s)-")


def requirement_name(requirement: str) -> str:
    """The distribution name a requirement line starts with (``torch>=2`` → ``torch``)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return match.group(1) if match else ""


def check_requirements(requirements: list[str]) -> list[str]:
    """``ValueError`` naming the first line that is not a plain requirement or passes a limit."""
    if len(requirements) > MAX_REQUIREMENTS:
        raise ValueError(f"{len(requirements)} requirements; at most {MAX_REQUIREMENTS}")
    for requirement in requirements:
        shown = requirement[:80]
        if len(requirement) > MAX_REQUIREMENT_CHARS:
            raise ValueError(f"requirement {shown!r}… is longer than {MAX_REQUIREMENT_CHARS} characters")
        if _OPTION.search(requirement):
            raise ValueError(f"requirement {shown!r}: pip options are not supported in a job's "
                             "requirements (one requirement per line; the platform's pip settings "
                             "choose the index)")
        if any(c in requirement for c in "\0\r\n") or not _REQUIREMENT.match(requirement):
            raise ValueError(f"{shown!r} is not a requirement: write 'name', 'name==1.2', "
                             "'name[extra]>=1; python_version>=\"3.10\"' or 'name @ https://…'")
    return requirements


def parse_requirements(text: str, *, source: str = "requirements.txt") -> list[str]:
    """The requirements a ``requirements.txt`` lists: comments, blank lines and ``\\``
    continuations dropped, duplicates kept once; ``ValueError`` (naming ``source`` and the line)
    for anything else."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_REQUIREMENTS_FILE_BYTES:
        raise ValueError(f"{source} is over {MAX_REQUIREMENTS_FILE_BYTES // 1024} KiB")
    requirements: list[str] = []
    number, pending = 0, ""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = pending + re.sub(r"(^|\s)#.*$", "", raw).strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1].rstrip() + " "
            continue
        if not line:
            continue
        try:
            check_requirements([line])
        except ValueError as exc:
            raise ValueError(f"{source}, line {number}: {exc}") from None
        if line not in requirements:
            requirements.append(line)
    if pending.strip():
        raise ValueError(f"{source}, line {number}: the file ends in a line continuation")
    try:
        return check_requirements(requirements)
    except ValueError as exc:
        raise ValueError(f"{source}: {exc}") from None
