"""examples/grafana/nubis-dashboard.json uses only metric names that nubis exports: every
``nubis_*`` name in its expressions is a sample name of the control plane's, the gateway's, a
photon's or an LLM replica's registry (so a renamed metric breaks this test, not the dashboard)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry

from nubis.gateway.metrics import GatewayMetrics
from nubis.llm.engine import EngineStats
from nubis.llm.metrics import LLMMetrics
from nubis.photon.metrics import PhotonMetrics
from nubis.server.metrics import ServerMetrics

from servers import EXAMPLES

DASHBOARD = EXAMPLES / "grafana" / "nubis-dashboard.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",),
            "summary": ("", "_sum", "_count")}
_BRACES = re.compile(r"\{[^}]*\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME = re.compile(r"\bnubis_[a-zA-Z0-9_:]*")


def exported_names() -> set[str]:
    registries: list[CollectorRegistry] = [
        ServerMetrics().registry, GatewayMetrics().registry, PhotonMetrics().registry,
        LLMMetrics("m", EngineStats).registry]
    return {family.name + suffix for registry in registries for family in registry.collect()
            for suffix in SUFFIXES[family.type]}


def expressions(node: Any) -> Iterator[str]:
    """Every PromQL string of the dashboard: panel targets' ``expr`` and template queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            else:
                yield from expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from expressions(item)


def metric_names(expr: str) -> set[str]:
    """The metric names of a PromQL expression (label matchers and grouping lists taken out first)."""
    return set(_NAME.findall(_GROUPING.sub(" ", _BRACES.sub(" ", expr))))


def test_the_parser_finds_metric_names_not_labels() -> None:
    expr = ('histogram_quantile(0.95, sum by (le, nubis_role) (rate(nubis_gateway_request_seconds_bucket'
            '{workspace=~"nubis_x"}[5m]))) / on (deployment) nubis_replicas')
    assert metric_names(expr) == {"nubis_gateway_request_seconds_bucket", "nubis_replicas"}


def test_every_dashboard_metric_is_exported() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    found = list(expressions(dashboard))
    assert len(found) >= 15
    used = set().union(*(metric_names(e) for e in found))
    assert all(metric_names(e) for e in found), [e for e in found if not metric_names(e)]
    assert used - exported_names() == set()
    assert {"nubis_gateway_requests_total", "nubis_gateway_request_seconds_bucket", "nubis_replicas",
            "nubis_jobs_queued", "nubis_llm_generation_tokens_total",
            "nubis_llm_time_to_first_token_seconds_bucket"} <= used  # what the dashboard is for


def test_a_misspelt_name_would_be_caught() -> None:
    assert metric_names("rate(nubis_gateway_request_total[5m])") - exported_names() == {
        "nubis_gateway_request_total"}
