"""The Ray backend's pure parts: a node as Ray reports it, what a node needs to open storage."""

from __future__ import annotations

from ray_cluster import import_ray

import_ray()

from nubis.backends.nodes import Amounts  # noqa: E402 - after the skip when ray is missing
from nubis.backends.ray_backend import node_info, storage_options_from_env  # noqa: E402

RAY_NODE = {
    "NodeID": "ab12", "Alive": True, "NodeManagerAddress": "10.0.0.7", "DeathReasonMessage": "",
    "Resources": {"CPU": 8.0, "GPU": 2.0, "memory": 3.0 * 2**30, "node:10.0.0.7": 1.0},
    "Labels": {"ray.io/node-id": "ab12", "nubis.io/pool": "a100"},
}


def test_a_ray_node_becomes_a_node_with_its_free_resources_and_own_labels() -> None:
    node = node_info(RAY_NODE, {"CPU": 6.5, "memory": 2.0 * 2**30})
    assert (node.id, node.address, node.alive, node.death_reason) == ("ab12", "10.0.0.7", True, None)
    assert node.total == Amounts(8.0, 3 * 2**30, 2)
    assert node.free == Amounts(6.5, 2 * 2**30, 0)  # Ray leaves out a resource that is all used
    assert node.labels == {"nubis.io/pool": "a100"}


def test_a_dead_ray_node_has_nothing_free_and_says_why() -> None:
    dead = {**RAY_NODE, "Alive": False,
            "DeathReasonMessage": "health check failed due to missing too many heartbeats"}
    node = node_info(dead, {"CPU": 8.0})
    assert not node.alive and node.free == Amounts()
    assert node.death_reason == "health check failed due to missing too many heartbeats"
    assert node_info({**dead, "DeathReasonMessage": ""}, {}).death_reason == "the node died"


def test_nodes_get_the_s3_endpoint_and_credentials_of_the_control_plane() -> None:
    env = {"NUBIS_S3_ENDPOINT_URL": "http://10.0.0.1:9000", "AWS_ACCESS_KEY_ID": "AK",
           "AWS_SECRET_ACCESS_KEY": "SK", "AWS_DEFAULT_REGION": "eu-west-1"}
    assert storage_options_from_env("s3://bucket/nubis", env) == {
        "client_kwargs": {"endpoint_url": "http://10.0.0.1:9000", "region_name": "eu-west-1"},
        "key": "AK", "secret": "SK"}
    assert storage_options_from_env("s3://bucket/nubis", {}) == {}
    assert storage_options_from_env("/srv/nubis/storage", env) == {}
