"""Per-epoch metric reports: a ``nubis-metric {json}`` line on stdout and a POST to the control plane.

The POST goes to ``{NUBIS_API_URL}/api/v1/jobs/{NUBIS_JOB_ID}/metrics`` with
``Authorization: Bearer {NUBIS_JOB_TOKEN}`` when all three are set. A failed report is logged to
stderr and never fails training.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any, TextIO

import httpx

METRIC_PREFIX = "nubis-metric "
POST_TIMEOUT_S = 2.0


def metrics_url(env: Mapping[str, str]) -> tuple[str, str] | None:
    """(url, token) to POST metrics to, or None when the job has no control plane to report to."""
    api, job, token = env.get("NUBIS_API_URL"), env.get("NUBIS_JOB_ID"), env.get("NUBIS_JOB_TOKEN")
    if not (api and job and token):
        return None
    return f"{api.rstrip('/')}/api/v1/jobs/{job}/metrics", token


def metric_line(metrics: Mapping[str, Any]) -> str:
    return METRIC_PREFIX + json.dumps(dict(metrics), separators=(",", ":"))


class MetricReporter:
    def __init__(
        self,
        env: Mapping[str, str],
        *,
        out: TextIO | None = None,
        err: TextIO | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._out = out or sys.stdout
        self._err = err or sys.stderr
        self._target = metrics_url(env)
        self._client = (
            httpx.Client(timeout=POST_TIMEOUT_S, transport=transport) if self._target else None
        )

    def report(self, metrics: Mapping[str, Any]) -> bool:
        """Print the line, then POST it; returns whether the POST succeeded (False if none was made)."""
        print(metric_line(metrics), file=self._out, flush=True)
        if self._client is None or self._target is None:
            return False
        url, token = self._target
        try:
            response = self._client.post(
                url, json=dict(metrics), headers={"Authorization": f"Bearer {token}"}
            )
            response.raise_for_status()
        except httpx.HTTPError as exc:
            print(f"warning: could not report metrics to {url}: {_describe(exc)}", file=self._err, flush=True)
            return False
        return True

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
