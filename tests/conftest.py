"""Shared fixtures: every test gets its own NUBIS_HOME, and helpers to read /metrics."""

from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(autouse=True)
def nubis_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep bundle caches, tokens and state out of the real ``~/.nubis``."""
    home = tmp_path_factory.mktemp("nubis-home")
    monkeypatch.setenv("NUBIS_HOME", str(home))
    return home


def parse_metrics(text: str) -> Samples:
    """Prometheus text → {(sample name, labels): value}."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


@pytest.fixture
def metric() -> Callable[[str, str], float | None]:
    """``metric(text, 'name{a="1",b="2"}')`` → the sample's value, or None when absent."""

    def read(text: str, key: str) -> float | None:
        name, _, rest = key.partition("{")
        labels = frozenset(
            (k, v.strip('"'))
            for k, _, v in (pair.partition("=") for pair in rest.rstrip("}").split(",") if pair)
        )
        return parse_metrics(text).get((name, labels))

    return read
