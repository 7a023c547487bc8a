"""The Ray backend's job worker actor: one detached named actor per rank of a gang, in its bundle.

A ``WorkerActor`` is a ``ReplicaActor`` (``ray_actors.py``) that runs a job's command instead of the
photon server: the same node folders, sandboxed start with the parent-death signal, node-local
log read by the control plane, ``poll``/``stop``/``forget``. It is created first without its env
(``prepare`` tells rank 0's free port for ``MASTER_PORT``), then ``start(env)`` runs it:

1. fetch the job's code from storage (``ArtifactCache``, hash-checked) and unpack it as the cwd;
2. the interpreter: the platform's, or a virtualenv of the job's requirements built on this node;
3. restore ``.jobs/<job>/checkpoints/`` of the workspace's storage into ``NUBIS_CHECKPOINT_DIR``
   (when the control plane saw any there: ``start``'s ``restore``);
4. run the command; while it runs, files changed in ``NUBIS_CHECKPOINT_DIR`` are pushed back every
   ``SYNC_EVERY_S`` (and deleted ones deleted), so an attempt on another node resumes from them;
5. at exit, a last push, then ``NUBIS_OUTPUT_DIR`` is uploaded to the job's outputs
   (``.jobs/<job>/outputs/``, every rank into the same folder) before the exit code is reported.

Everything of one worker lives in ``state/work/<worker>`` on its node (``code``, ``checkpoints``,
``outputs``, ``tmp``, ``home``), removed by ``forget``. Only plain, singly linked files are pushed,
never through a link (``workload_files.py``).

Imported only by the Ray backend, so ``ray`` (through ``ray_actors``) is imported at module top.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from nubis.backends.artifacts import Artifact, ArtifactCache
from nubis.backends.local_jobs import PYTHON_NAMES, elastic_error, local_storage, unpack_code
from nubis.backends.local_processes import REPLICA_ID_ENV, SECRET_ENV
from nubis.backends.local_venvs import venv_of
from nubis.backends.ray_actors import ReplicaActor, _die_with_parent, free_port, launch_command, node_sandbox
from nubis.backends.sandbox import Sandbox
from nubis.backends.workload_files import Seen, holds_files, pull_folder, push_folder
from nubis.errors import NubisError
from nubis.models.jobs import job_outputs_path
from nubis.storage import Store

log = logging.getLogger("nubis.backends.ray")

SYNC_EVERY_S = 2.0
FINISH_WAIT_S = 120.0
"""How long ``stop`` waits for the last checkpoint push and the outputs upload."""

def checkpoints_path(job_id: str) -> str:
    """Where a job's ``NUBIS_CHECKPOINT_DIR`` is kept in its workspace's storage between attempts."""
    return f".jobs/{job_id}/checkpoints"


class WorkerActor(ReplicaActor):
    """One rank of a gang on one node; started by ``start(env)``, once (``poll`` never starts it)."""

    def __init__(self, payload: dict[str, Any], storage_url: str, storage_options: dict[str, Any]) -> None:
        super().__init__(payload, storage_url, storage_options)
        self.port: int | None = None
        self.env: dict[str, str] | None = None
        self.restore = True
        self.checkpoints = self.work / "checkpoints"
        self.error_file = self.work / "tmp" / f"error-{payload['replica_id']}.json"
        self.outputs = self.work / "outputs"
        self._pushed: Seen = {}
        self._push_lock = asyncio.Lock()

    def _ensure_started(self) -> None:
        if self.env is not None:
            super()._ensure_started()

    async def prepare(self) -> dict[str, Any]:
        """Where it is; rank 0 also reserves the port its rendezvous store listens on."""
        if self.payload["rank"] == 0 and self.port is None:
            self.port = free_port(self.host)
        return {"node": self.node_id, "host": self.host, "gpus": list(self.gpus), "port": self.port}

    async def start(self, env: dict[str, str], restore: bool = True) -> dict[str, Any]:
        """Run the command with ``env`` (the job's and its rank's), restoring the job's checkpoints
        first unless the control plane found none (``restore``); once."""
        if self.env is None:
            self.env = dict(env)
            self.restore = restore
            self._ensure_started()
        return await self.poll()

    async def _launch(self) -> None:
        p = self.payload
        workspace = p["workspace"]
        sandbox = await asyncio.to_thread(node_sandbox, self.root, workspace)
        for folder in (self.root, self.root / "work"):
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o711)
        (self.root / "logs").mkdir(mode=0o700, exist_ok=True)
        await asyncio.to_thread(shutil.rmtree, self.work, True)
        self.work.mkdir(mode=0o711)
        cwd = self.work / "code"
        if p["code"] is not None:
            self.detail = "fetching its code"
            archive = await asyncio.to_thread(
                ArtifactCache(self.store, self.root / "artifacts").fetch, Artifact.from_dict(p["code"]))
            await asyncio.to_thread(unpack_code, archive, cwd)
            await asyncio.to_thread(sandbox.give, cwd, workspace)
        python = await self._python(list(p["requirements"]), workspace, sandbox)
        self.checkpoints.mkdir()
        if self.restore:  # the control plane saw checkpoints in storage (or could not tell)
            self.detail = "restoring its checkpoints"
            self._pushed = await asyncio.to_thread(pull_folder, await self._files(),
                                                   checkpoints_path(p["job_id"]), self.checkpoints)
        for folder in (cwd, self.checkpoints, self.outputs, self.work / "tmp", self.work / "home"):
            sandbox.own(folder, workspace)
        await asyncio.to_thread(sandbox.give, self.checkpoints, workspace)
        await self._run(self._command(python, sandbox), self._env(python, sandbox), cwd)

    def _env(self, python: str, sandbox: Sandbox) -> dict[str, str]:
        assert self.env is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and not SECRET_ENV.search(k)}
        env.update(self.env)
        bins = dict.fromkeys([str(Path(python).parent), str(Path(sys.executable).parent)])  # the job's first
        env.update({
            "CUDA_VISIBLE_DEVICES": ",".join(self.gpus),
            REPLICA_ID_ENV: self.payload["replica_id"],
            "NUBIS_CHECKPOINT_DIR": str(self.checkpoints),
            "NUBIS_OUTPUT_DIR": str(self.outputs),
            "PYTHONUNBUFFERED": "1",
            "PATH": os.pathsep.join([*bins, env.get("PATH", "")]),
            **sandbox.env(self.payload["workspace"], tmp=self.work / "tmp", home=self.work / "home"),
        })
        if self.port is not None:
            env["MASTER_PORT"] = str(self.port)
        if "TORCHELASTIC_ERROR_FILE" not in self.env:  # torch.distributed.elastic's @record writes here
            env["TORCHELASTIC_ERROR_FILE"] = str(self.error_file)
        return env

    def _command(self, python: str, sandbox: Sandbox) -> list[str]:
        assert self.env is not None
        argv = list(self.payload["command"])
        if argv[0] in PYTHON_NAMES:
            argv[0] = python
        writable = [str(self.work / name) for name in ("code", "checkpoints", "outputs", "tmp", "home")]
        storage = local_storage(self.env.get("NUBIS_STORAGE_URL"))
        if storage is not None:  # a folder every node mounts at the same path
            sandbox.share_storage(storage, self.payload["workspace"])
            writable.append(str(storage))
        policy = sandbox.policy(workspace=self.payload["workspace"], read=venv_of(python), write=writable,
                                gang=int(self.env.get("WORLD_SIZE", "1")) > 1)
        return launch_command(sandbox, argv, policy)

    async def _run(self, command: list[str], env: dict[str, str], cwd: Path) -> None:
        with self.log_path.open("ab") as out:
            self.process = await asyncio.create_subprocess_exec(
                *command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                start_new_session=True, preexec_fn=_die_with_parent)
        self.state, self.detail = "running", ""
        log.info("worker %s: pid %d, gpus [%s]", self.payload["replica_id"], self.process.pid,
                 ",".join(self.gpus))
        syncer = asyncio.get_running_loop().create_task(self._sync_checkpoints())
        code = await self.process.wait()
        error = await asyncio.to_thread(elastic_error, str(self.error_file)) if code else None
        if error:
            self.detail = f"error reported by the script (torch.distributed.elastic): {error}"
        syncer.cancel()
        await self._push_checkpoints()
        try:
            if await asyncio.to_thread(holds_files, self.outputs):
                outputs = job_outputs_path(self.payload["job_id"])
                await asyncio.to_thread(push_folder, await self._files(), self.outputs, outputs, {},
                                        delete=False)
        except (NubisError, OSError) as exc:
            self.detail = "; ".join(filter(None, [self.detail, f"its outputs could not be saved: {exc}"]))
        self.exit_code, self.state = code, "exited"

    async def _files(self) -> Store:
        """The workspace's files in storage (opened on first use: a thread, it may load the S3 client)."""
        return await asyncio.to_thread(self.store.files, self.payload["workspace"])

    async def _sync_checkpoints(self) -> None:
        while True:
            await asyncio.sleep(SYNC_EVERY_S)
            await self._push_checkpoints()

    async def _push_checkpoints(self) -> None:
        async with self._push_lock:
            try:
                if not self._pushed and not await asyncio.to_thread(holds_files, self.checkpoints):
                    return  # nothing saved yet, nothing to delete: storage is not even opened
                self._pushed = await asyncio.to_thread(push_folder, await self._files(), self.checkpoints,
                                                       checkpoints_path(self.payload["job_id"]), self._pushed,
                                                       delete=True)
            except (NubisError, OSError) as exc:
                log.warning("worker %s: checkpoints not pushed: %s", self.payload["replica_id"], exc)

    async def stop(self, grace_s: float) -> int | None:
        """As a replica's, then wait for the last checkpoint push and the outputs upload."""
        code = await super().stop(grace_s)
        if self._task is not None and self.process is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), FINISH_WAIT_S)
        return self.exit_code if self.exit_code is not None else code
