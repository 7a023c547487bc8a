"""The local backend's pure parts: resource accounting, the replica's env, requirements, GPUs."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nubis.backends.base import Capacity, ReplicaSpec
from nubis.backends.local import (
    Allocation,
    Ledger,
    detect_capacity,
    replica_env,
    tail_lines,
)
from nubis.backends.local_venvs import missing_requirements
from nubis.errors import NoCapacityError
from nubis.models.resources import Resources

GIB = 2**30


def test_allocate_and_release() -> None:
    ledger = Ledger(Capacity(cpu=2, memory=4 * GIB, gpus=(0, 1)))
    a = ledger.allocate("a", Resources(cpu=0.5, memory="1Gi", gpu=1))
    assert a == Allocation(500, GIB, (0,))
    assert ledger.free() == Capacity(cpu=1.5, memory=3 * GIB, gpus=(1,))
    b = ledger.allocate("b", Resources(cpu=1.5, memory="3Gi", gpu=1))
    assert b.gpus == (1,)
    assert ledger.free() == Capacity(cpu=0, memory=0, gpus=())
    assert ledger.release("a") == a
    assert ledger.release("a") is None
    assert ledger.free() == Capacity(cpu=0.5, memory=GIB, gpus=(0,))


def test_cpu_sums_are_exact() -> None:
    ledger = Ledger(Capacity(cpu=0.3, memory=GIB))
    for key in "abc":
        ledger.allocate(key, Resources(cpu=0.1, memory=0))
    assert ledger.free().cpu == 0
    with pytest.raises(NoCapacityError, match=r"^needs 0.1 CPU, 0 free$"):
        ledger.allocate("d", Resources(cpu=0.1, memory=0))


def test_the_reason_names_everything_that_is_short() -> None:
    ledger = Ledger(Capacity(cpu=1.5, memory=GIB, gpus=()))
    with pytest.raises(NoCapacityError) as caught:
        ledger.allocate("a", Resources(cpu=2, memory="2Gi", gpu=1))
    assert caught.value.message == (
        "needs 2 CPU, 1.5 free; needs 2.00 GiB memory, 1.00 GiB free; needs 1 GPU, 0 free"
    )
    assert caught.value.code == "no_capacity"
    assert caught.value.details["free"] == {"cpu": 1.5, "memory": GIB, "gpu": 0}
    assert ledger.free() == ledger.total


def test_claim_counts_an_adopted_replica_even_beyond_the_total() -> None:
    ledger = Ledger(Capacity(cpu=1, memory=GIB, gpus=(0,)))
    ledger.claim("adopted", Allocation(1500, GIB, (0,)))
    assert ledger.free() == Capacity(cpu=0, memory=0, gpus=())
    with pytest.raises(NoCapacityError):
        ledger.allocate("new", Resources(cpu=0.1, memory=0))
    ledger.release("adopted")
    ledger.allocate("new", Resources(cpu=1, memory=GIB, gpu=1))


def test_one_key_holds_one_allocation() -> None:
    ledger = Ledger(Capacity(cpu=4, memory=4 * GIB))
    ledger.allocate("a", Resources(cpu=1))
    with pytest.raises(ValueError, match="already holds"):
        ledger.allocate("a", Resources(cpu=1))


requests = st.builds(
    Resources,
    cpu=st.sampled_from([0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3]),
    memory=st.integers(0, 6 * GIB),
    gpu=st.integers(0, 3),
)
ops = st.lists(st.one_of(st.tuples(st.just("allocate"), st.integers(0, 7), requests),
                         st.tuples(st.just("release"), st.integers(0, 7), st.none())), max_size=40)


@settings(max_examples=300, deadline=None)
@given(cpu=st.sampled_from([0.5, 1, 2, 3.5, 8]), memory=st.integers(0, 16 * GIB),
       gpus=st.integers(0, 4), ops=ops)
def test_never_over_allocates(cpu: float, memory: int, gpus: int,
                              ops: list[tuple[str, int, Resources | None]]) -> None:
    total = Capacity(cpu=cpu, memory=memory, gpus=tuple(range(gpus)))
    ledger = Ledger(total)
    held: dict[str, Allocation] = {}
    for op, n, resources in ops:
        key = f"r{n}"
        if op == "release":
            assert ledger.release(key) == held.pop(key, None)
        elif key not in held:
            assert resources is not None
            free = ledger.free()
            fits = (resources.cpu <= free.cpu + 1e-9 and resources.memory <= free.memory
                    and resources.gpu <= len(free.gpus))
            try:
                held[key] = ledger.allocate(key, resources)
            except NoCapacityError:
                assert not fits
            else:
                assert fits
                assert len(held[key].gpus) == resources.gpu
        used_gpus = [g for a in held.values() for g in a.gpus]
        assert sum(a.millicpu for a in held.values()) <= round(cpu * 1000)
        assert sum(a.memory for a in held.values()) <= memory
        assert len(used_gpus) == len(set(used_gpus))
        assert set(used_gpus) <= set(total.gpus)
        assert set(ledger.free().gpus) == set(total.gpus) - set(used_gpus)
    for key in list(held):
        ledger.release(key)
    assert ledger.free() == total


def spec(env: dict[str, str]) -> ReplicaSpec:
    return ReplicaSpec(replica_id="r-1", deployment="d", workspace="w", bundle=Path("b.photon"),
                       content_hash="", env=env)


def test_replica_env_drops_control_plane_secrets() -> None:
    base = {"PATH": "/bin", "NUBIS_TOKEN": "t", "NUBIS_MASTER_KEY": "k", "AWS_SECRET_ACCESS_KEY": "s",
            "GITHUB_TOKEN": "g", "NUBIS_DB_URL": "postgresql://u:p@h/db", "CUDA_VISIBLE_DEVICES": "0,1,2"}
    env = replica_env(base, spec({"HF_TOKEN": "mine", "MODE": "fast", "NUBIS_REPLICA_ID": "x"}),
                      home=Path("/h"), gpus=(2,))
    assert env == {
        "PATH": "/bin",
        "HF_TOKEN": "mine",  # the deployment's own secrets do go in
        "MODE": "fast",
        "NUBIS_HOME": "/h",
        "CUDA_VISIBLE_DEVICES": "2",
        "NUBIS_REPLICA_ID": "r-1",
        "NUBIS_DEPLOYMENT": "d",
        "NUBIS_WORKSPACE": "w",
        "PYTHONUNBUFFERED": "1",
    }
    assert replica_env({}, spec({}), home=Path("/h"), gpus=())["CUDA_VISIBLE_DEVICES"] == ""


def test_spec_repr_hides_env_values() -> None:
    assert "hunter2" not in repr(spec({"PASSWORD": "hunter2"}))


def test_missing_requirements_checks_installed_distributions() -> None:
    assert missing_requirements(["httpx>=0.1", "PyDantic", "typing_extensions; python_version>'3'"]) == []
    assert missing_requirements(["httpx", "nubis-no-such-package[x]>=2 ", ""]) == [
        "nubis-no-such-package[x]>=2"
    ]


def test_gpus_come_from_arguments_then_nubis_fake_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NUBIS_FAKE_GPUS", "3")
    assert detect_capacity(cpus=2, memory=GIB, gpus=None) == Capacity(2, GIB, (0, 1, 2))
    assert detect_capacity(cpus=2, memory=GIB, gpus=[5]) == Capacity(2, GIB, (5,))
    detected = detect_capacity(cpus=None, memory=None, gpus=[])
    assert detected.cpu >= 1 and detected.memory > 0


def test_tail_lines(tmp_path: Path) -> None:
    log = tmp_path / "r.log"
    assert tail_lines(log, 5) == []
    log.write_bytes(b"".join(b"line %d\n" % i for i in range(1000)) + b"no newline \xff")
    assert tail_lines(log, 3) == ["line 998", "line 999", "no newline \ufffd"]
    assert tail_lines(log, 0) == []
    assert len(tail_lines(log, 500)) == 500
