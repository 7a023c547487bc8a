"""Fixtures the end-to-end modules share: a module's own `nubis up` on embedded defaults and an
admin client of it (a module that needs other options defines its own ``platform``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import nubis

from platform_process import PlatformProcess, nubis_up


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformProcess]:
    with nubis_up(tmp_path_factory.mktemp("platform") / "home") as running:
        yield running


@pytest.fixture(scope="module")
def client(platform: PlatformProcess) -> Iterator[nubis.Client]:
    with nubis.Client(platform.url, platform.admin_token) as c:
        yield c
