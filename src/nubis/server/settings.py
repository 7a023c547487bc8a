"""Where the control plane keeps its state, and how it is reached."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from nubis.home import nubis_home

DEFAULT_PORT = 8400
DEFAULT_GATEWAY_PORT = 8401


def database_url(url: str | None, home: Path) -> str:
    """User-facing URLs (``sqlite:///x.db``, ``postgresql://…``) → SQLAlchemy async URLs."""
    if not url:
        return f"sqlite+aiosqlite:///{home / 'nubis.db'}"
    for plain, driver in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
        ("sqlite://", "sqlite+aiosqlite://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain):]
    return url


class ServerSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    home: Path = Field(default_factory=nubis_home)
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    gateway_port: int = DEFAULT_GATEWAY_PORT
    db_url: str | None = None
    storage_url: str | None = None
    max_upload_bytes: int | None = None
    start_gateway: bool = False
    trust_members: bool = False
    """Run workloads unsandboxed, as the control plane's user (members are as trusted as admins)."""
    backend: Literal["local", "ray"] = "local"
    """Where workloads run: this machine, or the nodes of a Ray cluster (``nubis[ray]``)."""
    ray_address: str = "auto"
    """The Ray cluster to join (``auto``: the one ``ray start`` runs on this machine)."""
    advertise_url: str | None = None
    """How workloads reach the API (``NUBIS_API_URL``), e.g. ``http://10.0.0.5:8400`` on a cluster;
    default: ``url``, with ``0.0.0.0`` read as this machine."""
    shared_storage: bool = False
    """A storage folder mounted at the same path on every node (else S3 is needed on a cluster)."""
    backup_every_s: float | None = None
    """Write a backup archive this often (``nubis up --backup-every 6h``); None: no scheduled backups."""
    backup_keep: int = 14
    """How many scheduled archives to keep (the newest)."""
    backup_dir: Path | None = None
    """Where scheduled archives go (default ``<home>/backups``)."""
    alert_interval_s: float = 15.0
    """How often the alert rules are evaluated (``nubis up --alert-interval 15s``)."""
    alert_retry_s: float = 2.0
    """The first wait before a failed webhook delivery is retried; each next one doubles."""

    @property
    def database(self) -> str:
        return database_url(self.db_url, self.home)

    @property
    def storage(self) -> str:
        return self.storage_url or str(self.home / "storage")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def workload_api_url(self) -> str:
        return self.advertise_url or self.url.replace("://0.0.0.0:", "://127.0.0.1:")

    @property
    def gateway_url(self) -> str:
        return f"http://{self.host}:{self.gateway_port}"

    @property
    def backups_folder(self) -> Path:
        return self.backup_dir or self.home / "backups"

    @property
    def master_key_file(self) -> Path:
        return self.home / "master.key"

    @property
    def admin_token_file(self) -> Path:
        return self.home / "admin.token"

    @property
    def server_file(self) -> Path:
        return self.home / "server.json"

    @property
    def metric_history_file(self) -> Path:
        """The metric history between a stop and the next start (services/metric_history.py)."""
        return self.home / "metric-history.bin"
