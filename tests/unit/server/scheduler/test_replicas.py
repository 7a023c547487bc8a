"""Replica lifecycle rules: transitions, restart backoff, crash loops, deployment status."""

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nubis.errors import ConflictError
from nubis.models.deployments import DeploymentStatus as D
from nubis.models.deployments import ReplicaStatus as R
from nubis.server.scheduler.replicas import (
    REPLICA_TRANSITIONS,
    TERMINAL_REPLICA_STATUSES,
    can_transition,
    check_replica_transition,
    deployment_status,
    is_crash_loop,
    restart_backoff,
)

# ---- transitions ----------------------------------------------------------------------------

LIFE = [
    [R.pending, R.starting, R.ready, R.draining, R.stopping, R.stopped],
    [R.pending, R.starting, R.failed, R.starting, R.ready],
    [R.starting, R.failed, R.crash_loop, R.starting, R.ready],
    [R.ready, R.failed, R.pending, R.starting, R.ready],
    [R.ready, R.unknown, R.ready],
    [R.pending, R.stopped],
    [R.crash_loop, R.stopped],
]


@pytest.mark.parametrize("path", LIFE, ids=lambda p: "→".join(p))
def test_ordinary_lives_are_allowed(path: list[R]) -> None:
    for old, new in itertools.pairwise(path):
        check_replica_transition(old, new)


@pytest.mark.parametrize(("old", "new"), [
    (R.stopped, R.starting),
    (R.stopped, R.ready),
    (R.pending, R.ready),
    (R.ready, R.starting),
    (R.ready, R.crash_loop),
    (R.draining, R.ready),
    (R.stopping, R.ready),
    (R.stopping, R.draining),
    (R.crash_loop, R.ready),
])
def test_illegal_transitions_raise_a_clear_conflict(old: R, new: R) -> None:
    with pytest.raises(ConflictError) as info:
        check_replica_transition(old, new)
    assert info.value.message.startswith(
        f"a replica cannot go from '{old}' to '{new}'; from '{old}' it can go to"
    )
    assert info.value.details["from"] == old
    assert info.value.details["to"] == new
    assert new not in info.value.details["allowed"]
    assert info.value.http_status == 409


def test_message_lists_where_a_replica_can_go() -> None:
    with pytest.raises(ConflictError) as info:
        check_replica_transition(R.stopping, R.ready)
    assert info.value.message == (
        "a replica cannot go from 'stopping' to 'ready'; "
        "from 'stopping' it can go to 'failed', 'stopped', 'unknown'"
    )


def test_stopped_is_final() -> None:
    assert set(TERMINAL_REPLICA_STATUSES) == {R.stopped}
    with pytest.raises(ConflictError) as info:
        check_replica_transition(R.stopped, R.pending)
    assert info.value.message.endswith("it can go to nowhere ('stopped' is final)")


def test_table_covers_every_status() -> None:
    assert set(REPLICA_TRANSITIONS) == set(R)


@given(st.sampled_from(list(R)))
def test_staying_put_is_always_allowed(status: R) -> None:
    check_replica_transition(status, status)


@given(st.sampled_from(list(R)))
def test_every_live_replica_can_be_stopped_or_lost(status: R) -> None:
    """Whatever a replica is doing, the reconciler can stop it and may lose contact with it."""
    if status is R.stopped:
        return
    assert can_transition(status, R.unknown)
    assert can_transition(status, R.stopped) or can_transition(status, R.stopping)


