"""The autoscaling policy on a fake clock: times are plain numbers, nothing sleeps."""

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nubis.models.deployments import AutoscalingSpec
from nubis.server.scheduler.autoscaling import (
    AutoscalingContext,
    AutoscalingDecision,
    decide_replicas,
    wanted_replicas,
)

NOW = 1_000.0
SPEC = AutoscalingSpec(
    min_replicas=1, max_replicas=5, target_in_flight=4,
    scale_up_delay_s=5, scale_down_delay_s=30, scale_to_zero_after_s=300,
)
ZERO_OK = SPEC.model_copy(update={"min_replicas": 0})


def steady(load: float, *, since: float, every: float = 1.0) -> tuple[tuple[float, float], ...]:
    """One sample per ``every`` seconds from ``since`` up to NOW, all at ``load``."""
    n = int((NOW - since) / every)
    return tuple((since + i * every, load) for i in range(n + 1))


def ctx(**fields) -> AutoscalingContext:
    return AutoscalingContext(**({"spec": SPEC, "current_target": 1, "last_scale_at": 0.0} | fields))


@pytest.mark.parametrize(("context", "target", "reason"), [
    # bounds: the spec changed under a running deployment
    (ctx(current_target=0), 1, "raising to min_replicas (1)"),
    (ctx(current_target=9, load=steady(100, since=900)), 5, "lowering to max_replicas (5)"),
    # scale from zero ignores every delay
    (ctx(spec=ZERO_OK, current_target=0, queued=1), 1, "scaling from zero → 1: 1 request(s) waiting"),
    (ctx(spec=ZERO_OK, current_target=0, queued=9, last_scale_at=NOW), 3, "scaling from zero → 3"),
    (ctx(spec=ZERO_OK, current_target=0, queued=500), 5, "scaling from zero → 5"),
    (ctx(spec=ZERO_OK, current_target=0, load=((NOW, 2.0),)), 1, "scaling from zero → 1"),
    (ctx(spec=ZERO_OK, current_target=0, load=steady(0, since=0)), 0, "scaled to zero: no requests waiting"),
    # no data is not no load
    (ctx(current_target=3), 3, "holding: no load reported yet"),
    # scale up: the load must have wanted more for scale_up_delay_s, then straight to that level
    (ctx(load=steady(9, since=NOW - 5)), 3, "scaling up 1 → 3: 9 in flight (target 4 per replica) for 5s"),
    (ctx(load=steady(9, since=NOW - 4)), 1, "holding at 1"),  # history shorter than the delay
    (ctx(load=(*steady(9, since=NOW - 60), (NOW, 30.0))), 3, "scaling up 1 → 3"),  # spike: not yet
    (ctx(load=((NOW - 10, 9.0), (NOW - 3, 2.0), (NOW, 9.0))), 1, "holding at 1"),  # dipped in window
    (ctx(load=((NOW - 10, 13.0), (NOW - 3, 9.0), (NOW, 20.0))), 3, "scaling up 1 → 3"),  # the held level
    (ctx(spec=SPEC.model_copy(update={"scale_up_delay_s": 0}), load=((NOW, 13.0),)), 4, "scaling up 1 → 4"),
    (ctx(current_target=2, load=steady(0, since=NOW - 40), queued=12), 2, "holding at 2"),  # waits delay
    (ctx(spec=SPEC.model_copy(update={"scale_up_delay_s": 0}), current_target=2, queued=12,
         load=steady(0, since=NOW - 40)), 3, "scaling up 2 → 3"),  # queued requests are load
    # scale down: wanted fewer for scale_down_delay_s, and that long since the last change
    (ctx(current_target=4, load=steady(3, since=NOW - 30)), 1, "scaling down 4 → 1: at most 3 in flight"),
    (ctx(current_target=4, load=steady(3, since=NOW - 29)), 4, "holding at 4"),  # history too short
    (ctx(current_target=4, load=steady(3, since=NOW - 40), last_scale_at=NOW - 10), 4, "holding at 4"),
    (ctx(current_target=4, load=(*steady(3, since=NOW - 60), (NOW - 20, 11.0))), 3, "scaling down 4 → 3"),
    (ctx(current_target=3, load=steady(12, since=NOW - 60)), 3, "holding at 3"),  # exactly at capacity
    (ctx(current_target=2, ready_replicas=1, load=steady(5, since=NOW - 60)), 2,
     "holding at 2 (1 ready): 5 in flight, target 4 per replica"),
    # scale to zero: min 0, idle for scale_to_zero_after_s
    (ctx(spec=ZERO_OK, current_target=3, load=steady(0, since=NOW - 600), last_traffic_at=NOW - 300), 0,
     "scaling to zero: no traffic for 300s"),
    (ctx(spec=ZERO_OK, current_target=3, load=steady(0, since=NOW - 600), last_traffic_at=NOW - 299), 1,
     "scaling down 3 → 1"),  # idle, but not long enough for zero
    (ctx(spec=ZERO_OK, current_target=1, load=steady(0, since=NOW - 600), last_traffic_at=NOW - 299), 1,
     "holding at 1"),
    (ctx(spec=ZERO_OK, current_target=1, load=(*steady(0, since=NOW - 600), (NOW - 100, 1.0)),
         last_traffic_at=NOW - 900), 1, "holding at 1"),  # a sample shows later traffic
    (ctx(spec=ZERO_OK, current_target=1, load=steady(0, since=NOW - 600), last_scale_at=NOW - 400), 0,
     "scaling to zero: no traffic for 400s"),  # never any traffic: idle since it was deployed
    (ctx(spec=ZERO_OK, current_target=1, load=steady(0, since=NOW - 600), last_scale_at=None), 1,
     "holding at 1"),  # no idea how long it has been idle
    (ctx(spec=ZERO_OK, current_target=1, load=steady(0, since=NOW - 600), queued=1,
         last_traffic_at=NOW - 900), 1, "holding at 1"),
    (ctx(current_target=1, load=steady(0, since=NOW - 600), last_traffic_at=NOW - 900), 1, "holding at 1"),
    (ctx(spec=ZERO_OK, current_target=1, load=((NOW - 400, 3.0),), last_traffic_at=NOW - 400), 1,
     "holding at 1"),  # the last report showed load: the gateway went quiet, the traffic did not stop
])
def test_decisions(context: AutoscalingContext, target: int, reason: str) -> None:
    decision = decide_replicas(context, NOW)
    assert decision.target_replicas == target
    assert decision.reason.startswith(reason), decision.reason


