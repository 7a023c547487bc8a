from collections.abc import Iterator

import pytest

from ray_cluster import SimulatedCluster, simulated_cluster


@pytest.fixture(scope="module")
def ray_contract_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatedCluster]:
    """One simulated cluster for the module's Ray cases (started only when one runs)."""
    with simulated_cluster(tmp_path_factory.mktemp("ray-nodes")) as cluster:
        yield cluster
