"""A workload's folder and the workspace's storage: what may be copied out of it, and how.

The folders are the workload's (it runs as another uid, or at least sandboxed): a copy never follows
a link (a link to a file of the platform would otherwise be read with the platform's rights), skips
anything that is not a plain file with one link, and opens each file beneath its folder's descriptor
(``os.fwalk``), so swapping a folder for a link during the copy leads nowhere. Used by the control
plane for a job's outputs (``server/services/job_outputs.py``) and by the Ray backend's workers for
their checkpoints and outputs (``push_folder``, ``pull_folder``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

from nubis.errors import NubisError
from nubis.storage import Store

log = logging.getLogger("nubis.backends.files")

Seen = dict[str, tuple[int, int]]
"""A folder's plain files: relative path → (mtime in ns, size)."""


def open_plain(name: str, dir_fd: int) -> int | None:
    """A descriptor of a plain, singly linked file (never through a link), or None."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return None
    info = os.fstat(fd)
    if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
        return fd
    os.close(fd)
    return None


def holds_files(folder: Path) -> bool:
    """Whether anything but folders lies below ``folder`` (links too): nothing to push when not."""
    return any(names for _root, _dirs, names in os.walk(folder))


def push_folder(store: Store, folder: Path, prefix: str, known: Seen, *, delete: bool) -> Seen:
    """Upload the files of ``folder`` that changed since ``known`` to ``prefix/``; with ``delete``,
    delete there the ones gone since. Returns what the folder holds now."""
    now: Seen = {}
    if not folder.is_dir():
        return known
    for root, _dirs, names, root_fd in os.fwalk(folder, follow_symlinks=False):
        for name in sorted(names):
            rel = os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
            fd = open_plain(name, root_fd)
            if fd is None:
                continue
            with os.fdopen(fd, "rb") as fh:
                info = os.fstat(fh.fileno())
                now[rel] = (info.st_mtime_ns, info.st_size)
                if known.get(rel) == now[rel]:
                    continue
                try:
                    store.put_file(f"{prefix}/{rel}", fh)
                except NubisError as exc:
                    log.warning("%s not saved to %s: %s", rel, prefix, exc)
                    now.pop(rel)
    for rel in known.keys() - now.keys() if delete else ():
        with contextlib.suppress(NubisError):
            store.delete(f"{prefix}/{rel}")
    return now


def pull_folder(store: Store, prefix: str, folder: Path) -> Seen:
    """Download every file under ``prefix/`` into ``folder``; what it holds then."""
    for obj in store.list(prefix + "/"):
        try:
            store.download(obj.path, folder / obj.path[len(prefix) + 1:])
        except NubisError as exc:  # a name storage holds but refuses ('..'): never written here
            log.warning("%s not restored: %s", obj.path, exc)
    found: Seen = {}
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            info = path.stat()
            found[path.relative_to(folder).as_posix()] = (info.st_mtime_ns, info.st_size)
    return found