@pytest.mark.parametrize(("fields", "message"), [
    ({"current_target": -1}, "current_target cannot be negative, got -1"),
    ({"queued": -2}, "queued cannot be negative, got -2"),
    ({"ready_replicas": -1}, "ready_replicas cannot be negative"),
    ({"load": ((NOW, -1.0),)}, "a load sample needs a finite time and in-flight ≥ 0"),
    ({"load": ((NOW, float("nan")),)}, "a load sample needs"),
    ({"load": ((float("inf"), 1.0),)}, "a load sample needs"),
])
def test_context_rejects_nonsense(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ctx(**fields)


@pytest.mark.parametrize(
    ("in_flight", "expected"), [(0, 1), (1, 1), (4, 1), (4.5, 2), (8, 2), (9, 3), (1e9, 5)]
)
def test_wanted_replicas(in_flight: float, expected: int) -> None:
    assert wanted_replicas(SPEC, in_flight) == expected


# ---- a reconciler's loop on a fake clock: the worked example of docs/deployments.md ----------

def simulate(
    spec: AutoscalingSpec, load_at: Callable[[int], float], *, seconds: int, history_s: int = 600
) -> list[tuple[int, int, str]]:
    """Feed one load sample a second, apply every decision, return the changes (t, target, reason).

    Requests that arrive while no replica is wanted are queued by the gateway, not in flight.
    """
    target, last_scale_at, last_traffic_at = spec.min_replicas, -10_000.0, None
    samples: list[tuple[float, float]] = []
    changes = []
    for t in range(seconds):
        load = load_at(t)
        queued = int(load) if target == 0 else 0
        samples = [s for s in samples if s[0] > t - history_s] + [(float(t), 0.0 if queued else load)]
        if load > 0:
            last_traffic_at = float(t)
        context = AutoscalingContext(
            spec=spec, current_target=target, ready_replicas=target, load=tuple(samples), queued=queued,
            last_scale_at=last_scale_at, last_traffic_at=last_traffic_at,
        )
        decision = decide_replicas(context, float(t))
        if decision.target_replicas != target:
            target, last_scale_at = decision.target_replicas, float(t)
            changes.append((t, target, decision.reason))
    return changes


EXAMPLE = AutoscalingSpec(
    min_replicas=0, max_replicas=4, target_in_flight=4,
    scale_up_delay_s=5, scale_down_delay_s=30, scale_to_zero_after_s=300,
)


def example_load(t: int) -> float:
    if t < 100:
        return 0.0
    if t == 100:
        return 1.0  # the first request: the deployment is at zero
    if t <= 160:
        return 10.0
    if t <= 220:
        return 2.0
    return 0.0


def test_worked_example() -> None:
    changes = simulate(EXAMPLE, example_load, seconds=600)
    assert [(t, target) for t, target, _ in changes] == [
        (100, 1),  # scale from zero at once
        (106, 3),  # 10 in flight since t=101 wants 3; held for 5 s
        (191, 1),  # 2 in flight since t=161 wants 1; held for 30 s
        (520, 0),  # last traffic at t=220, idle for 300 s
    ]
    assert [reason for _, _, reason in changes] == [
        "scaling from zero → 1: 1 request(s) waiting",
        "scaling up 1 → 3: 10 in flight (target 4 per replica) for 5s",
        "scaling down 3 → 1: at most 2 in flight for 30s",
        "scaling to zero: no traffic for 300s",
    ]


def test_a_flapping_load_does_not_flap_the_replicas() -> None:
    """Load above one replica's target every other second never holds for the 5 s delay."""
    changes = simulate(SPEC, lambda t: 9.0 if t % 2 else 1.0, seconds=300)
    assert changes == []


def test_sustained_overload_reaches_max_and_stays() -> None:
    changes = simulate(SPEC, lambda t: 1000.0, seconds=120)
    assert [(t, target) for t, target, _ in changes] == [(5, 5)]


# ---- properties -------------------------------------------------------------------------------

times = st.floats(0, 2_000, allow_nan=False)


@st.composite
def specs(draw) -> AutoscalingSpec:
    lo = draw(st.integers(0, 5))
    return AutoscalingSpec(
        min_replicas=lo,
        max_replicas=draw(st.integers(max(lo, 1), 12)),
        target_in_flight=draw(st.sampled_from([0.5, 1, 2.5, 4, 10])),
        scale_up_delay_s=draw(st.sampled_from([0, 1, 5, 60])),
        scale_down_delay_s=draw(st.sampled_from([0, 1, 30, 300])),
        scale_to_zero_after_s=draw(st.sampled_from([0, 10, 300])),
    )


@st.composite
def contexts(draw, *, in_bounds: bool = False) -> AutoscalingContext:
    spec = draw(specs())
    current = draw(st.integers(spec.min_replicas, spec.max_replicas) if in_bounds else st.integers(0, 15))
    return AutoscalingContext(
        spec=spec,
        current_target=current,
        ready_replicas=draw(st.integers(0, current)),
        load=tuple(draw(st.lists(st.tuples(times, st.floats(0, 200, allow_nan=False)), max_size=12))),
        queued=draw(st.integers(0, 50)),
        last_scale_at=draw(st.none() | times),
        last_traffic_at=draw(st.none() | times),
    )


@given(contexts(), times)
def test_target_stays_within_min_and_max(context: AutoscalingContext, now: float) -> None:
    decision = decide_replicas(context, now)
    spec = context.spec
    assert spec.min_replicas <= decision.target_replicas <= spec.max_replicas
    if decision.target_replicas == 0:
        assert spec.min_replicas == 0


@given(contexts(in_bounds=True), times)
def test_never_scales_down_while_load_is_above_capacity(context: AutoscalingContext, now: float) -> None:
    latest = max(context.load)[1] if context.load else 0.0
    if latest + context.queued > context.current_target * context.spec.target_in_flight:
        assert decide_replicas(context, now).target_replicas >= context.current_target


@given(contexts(), times, st.integers(1, 50))
def test_queued_requests_at_zero_always_start_a_replica(context: AutoscalingContext, now: float,
                                                          queued: int) -> None:
    at_zero = AutoscalingContext(**(vars(context) | {"current_target": 0, "queued": queued}))
    assert decide_replicas(at_zero, now).target_replicas >= 1


@given(contexts(), times, st.randoms(use_true_random=False))
def test_decisions_are_deterministic_and_ignore_sample_order(
    context: AutoscalingContext, now: float, rnd
) -> None:
    shuffled = list(context.load)
    rnd.shuffle(shuffled)
    again = AutoscalingContext(**(vars(context) | {"load": tuple(shuffled)}))
    first = decide_replicas(context, now)
    assert isinstance(first, AutoscalingDecision)
    assert decide_replicas(context, now) == first == decide_replicas(again, now)


@given(contexts(in_bounds=True), times)
def test_zero_only_after_the_idle_time(context: AutoscalingContext, now: float) -> None:
    if context.current_target == 0 or decide_replicas(context, now).target_replicas != 0:
        return
    after = context.spec.scale_to_zero_after_s
    assert context.queued == 0
    assert all(now - t >= after for t, load in context.load if load > 0)
    assert context.last_traffic_at is None or now - context.last_traffic_at >= after
