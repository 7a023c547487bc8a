"""Schemathesis over the control plane's OpenAPI spec: no input makes the server answer 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from platform_process import PlatformProcess, nubis_up

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    with nubis_up(Path(tmp_path_factory.mktemp("fuzz"))) as platform:
        yield platform


@pytest.fixture(scope="module")
def api_schema(running: PlatformProcess) -> schemathesis.schemas.BaseSchema:
    return schemathesis.openapi.from_url(f"{running.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_makes_a_5xx(case: schemathesis.Case, running: PlatformProcess) -> None:
    for headers in ({"authorization": f"Bearer {running.admin_token}"}, {}):
        response = case.call(headers=headers)
        assert response.status_code < 500, f"{case.method} {case.formatted_path}: {response.text}"
