"""``nubis up --backend``: which backend, and storage that every node can reach."""

from __future__ import annotations

from pathlib import Path

import pytest

from nubis.backends.nodes import Amounts, NodeInfo
from nubis.errors import ValidationError
from nubis.server.app import check_storage_reaches
from nubis.server.settings import ServerSettings


def node(id: str, cpu: float) -> NodeInfo:
    return NodeInfo(id=id, address="10.0.0.1", alive=True, total=Amounts(cpu, 2**30, 0),
                    free=Amounts(cpu, 2**30, 0))


def test_a_storage_folder_is_refused_on_several_nodes_unless_shared(tmp_path: Path) -> None:
    head, a, b = node("head", 0), node("a", 2), node("b", 2)
    folder = ServerSettings(home=tmp_path, backend="ray")
    check_storage_reaches(folder, [head, a])  # one node runs workloads: the folder is there
    with pytest.raises(ValidationError, match="2 nodes that run workloads: use S3"):
        check_storage_reaches(folder, [head, a, b])
    check_storage_reaches(ServerSettings(home=tmp_path, backend="ray", shared_storage=True), [head, a, b])
    check_storage_reaches(ServerSettings(home=tmp_path, backend="ray", storage_url="s3://b/n"), [head, a, b])
