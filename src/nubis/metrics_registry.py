"""Where every nubis process builds its Prometheus registry: one per app, without ``_created``.

prometheus_client adds a ``<name>_created`` gauge to every counter and histogram (the time the
series was created): a duplicate series per child that Prometheus itself never reads from the text
format. Its switch is process-wide and read at every scrape, so each process that serves
``/metrics`` (control plane, gateway, photon replica) turns it off when it builds its registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, disable_created_metrics

# What ``generate_latest`` writes for our names (all legacy: no escaping needed), said as every
# Prometheus and promtool reads it; prometheus_client's own CONTENT_TYPE_LATEST says 1.0.0 since 0.22.
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"


def new_registry() -> CollectorRegistry:
    """A registry of its own (tests build many apps in one process), ``_created`` series off."""
    disable_created_metrics()
    return CollectorRegistry(auto_describe=True)
