"""Replica lifecycle as pure rules: the transition table, restart backoff, crash-loop detection, and
a deployment's status derived from its replicas. No I/O; time comes in as ``now``.

The state diagrams are in ``docs/deployments.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from nubis.errors import ConflictError
from nubis.models.deployments import DeploymentStatus, ReplicaStatus

R = ReplicaStatus

# Every move a replica may make. Staying in the same status (a new reason) is always allowed.
REPLICA_TRANSITIONS: dict[ReplicaStatus, frozenset[ReplicaStatus]] = {
    R.pending: frozenset({R.starting, R.failed, R.stopping, R.stopped, R.unknown}),
    R.starting: frozenset({R.ready, R.failed, R.stopping, R.unknown}),
    R.ready: frozenset({R.draining, R.stopping, R.failed, R.unknown}),
    R.draining: frozenset({R.stopping, R.stopped, R.failed, R.unknown}),
    R.stopping: frozenset({R.stopped, R.failed, R.unknown}),
    R.stopped: frozenset(),
    R.failed: frozenset({R.pending, R.starting, R.crash_loop, R.stopping, R.stopped, R.unknown}),
    R.crash_loop: frozenset({R.pending, R.starting, R.stopping, R.stopped, R.unknown}),
    # Contact regained: the backend tells us what became of it.
    R.unknown: frozenset(set(R) - {R.unknown}),
}

TERMINAL_REPLICA_STATUSES = frozenset(s for s, moves in REPLICA_TRANSITIONS.items() if not moves)

BACKOFF_BASE_S = 1.0
BACKOFF_CAP_S = 60.0
CRASH_LOOP_CRASHES = 5
CRASH_LOOP_WINDOW_S = 300.0


def can_transition(old: ReplicaStatus, new: ReplicaStatus) -> bool:
    return old == new or new in REPLICA_TRANSITIONS[old]


def check_replica_transition(old: ReplicaStatus, new: ReplicaStatus) -> None:
    """Raise :class:`~nubis.errors.ConflictError` when a replica may not go from ``old`` to ``new``."""
    if can_transition(old, new):
        return
    allowed = sorted(REPLICA_TRANSITIONS[old])
    where = ", ".join(f"'{s}'" for s in allowed) if allowed else f"nowhere ('{old}' is final)"
    raise ConflictError(
        f"a replica cannot go from '{old}' to '{new}'; from '{old}' it can go to {where}",
        details={"from": str(old), "to": str(new), "allowed": [str(s) for s in allowed]},
    )


def restart_backoff(crashes: int, *, base_s: float = BACKOFF_BASE_S, cap_s: float = BACKOFF_CAP_S) -> float:
    """Seconds to wait before restarting after the ``crashes``-th crash in a row: 0, 1, 2, 4 … cap.

    No jitter: replicas of one deployment crash at different moments already, and a pure function
    stays testable. ``crashes`` counts consecutive crashes; 0 means "not crashed", no wait.
    """
    if crashes < 0:
        raise ValueError(f"crashes cannot be negative, got {crashes}")
    if crashes == 0:
        return 0.0
    exponent = min(crashes - 1, 62)  # 2**62 is past any cap; avoids huge ints and float overflow
    return min(cap_s, base_s * 2.0**exponent)


def is_crash_loop(
    crash_times: Iterable[float],
    now: float,
    *,
    crashes: int = CRASH_LOOP_CRASHES,
    window_s: float = CRASH_LOOP_WINDOW_S,
) -> bool:
    """True when at least ``crashes`` crashes happened in the last ``window_s`` seconds.

    A crash stamped after ``now`` (another machine's clock) counts as recent.
    """
    start = now - window_s
    return sum(1 for t in crash_times if t >= start) >= crashes


_BAD = frozenset({R.failed, R.crash_loop, R.unknown})
_LEAVING = frozenset({R.draining, R.stopping, R.stopped})


def deployment_status(
    replicas: Sequence[ReplicaStatus],
    *,
    target: int,
    updating: bool,
    stopped: bool = False,
) -> DeploymentStatus:
    """A deployment's status from its replicas' statuses, the autoscaler's target and intent flags.

    Replicas on their way out (draining, stopping, stopped) do not count: they take no new requests.
    In order: stopped by the user → ``stopped``; target 0 → ``scaled_to_zero``; a rolling update →
    ``updating``; enough ready → ``ready``; some ready → ``degraded`` if any of the others failed or
    is unreachable, else ``ready`` (scaling up); none ready → ``failed`` when one crash-loops or every
    one failed, ``unknown`` when every one failed or is unreachable and at least one is unreachable,
    ``deploying`` when one is starting, else ``pending`` (no replicas yet counts as pending).
    """
    if stopped:
        return DeploymentStatus.stopped
    if target == 0:
        return DeploymentStatus.scaled_to_zero
    if updating:
        return DeploymentStatus.updating
    live = [s for s in replicas if s not in _LEAVING]
    ready = sum(1 for s in live if s == R.ready)
    if ready >= target:
        return DeploymentStatus.ready
    if ready > 0:
        return DeploymentStatus.degraded if any(s in _BAD for s in live) else DeploymentStatus.ready
    return _status_when_none_ready(live)


def _status_when_none_ready(live: list[ReplicaStatus]) -> DeploymentStatus:
    if R.crash_loop in live:
        return DeploymentStatus.failed
    if live and all(s in _BAD for s in live):
        return DeploymentStatus.unknown if R.unknown in live else DeploymentStatus.failed
    if R.starting in live:
        return DeploymentStatus.deploying
    return DeploymentStatus.pending
