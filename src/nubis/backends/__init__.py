"""Where replicas run: ``Backend`` and its capability mixins (base), the ``local`` backend."""

from nubis.backends.base import (
    Backend,
    Capacity,
    GpuCapability,
    LogsCapability,
    ReplicaHandle,
    ReplicaProbe,
    ReplicaSpec,
    backend_names,
    get_backend_class,
)
from nubis.backends.local import LocalBackend
from nubis.errors import NoCapacityError

__all__ = [
    "Backend",
    "Capacity",
    "GpuCapability",
    "LocalBackend",
    "LogsCapability",
    "NoCapacityError",
    "ReplicaHandle",
    "ReplicaProbe",
    "ReplicaSpec",
    "backend_names",
    "get_backend_class",
]
