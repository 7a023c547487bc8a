"""Deployment wire models: strict specs in, tolerant state out."""

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nubis import Resources
from nubis.models.deployments import (
    AutoscalingSpec,
    Deployment,
    DeploymentSpec,
    DeploymentStatus,
    Replica,
    ReplicaStatus,
    split_photon_ref,
)


def test_spec_defaults() -> None:
    spec = DeploymentSpec(name="echo", photon="echo")
    assert spec.model_dump() == {
        "name": "echo",
        "photon": "echo",
        "resources": None,
        "env": {},
        "secrets": [],
        "access": "private",
        "autoscaling": {
            "min_replicas": 1,
            "max_replicas": 1,
            "target_in_flight": 4.0,
            "scale_up_delay_s": 5.0,
            "scale_down_delay_s": 30.0,
            "scale_to_zero_after_s": 300.0,
            "target_waiting": None,
            "target_tokens_per_s": None,
        },
        "node_selector": {},
        "llm": None,
    }


def test_v1_is_reserved_for_the_workspace_base_url() -> None:
    with pytest.raises(pydantic.ValidationError, match="'v1' is reserved"):
        DeploymentSpec(name="v1", photon="echo")


def test_node_selectors_are_checked() -> None:
    spec = DeploymentSpec(name="echo", photon="echo", node_selector={"nubis.io/pool": "a100"})
    assert spec.node_selector == {"nubis.io/pool": "a100"}
    with pytest.raises(pydantic.ValidationError, match="not valid: labels are key=value"):
        DeploymentSpec(name="echo", photon="echo", node_selector={"bad key": "x"})
    with pytest.raises(pydantic.ValidationError, match="at most 16 node labels"):
        DeploymentSpec(name="echo", photon="echo", node_selector={f"k{i}": "v" for i in range(17)})


def test_spec_round_trips_through_json() -> None:
    spec = DeploymentSpec(
        name="sentiment-v2",
        photon="sentiment:3",
        resources=Resources(cpu=2, memory="4Gi"),
        env={"LOG_LEVEL": "debug"},
        secrets=["HF_TOKEN"],
        access="public",
        autoscaling=AutoscalingSpec(min_replicas=0, max_replicas=4, target_in_flight=2),
    )
    assert DeploymentSpec.model_validate_json(spec.model_dump_json()) == spec


@pytest.mark.parametrize(("ref", "expected"), [
    ("echo", ("echo", None)),
    ("echo:latest", ("echo", None)),
    ("echo:3", ("echo", 3)),
    ("my-photon-2:12", ("my-photon-2", 12)),
])
def test_split_photon_ref(ref: str, expected: tuple[str, int | None]) -> None:
    assert split_photon_ref(ref) == expected
    assert DeploymentSpec(name="d", photon=ref).photon == ref


@pytest.mark.parametrize(
    "ref", ["", "Echo", "echo:", "echo:v3", "echo:-1", ":3", "echo:3:4", "-echo", "a" * 64]
)
def test_bad_photon_refs_are_rejected(ref: str) -> None:
    with pytest.raises(ValueError, match="photon must be 'name' or 'name:version'"):
        split_photon_ref(ref)
    with pytest.raises(pydantic.ValidationError, match="photon"):
        DeploymentSpec(name="d", photon=ref)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"name": "Echo"}, "String should match pattern"),
    ({"name": "-echo"}, "String should match pattern"),
    ({"name": "e" * 64}, "String should match pattern"),
    ({"access": "open"}, "Input should be 'private' or 'public'"),
    ({"replicas": 2}, "Extra inputs are not permitted"),
    ({"env": {"1BAD": "x"}}, "env names ['1BAD'] are not valid"),
    ({"env": {"A-B": "x"}}, "env names ['A-B'] are not valid"),
    ({"secrets": ["ok", "not ok"]}, "secret names ['not ok'] are not valid"),
    ({"secrets": ["TOKEN", "TOKEN"]}, "secrets ['TOKEN'] are listed more than once"),
    ({"env": {"TOKEN": "x"}, "secrets": ["TOKEN"]}, "['TOKEN'] are set both in env and as secrets"),
    ({"resources": {"gpus": 1}}, "Extra inputs are not permitted"),
    ({"autoscaling": {"max": 3}}, "Extra inputs are not permitted"),
])
def test_spec_rejects_bad_fields(kwargs: dict, message: str) -> None:
    fields = {"name": "echo", "photon": "echo:1"} | kwargs
    with pytest.raises(pydantic.ValidationError) as info:
        DeploymentSpec(**fields)
    assert message in str(info.value)


def test_min_above_max_is_a_clear_error() -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        AutoscalingSpec(min_replicas=3, max_replicas=2)
    assert "min_replicas (3) must not exceed max_replicas (2)" in str(info.value)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"min_replicas": -1}, "greater than or equal to 0"),
    ({"max_replicas": 0}, "greater than or equal to 1"),
    ({"target_in_flight": 0}, "greater than 0"),
    ({"scale_up_delay_s": -1}, "greater than or equal to 0"),
    ({"scale_down_delay_s": -0.5}, "greater than or equal to 0"),
    ({"scale_to_zero_after_s": -1}, "greater than or equal to 0"),
])
def test_autoscaling_rejects_out_of_range_values(kwargs: dict, message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        AutoscalingSpec(**kwargs)
    assert message in str(info.value)


@given(st.integers(0, 1000), st.integers(1, 1000))
def test_min_max_are_accepted_exactly_when_ordered(lo: int, hi: int) -> None:
    if lo <= hi:
        spec = AutoscalingSpec(min_replicas=lo, max_replicas=hi)
        assert (spec.min_replicas, spec.max_replicas) == (lo, hi)
    else:
        with pytest.raises(pydantic.ValidationError, match="must not exceed"):
            AutoscalingSpec(min_replicas=lo, max_replicas=hi)


def test_specs_are_frozen() -> None:
    with pytest.raises(pydantic.ValidationError):
        DeploymentSpec(name="echo", photon="echo").name = "other"  # type: ignore[misc]


def test_statuses_are_lowercase_strings() -> None:
    assert ReplicaStatus.crash_loop == "crash_loop"
    assert DeploymentStatus.scaled_to_zero == "scaled_to_zero"
    for status in [*ReplicaStatus, *DeploymentStatus]:
        assert status.value == status.name == status.value.lower()


def test_output_reads_unknown_statuses_as_unknown() -> None:
    body = {
        "name": "echo",
        "photon": "echo:1",
        "status": "hibernating",
        "future_field": {"x": 1},
        "replicas": [
            {"id": "r1", "status": "ready"},
            {"id": "r2", "status": "migrating", "reason": "moving to node b", "zone": "eu"},
        ],
    }
    deployment = Deployment.model_validate(body)
    assert deployment.status is DeploymentStatus.unknown
    assert [r.status for r in deployment.replicas] == [ReplicaStatus.ready, ReplicaStatus.unknown]
    assert deployment.replicas[1].reason == "moving to node b"


def test_output_still_rejects_non_string_statuses() -> None:
    with pytest.raises(pydantic.ValidationError):
        Replica.model_validate({"id": "r1", "status": 3})


def test_output_round_trips_known_statuses() -> None:
    replica = Replica(id="r1", status=ReplicaStatus.pending, reason="waiting for 1 GPU")
    assert Replica.model_validate_json(replica.model_dump_json()) == replica
    assert replica.model_dump(mode="json")["status"] == "pending"
