"""The ``nubis_llm_*`` metrics of one LLM replica: load for the autoscaler, tokens, latency.

They live in a registry of their own that the photon hands to its app (``Photon.collectors``), so
they appear on the replica's ``/metrics`` next to ``nubis_photon_*``. Every series has a
``model`` label (the name the OpenAI API shows).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from nubis.llm.engine import EngineStats
from nubis.metrics_registry import new_registry

TTFT_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80,
)
TPOT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5)


class LLMMetrics:
    """Counters and histograms observed per request; the two gauges read ``load()`` at scrape."""

    def __init__(self, model: str, load: Callable[[], EngineStats]) -> None:
        self.registry: CollectorRegistry = new_registry()
        labels = ["model"]
        self.prompt_tokens = Counter(
            "nubis_llm_prompt_tokens", "Prompt tokens of the requests admitted",
            labels, registry=self.registry,
        ).labels(model)
        self.generation_tokens = Counter(
            "nubis_llm_generation_tokens", "Tokens generated (streamed or not, finished or cut)",
            labels, registry=self.registry,
        ).labels(model)
        self.time_to_first_token = Histogram(
            "nubis_llm_time_to_first_token_seconds",
            "Time from the request's arrival to its first generated text",
            labels, buckets=TTFT_BUCKETS, registry=self.registry,
        ).labels(model)
        self.time_per_output_token = Histogram(
            "nubis_llm_time_per_output_token_seconds",
            "Mean time between output tokens after the first, one observation per request",
            labels, buckets=TPOT_BUCKETS, registry=self.registry,
        ).labels(model)
        self.registry.register(_Load(model, load))

    def finished(self, *, completion_tokens: int, first_token_at: float | None, end: float) -> None:
        """One request ended (finished, cut at its limit, or its client left); its tokens were
        counted in ``generation_tokens`` as they were generated."""
        if first_token_at is not None and completion_tokens > 1:
            self.time_per_output_token.observe((end - first_token_at) / (completion_tokens - 1))


class _Load:
    """``nubis_llm_requests_running`` / ``_waiting``: what the autoscaler scales LLMs on."""

    def __init__(self, model: str, load: Callable[[], EngineStats]) -> None:
        self.model = model
        self.load = load

    def describe(self) -> list[Metric]:
        return [self._family("running", 0), self._family("waiting", 0)]

    def collect(self) -> Iterator[Metric]:
        stats = self.load()
        yield self._family("running", stats.running)
        yield self._family("waiting", stats.waiting)

    def _family(self, which: str, value: int) -> GaugeMetricFamily:
        help_text = {
            "running": "Requests generating now",
            "waiting": "Requests received and not generating yet (queued in the engine or the server)",
        }[which]
        family = GaugeMetricFamily(f"nubis_llm_requests_{which}", help_text, labels=["model"])
        family.add_metric([self.model], value)
        return family
