"""A job's outputs: its ``NUBIS_OUTPUT_DIR``, copied to the workspace's storage
(``.jobs/<job id>/outputs/``) when each attempt ends, so they outlive the job's folder.

The folder is the workload's: the copy never follows a link (a symbolic link to a file of the
platform would otherwise be read with the control plane's rights), skips anything that is not a
plain file with one link, and opens each file beneath a directory descriptor (``os.fwalk``), so
swapping a folder for a link during the copy leads nowhere.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncSession

from nubis.backends.workload_files import open_plain
from nubis.errors import NubisError
from nubis.models.jobs import job_outputs_path
from nubis.models.storage import StorageObject, normalize_path
from nubis.server.context import ServerContext
from nubis.server.deps import Caller
from nubis.server.services.jobs import get_row_or_raise
from nubis.storage import Store

log = logging.getLogger("nubis.jobs.outputs")

MAX_OUTPUT_FILES = 10_000


@dataclass
class SavedOutputs:
    files: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)


def _copy(store: Store, fd: int, path: str) -> int:
    with os.fdopen(fd, "rb") as fh:
        return store.put_file(path, fh)


def save_outputs(store: Store, folder: str, prefix: str) -> SavedOutputs:
    """Copy the plain files under ``folder`` to ``prefix/`` and drop what was there before and is
    gone now. A missing folder changes nothing (a job forgotten already)."""
    saved = SavedOutputs()
    if not os.path.isdir(folder) or os.path.islink(folder):
        return saved
    kept: set[str] = set()
    for root, _dirs, names, root_fd in os.fwalk(folder, follow_symlinks=False):
        for name in sorted(names):
            rel = os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
            try:
                target = normalize_path(f"{prefix}/{rel}")
            except NubisError:
                saved.skipped.append(rel)
                continue
            if saved.files >= MAX_OUTPUT_FILES:
                saved.skipped.append(rel)
                continue
            fd = open_plain(name, root_fd)
            if fd is None:
                saved.skipped.append(rel)
                continue
            try:
                saved.bytes += _copy(store, fd, target)
            except NubisError as exc:  # e.g. a file where a folder of an earlier attempt stood
                log.warning("output %s not saved: %s", target, exc)
                saved.skipped.append(rel)
                continue
            saved.files += 1
            kept.add(target)
    for old in store.list(prefix + "/"):
        if old.path not in kept:
            store.delete(old.path)
    return saved


async def list_outputs(session: AsyncSession, ctx: ServerContext, caller: Caller,
                       ref: str) -> list[StorageObject]:
    """The files the job's attempts left in its outputs folder (storage paths, sizes)."""
    row = await get_row_or_raise(session, caller, ref)
    store = ctx.store.files(caller.workspace)
    found = await asyncio.to_thread(store.list, job_outputs_path(row.id) + "/")
    return [StorageObject(path=o.path, size=o.size, modified=o.modified) for o in found]
