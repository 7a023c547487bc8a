"""The life of one photon instance: init in the background, ready, shutdown, settings."""

from __future__ import annotations

import asyncio
import enum
import inspect
import logging
import os
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from nubis.models.resources import parse_bytes
from nubis.photon.photon import Photon

log = logging.getLogger("nubis.photon")

DEFAULT_MAX_BODY = 64 * 2**20
REPLICA_KEY_ENV = "NUBIS_REPLICA_KEY"
"""Set by a backend on a replica: the key its gateway sends in :data:`REPLICA_KEY_HEADER`."""
REPLICA_KEY_HEADER = "x-nubis-replica-key"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class ServeSettings:
    """How a photon is served. Every field also reads from ``NUBIS_*`` env vars (see from_env)."""

    max_body_size: int = DEFAULT_MAX_BODY
    debug: bool = False
    token: str | None = None
    threads: int = 32
    graceful_timeout: float = 30.0
    replica_key: str | None = field(default=None, repr=False)  # only the gateway sends it

    @classmethod
    def from_env(cls, **overrides: Any) -> ServeSettings:
        values: dict[str, Any] = {
            "max_body_size": parse_bytes(os.environ.get("NUBIS_MAX_BODY_SIZE", DEFAULT_MAX_BODY)),
            "debug": _env_flag("NUBIS_DEBUG"),
            "token": os.environ.get("NUBIS_PHOTON_TOKEN") or None,
            "threads": int(os.environ.get("NUBIS_THREADS", "32")),
            "graceful_timeout": float(os.environ.get("NUBIS_GRACEFUL_TIMEOUT", "30")),
            "replica_key": os.environ.get(REPLICA_KEY_ENV) or None,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


class PhotonState(enum.StrEnum):
    starting = "starting"
    ready = "ready"
    failed = "failed"
    stopping = "stopping"


@dataclass
class PhotonRuntime:
    """Owns the user's instance and the thread pool that runs sync handlers."""

    photon_cls: type[Photon]
    settings: ServeSettings
    state: PhotonState = PhotonState.starting
    error: str | None = None
    instance: Photon | None = None
    executor: ThreadPoolExecutor = field(init=False)
    on_init_failed: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.executor = ThreadPoolExecutor(
            max_workers=self.settings.threads, thread_name_prefix="nubis-handler"
        )

    @property
    def ready(self) -> bool:
        return self.state is PhotonState.ready

    async def start(self) -> None:
        """Create the instance and run ``init()`` without blocking the event loop."""
        try:
            instance = self.photon_cls()
            init = instance.init
            if inspect.iscoroutinefunction(init):
                await init()
            else:
                await asyncio.get_running_loop().run_in_executor(self.executor, init)
        except Exception as exc:
            self.state = PhotonState.failed
            self.error = format_user_error(exc, f"{self.photon_cls.__name__}.init() failed")
            log.error("%s", self.error)
            for callback in self.on_init_failed:
                callback(self.error)
            return
        self.instance = instance
        self.state = PhotonState.ready
        log.info("photon %s is ready", self.photon_cls.photon_name())

    async def stop(self) -> None:
        was_ready = self.instance is not None
        self.state = PhotonState.stopping
        if was_ready:
            try:
                shutdown = self.instance.shutdown  # type: ignore[union-attr]
                if inspect.iscoroutinefunction(shutdown):
                    await shutdown()
                else:
                    await asyncio.get_running_loop().run_in_executor(self.executor, shutdown)
            except Exception as exc:
                log.error("%s", format_user_error(exc, "shutdown() failed"))
        self.executor.shutdown(wait=False, cancel_futures=True)


def format_user_error(exc: BaseException, title: str) -> str:
    """One readable block: the title, the user's frames (not nubis's), the exception line."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if f"{os.sep}nubis{os.sep}photon{os.sep}" not in f.filename
        and f"{os.sep}concurrent{os.sep}futures{os.sep}" not in f.filename
        and f"{os.sep}asyncio{os.sep}" not in f.filename
        and not f.filename.startswith("<frozen ")  # importlib's machinery around user modules
    ]
    lines = [f"── {title} " + "─" * max(0, 60 - len(title))]
    for line in traceback.format_list(frames):
        lines.append(line.rstrip("\n"))
    lines.extend(line.rstrip("\n") for line in traceback.format_exception_only(type(exc), exc))
    lines.append("─" * 64)
    return "\n".join(lines)
