"""LLM deployments scale on waiting requests per replica: the policy on fake samples, no clock."""

import pytest

from nubis.models.deployments import AutoscalingSpec
from nubis.server.scheduler.autoscaling import (
    AutoscalingContext,
    decide_replicas,
    queue_load,
    wanted_replicas,
)

NOW = 1_000.0
LLM = AutoscalingSpec(min_replicas=1, max_replicas=3, target_waiting=2, scale_up_delay_s=5,
                      scale_down_delay_s=30, scale_to_zero_after_s=300)
LLM_ZERO = LLM.model_copy(update={"min_replicas": 0})


def steady(waiting: float, busy: int, *, since: float,
           spec: AutoscalingSpec = LLM) -> tuple[tuple[float, float], ...]:
    load = queue_load(spec, waiting=waiting, busy_replicas=busy)
    return tuple((since + i, load) for i in range(int(NOW - since) + 1))


def ctx(**fields) -> AutoscalingContext:
    return AutoscalingContext(**({"spec": LLM, "current_target": 1, "last_scale_at": 0.0} | fields))


def test_a_sample_wants_the_busy_replicas_or_one_per_target_waiting() -> None:
    assert wanted_replicas(LLM, queue_load(LLM, waiting=0, busy_replicas=0)) == 1
    assert wanted_replicas(LLM, queue_load(LLM, waiting=2, busy_replicas=1)) == 1  # 2 per replica: fine
    assert wanted_replicas(LLM, queue_load(LLM, waiting=3, busy_replicas=1)) == 2
    assert wanted_replicas(LLM, queue_load(LLM, waiting=0, busy_replicas=2)) == 2  # busy stays
    assert wanted_replicas(LLM, queue_load(LLM, waiting=40, busy_replicas=1)) == 3  # max_replicas
    odd = LLM.model_copy(update={"target_waiting": 0.3})
    assert wanted_replicas(odd, queue_load(odd, waiting=0, busy_replicas=3)) == 3  # no float creep


def test_waiting_requests_over_the_target_scale_up_after_the_delay() -> None:
    # 8 streams on one replica that batches 4: 4 wait, for the whole delay
    decision = decide_replicas(ctx(load=steady(4, 1, since=NOW - 6)), NOW)
    assert decision.target_replicas == 2
    assert decision.reason == "scaling up 1 → 2: 4 waiting (target 2 per replica) for 5s"


def test_a_short_burst_of_waiting_holds() -> None:
    load = (*steady(0, 1, since=NOW - 10)[:-2], (NOW - 1, 6.0), (NOW, 6.0))
    assert decide_replicas(ctx(load=load), NOW).target_replicas == 1


def test_many_in_flight_but_none_waiting_does_not_scale_up() -> None:
    """The in-flight signal of other deployments is not used: a replica batching 8 is fine."""
    decision = decide_replicas(ctx(load=steady(0, 1, since=NOW - 60)), NOW)
    assert decision.target_replicas == 1
    assert decision.reason == "holding at 1 (0 ready): 2 waiting, target 2 per replica"


def test_busy_replicas_are_kept_when_nothing_waits() -> None:
    assert decide_replicas(ctx(current_target=2, load=steady(0, 2, since=NOW - 60)), NOW).target_replicas == 2


def test_idle_replicas_scale_down_after_the_delay() -> None:
    decision = decide_replicas(ctx(current_target=3, load=steady(0, 1, since=NOW - 40)), NOW)
    assert decision.target_replicas == 1
    assert decision.reason.startswith("scaling down 3 → 1")


def test_scale_from_zero_on_requests_the_gateway_holds() -> None:
    decision = decide_replicas(ctx(spec=LLM_ZERO, current_target=0, queued=5), NOW)
    assert decision.target_replicas == 3  # ceil(5 / 2)
    assert decide_replicas(ctx(spec=LLM_ZERO, current_target=0, queued=1), NOW).target_replicas == 1


@pytest.mark.parametrize(("busy", "target"), [(0, 0), (1, 1)])
def test_scale_to_zero_only_when_no_replica_generates(busy: int, target: int) -> None:
    load = steady(0, busy, since=NOW - 400, spec=LLM_ZERO)
    context = ctx(spec=LLM_ZERO, load=load, last_traffic_at=NOW - 350)
    assert decide_replicas(context, NOW).target_replicas == target


def test_tokens_per_second_adds_replicas_while_the_queue_is_short() -> None:
    fast = LLM.model_copy(update={"target_tokens_per_s": 30})
    assert wanted_replicas(fast, queue_load(fast, waiting=0, busy_replicas=1, tokens_per_s=20)) == 1
    assert wanted_replicas(fast, queue_load(fast, waiting=0, busy_replicas=1, tokens_per_s=61)) == 3
    load = queue_load(fast, waiting=0, busy_replicas=2, tokens_per_s=55)  # 2 replicas' worth: hold
    decision = decide_replicas(ctx(spec=fast, current_target=2,
                                   load=tuple((NOW - 40 + i, load) for i in range(41))), NOW)
    assert decision.target_replicas == 2


def test_tokens_per_second_needs_target_waiting() -> None:
    with pytest.raises(ValueError, match="set target_waiting too"):
        AutoscalingSpec(target_tokens_per_s=10)
