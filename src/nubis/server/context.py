"""What every request may need, built once at start: settings, database, secret box, storage."""

from __future__ import annotations

from dataclasses import dataclass, field

from nubis.backends.base import Backend
from nubis.server.db import Database
from nubis.server.metrics import ServerMetrics
from nubis.server.security import SecretBox
from nubis.server.services.gateway import LoadBook
from nubis.server.services.metric_history import MetricStore
from nubis.server.settings import ServerSettings
from nubis.storage import ObjectStore


@dataclass
class ServerContext:
    settings: ServerSettings
    db: Database
    box: SecretBox
    store: ObjectStore
    backend: Backend
    loads: LoadBook
    members_contained: bool = True
    """Workloads are sandboxed, or the operator said members are trusted (``--trust-members``):
    only then may a second workspace or a non-admin token exist."""
    isolation: str = ""
    """The line ``nubis up`` prints about workload isolation."""
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    """This app's Prometheus metrics (a registry of its own), served at ``/metrics``."""
    history: MetricStore = field(default_factory=MetricStore)
    """Each deployment's requests, 5xx and latency in 10 s steps for 24 h (from load reports)."""
    stopping: bool = False
    """Set when the server was asked to stop: endless streams (the console's) end, so that the
    server's drain does not wait for the browsers that hold them."""