@given(st.sampled_from(list(R)))
def test_every_status_can_reach_ready_or_is_final(status: R) -> None:
    seen, frontier = {status}, [status]
    while frontier:
        for nxt in REPLICA_TRANSITIONS[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    assert R.ready in seen or status in TERMINAL_REPLICA_STATUSES


def test_ready_is_reached_only_through_starting_or_unknown() -> None:
    """The gateway routes to ready replicas only after they started and passed a health check."""
    assert {old for old, moves in REPLICA_TRANSITIONS.items() if R.ready in moves} == {R.starting, R.unknown}


# ---- restart backoff and crash loops ---------------------------------------------------------

@pytest.mark.parametrize(("crashes", "wait"), [
    (0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0), (6, 32.0), (7, 60.0), (8, 60.0),
    (10_000, 60.0),
])
def test_restart_backoff_doubles_up_to_a_minute(crashes: int, wait: float) -> None:
    assert restart_backoff(crashes) == wait


def test_restart_backoff_takes_base_and_cap() -> None:
    assert [restart_backoff(n, base_s=0.5, cap_s=3) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3, 3]


def test_restart_backoff_rejects_negative_counts() -> None:
    with pytest.raises(ValueError, match="crashes cannot be negative, got -1"):
        restart_backoff(-1)


@given(st.integers(0, 10**6))
def test_restart_backoff_is_monotonic_and_capped(crashes: int) -> None:
    assert restart_backoff(crashes) <= restart_backoff(crashes + 1) <= 60.0


NOW = 10_000.0


@pytest.mark.parametrize(("crash_times", "expected"), [
    ([], False),
    ([NOW - 10 * i for i in range(4)], False),  # 4 crashes in 30 s
    ([NOW - 10 * i for i in range(5)], True),  # 5 crashes in 40 s
    ([NOW - 300, NOW - 200, NOW - 100, NOW - 50, NOW], True),  # the window's start counts
    ([NOW - 301, NOW - 200, NOW - 100, NOW - 50, NOW], False),  # one just too old
    ([NOW - 1000 - i for i in range(50)], False),  # many, but long ago
    ([NOW + 5, NOW - 1, NOW - 2, NOW - 3, NOW - 4], True),  # another clock ahead: recent
])
def test_is_crash_loop(crash_times: list[float], expected: bool) -> None:
    assert is_crash_loop(crash_times, NOW) is expected


def test_is_crash_loop_takes_threshold_and_window() -> None:
    assert is_crash_loop([NOW - 5, NOW - 1], NOW, crashes=2, window_s=10)
    assert not is_crash_loop([NOW - 15, NOW - 1], NOW, crashes=2, window_s=10)


# ---- deployment status from replicas ---------------------------------------------------------

@pytest.mark.parametrize(("replicas", "target", "expected"), [
    ([], 1, D.pending),
    ([R.pending], 1, D.pending),
    ([R.pending, R.starting], 2, D.deploying),
    ([R.starting], 1, D.deploying),
    ([R.ready], 1, D.ready),
    ([R.ready, R.ready], 2, D.ready),
    ([R.ready, R.ready, R.failed], 2, D.ready),  # enough are serving; the extra one is replaced
    ([R.ready, R.starting], 2, D.ready),  # scaling up from a serving deployment
    ([R.ready, R.pending], 3, D.ready),
    ([R.ready, R.failed], 2, D.degraded),
    ([R.ready, R.crash_loop], 2, D.degraded),
    ([R.ready, R.unknown], 2, D.degraded),
    ([R.failed], 1, D.failed),
    ([R.failed, R.failed], 2, D.failed),
    ([R.crash_loop, R.starting], 2, D.failed),
    ([R.crash_loop], 1, D.failed),
    ([R.failed, R.starting], 2, D.deploying),  # one failure on the way is not failure yet
    ([R.failed, R.pending], 2, D.pending),
    ([R.unknown], 1, D.unknown),
    ([R.unknown, R.failed], 2, D.unknown),
    ([R.unknown, R.starting], 2, D.deploying),
    ([R.draining, R.stopping, R.stopped], 1, D.pending),  # leaving replicas do not serve
    ([R.ready, R.draining], 1, D.ready),
    ([R.draining, R.ready], 2, D.ready),
    ([R.ready, R.draining, R.failed], 2, D.degraded),
])
def test_deployment_status_from_replicas(replicas: list[R], target: int, expected: D) -> None:
    assert deployment_status(replicas, target=target, updating=False) is expected


def test_target_zero_is_scaled_to_zero_whatever_is_still_draining() -> None:
    assert deployment_status([], target=0, updating=False) is D.scaled_to_zero
    assert deployment_status([R.draining, R.stopping], target=0, updating=False) is D.scaled_to_zero


def test_updating_and_stopped_come_from_intent() -> None:
    assert deployment_status([R.ready, R.starting], target=2, updating=True) is D.updating
    assert deployment_status([R.ready], target=1, updating=True, stopped=True) is D.stopped
    assert deployment_status([R.stopping], target=0, updating=False, stopped=True) is D.stopped


@given(
    st.lists(st.sampled_from(list(R)), max_size=8), st.integers(1, 8), st.randoms(use_true_random=False)
)
def test_status_depends_on_the_replicas_not_their_order(replicas: list[R], target: int, rnd) -> None:
    shuffled = list(replicas)
    rnd.shuffle(shuffled)
    status = deployment_status(replicas, target=target, updating=False)
    assert status == deployment_status(shuffled, target=target, updating=False)
    ready = replicas.count(R.ready)
    assert (status in (D.ready, D.degraded)) == (ready > 0)
    troubled = {R.failed, R.crash_loop, R.unknown} & set(replicas)
    assert status is not D.ready or ready >= target or not troubled
