"""A pushed manifest's handlers, checked against the bundle's source — read with ``ast``, never imported.

The control plane never runs user code, so this is a syntactic check: every handler has a
Python identifier for a name and a safe URL path, no two share a route, and the entrypoint's
source defines the class and a ``def``/``async def`` (or an assignment) of each handler's name —
in the class, or, for handlers a base class brings, in another ``.py`` file of the bundle.
"""

from __future__ import annotations

import ast
import keyword
import re
import zipfile

from nubis.errors import BundleError
from nubis.models.photons import PhotonManifest
from nubis.photon.handler import RESERVED_PATHS

MAX_HANDLERS = 256
MAX_HANDLER_PATH = 256
MAX_PARSED_SOURCE = 16 * 2**20  # bytes of Python read to find handlers defined outside the entrypoint

_SEGMENT = re.compile(r"^[A-Za-z0-9_\-.]+$")


def is_safe_handler_path(path: str) -> bool:
    """``/predict``, ``/v1/chat/completions``: '/'-separated segments of letters, digits and ``_-.``."""
    if not path.startswith("/") or len(path) > MAX_HANDLER_PATH:
        return False
    if path in RESERVED_PATHS or path == "/_nubis" or path.startswith("/_nubis/"):
        return False
    segments = path[1:].split("/")
    if path == "/":
        return True
    return all(_SEGMENT.fullmatch(s) and s not in (".", "..") for s in segments)


def check_handlers(zf: zipfile.ZipFile, manifest: PhotonManifest, sources: list[str]) -> None:
    """``BundleError`` unless the manifest's handlers are well formed and defined in ``sources``."""
    if len(manifest.handlers) > MAX_HANDLERS:
        raise BundleError(f"the manifest lists {len(manifest.handlers)} handlers; at most {MAX_HANDLERS}")
    routes: set[tuple[str, str]] = set()
    for h in manifest.handlers:
        if not h.name.isidentifier() or keyword.iskeyword(h.name) or not h.name.isascii():
            raise BundleError(f"handler name {h.name[:64]!r} is not a Python identifier")
        if not is_safe_handler_path(h.path):
            raise BundleError(f"handler {h.name!r} has path {h.path[:80]!r}: use '/' and letters, digits, "
                              f"'_-.' (at most {MAX_HANDLER_PATH} characters, not a reserved path)")
        if (h.method, h.path) in routes:
            raise BundleError(f"two handlers serve {h.method} {h.path}")
        routes.add((h.method, h.path))
    rel, _, class_name = manifest.entrypoint.partition(":")
    tree = _parse(zf, rel)
    cls = next((n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == class_name), None)
    if cls is None:
        raise BundleError(f"the entrypoint file {rel!r} does not define class {class_name!r}")
    missing = {h.name for h in manifest.handlers} - _defined_names(cls)
    budget = MAX_PARSED_SOURCE
    for other in sorted(s for s in sources if s.endswith(".py") and s != rel):
        if not missing:
            break
        budget -= zf.getinfo(other).file_size
        if budget < 0:
            break
        missing -= _defined_names(_parse(zf, other))
    if missing:
        raise BundleError(f"the manifest lists handlers the code does not define: {sorted(missing)[:10]} "
                          f"(not in class {class_name!r} of {rel!r}): rebuild the bundle with "
                          "`nubis photon build`")


def _parse(zf: zipfile.ZipFile, rel: str) -> ast.AST:
    try:
        return ast.parse(zf.read(rel), filename=rel)
    except SyntaxError as exc:
        raise BundleError(f"{rel!r} is not valid Python here (line {exc.lineno}: {exc.msg})") from None
    except (ValueError, RecursionError, MemoryError):
        raise BundleError(f"{rel!r} cannot be read as Python source") from None


def _defined_names(tree: ast.AST) -> set[str]:
    """Names a class (or module) defines: functions, and targets of assignments."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names
