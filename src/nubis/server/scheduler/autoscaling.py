"""Autoscaling as a pure policy: a snapshot and ``now`` in, a replica count and a reason out.

In the manner of Ray Serve's ``autoscaling_policy`` and SkyPilot's ``AutoscalerDecision``, but with
no state of its own: everything the policy remembers (load history, when it last scaled, when
traffic last arrived) comes in the :class:`AutoscalingContext`, so the same snapshot always gives
the same decision and tests need no clock but a number.

The rules, first match wins (worked example in ``docs/deployments.md``):

1. **Bounds.** A target below ``min_replicas`` or above ``max_replicas`` (the spec changed) moves
   there at once.
2. **Scale from zero.** At zero replicas, any demand (queued requests, or in-flight load) starts
   ``ceil(demand / target_in_flight)`` replicas (at least 1) at once, ignoring every delay.
3. **Scale up.** Each load sample wants ``ceil(in_flight / target_in_flight)`` replicas, clamped to
   ``[max(min_replicas, 1), max_replicas]``. When every sample over the last ``scale_up_delay_s``
   wants more than the current target, go straight to the smallest of those wants: the level the
   load has held for the whole delay. A delay of 0 looks at the latest sample only.
4. **Scale to zero.** Only with ``min_replicas == 0``: no queued requests, the latest sample is
   idle, and no traffic for ``scale_to_zero_after_s`` → 0.
5. **Scale down.** Only after ``scale_down_delay_s`` since the last scaling decision, and when every
   sample over the last ``scale_down_delay_s`` wants fewer than the current target: go straight to
   the largest of those wants (never below ``max(min_replicas, 1)``; zero is rule 4's alone).
   Straight rather than one step at a time: the largest want over the whole delay is already the
   cautious choice, and stepping would keep idle replicas for ``delay × steps``.
6. Otherwise hold.

**LLM deployments** (``spec.target_waiting`` set) run the same rules on another signal: each sample
is :func:`queue_load` of the replicas' ``nubis_llm_requests_waiting`` and how many replicas are
generating, so a sample wants ``max(busy replicas, ceil(waiting / target_waiting))``: waiting
requests beyond the target per replica add replicas, and a replica that is still generating is never
scaled away (queue depth alone reads 0 while every replica is busy). Requests the gateway holds count
as waiting. With ``spec.target_tokens_per_s`` set, tokens/s is a second signal: a sample also wants
``ceil(tokens_per_s / target_tokens_per_s)`` replicas (the deployment's generation rate over what one
replica should carry), so a deployment that generates fast keeps (or gains) replicas even while its
queue is short.

A rule that looks back over a delay needs a sample at or before ``now - delay`` (the load in effect
when the delay began); with a shorter history it does not fire. Without any load sample the policy
only applies rules 1 and 2: no data is not the same as no load.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nubis.models.deployments import AutoscalingSpec

LoadSample = tuple[float, float]  # (timestamp, total in-flight requests over the deployment)


@dataclass(frozen=True, kw_only=True)
class AutoscalingContext:
    """What the autoscaler knows about one deployment at one moment."""

    spec: AutoscalingSpec
    current_target: int  # the replica count currently wanted
    ready_replicas: int = 0  # for the reasons only: the policy scales on load, not on readiness
    load: tuple[LoadSample, ...] = ()  # from the gateway, one per reporting window, any order
    queued: int = 0  # requests the gateway holds while no replica is ready
    last_scale_at: float | None = None  # when the target last changed (or the deployment began)
    last_traffic_at: float | None = None  # when a request last arrived

    def __post_init__(self) -> None:
        for name in ("current_target", "ready_replicas", "queued"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} cannot be negative, got {getattr(self, name)}")
        for t, in_flight in self.load:
            if not (math.isfinite(t) and math.isfinite(in_flight) and in_flight >= 0):
                raise ValueError(f"a load sample needs a finite time and in-flight ≥ 0, got {(t, in_flight)}")


@dataclass(frozen=True)
class AutoscalingDecision:
    target_replicas: int
    reason: str


def decide_replicas(ctx: AutoscalingContext, now: float) -> AutoscalingDecision:
    """How many replicas ``ctx``'s deployment should have at ``now``, and why."""
    samples = _samples(ctx, now)
    for rule in (_bounds, _from_zero):
        decision = rule(ctx, samples)
        if decision is not None:
            return decision
    if not samples:
        return AutoscalingDecision(ctx.current_target, "holding: no load reported yet")
    for rule in (_up, _to_zero, _down):
        decision = rule(ctx, samples, now)
        if decision is not None:
            return decision
    return AutoscalingDecision(ctx.current_target, _holding(ctx, samples[-1][1]))


def wanted_replicas(spec: AutoscalingSpec, in_flight: float) -> int:
    """Replicas that ``in_flight`` requests (waiting ones for an LLM) want, within
    ``[max(min_replicas, 1), max_replicas]``."""
    want = math.ceil(in_flight / per_replica_target(spec) - 1e-9)
    return max(spec.min_replicas, 1, min(spec.max_replicas, want))


def per_replica_target(spec: AutoscalingSpec) -> float:
    """What one replica should carry: waiting requests for an LLM, else in-flight requests."""
    return spec.target_waiting if spec.target_waiting is not None else spec.target_in_flight


def queue_load(spec: AutoscalingSpec, *, waiting: float, busy_replicas: int,
               tokens_per_s: float = 0.0) -> float:
    """An LLM deployment's load sample: ``waiting`` requests over its replicas, ``busy_replicas`` of
    which are generating, ``tokens_per_s`` generated over all of them. Worth
    ``max(busy_replicas, ceil(waiting / target_waiting), ceil(tokens_per_s / target_tokens_per_s))``
    replicas: each signal is expressed in waiting requests, the unit :func:`wanted_replicas` divides."""
    per_replica = per_replica_target(spec)
    load = max(float(waiting), busy_replicas * per_replica)
    if spec.target_tokens_per_s is not None:
        load = max(load, tokens_per_s / spec.target_tokens_per_s * per_replica)
    return load


def _signal(spec: AutoscalingSpec) -> str:
    return "waiting" if spec.target_waiting is not None else "in flight"


def _samples(ctx: AutoscalingContext, now: float) -> list[LoadSample]:
    """Load samples by time; queued requests count as load on the latest (or as one at ``now``)."""
    samples = sorted(ctx.load)
    if ctx.queued:
        if samples:
            t, in_flight = samples[-1]
            samples[-1] = (t, in_flight + ctx.queued)
        else:
            samples = [(now, float(ctx.queued))]
    return samples


def _bounds(ctx: AutoscalingContext, samples: list[LoadSample]) -> AutoscalingDecision | None:
    spec, current = ctx.spec, ctx.current_target
    if current < spec.min_replicas:
        return AutoscalingDecision(spec.min_replicas, f"raising to min_replicas ({spec.min_replicas})")
    if current > spec.max_replicas:
        return AutoscalingDecision(spec.max_replicas, f"lowering to max_replicas ({spec.max_replicas})")
    return None


def _from_zero(ctx: AutoscalingContext, samples: list[LoadSample]) -> AutoscalingDecision | None:
    if ctx.current_target != 0:
        return None
    demand = samples[-1][1] if samples else 0.0
    if demand <= 0:
        return AutoscalingDecision(0, "scaled to zero: no requests waiting")
    target = wanted_replicas(ctx.spec, demand)
    return AutoscalingDecision(target, f"scaling from zero → {target}: {_g(demand)} request(s) waiting")


def _window(samples: list[LoadSample], now: float, delay_s: float) -> list[LoadSample] | None:
    """The samples that cover the last ``delay_s`` (the one in effect at its start first), or None
    when the history does not reach back that far. A delay of 0 is the latest sample alone."""
    if delay_s == 0:
        return samples[-1:]
    start = now - delay_s
    before = [i for i, (t, _) in enumerate(samples) if t <= start]
    return samples[before[-1]:] if before else None


def _up(ctx: AutoscalingContext, samples: list[LoadSample], now: float) -> AutoscalingDecision | None:
    spec = ctx.spec
    window = _window(samples, now, spec.scale_up_delay_s)
    if window is None:
        return None
    level = min(wanted_replicas(spec, load) for _, load in window)
    if level <= ctx.current_target:
        return None
    return AutoscalingDecision(
        level,
        f"scaling up {ctx.current_target} → {level}: {_g(samples[-1][1])} {_signal(spec)} "
        f"(target {_g(per_replica_target(spec))} per replica) for {_g(spec.scale_up_delay_s)}s",
    )


def _to_zero(ctx: AutoscalingContext, samples: list[LoadSample], now: float) -> AutoscalingDecision | None:
    spec = ctx.spec
    if spec.min_replicas != 0 or ctx.queued or samples[-1][1] > 0:
        return None
    busy = [t for t, load in samples if load > 0]
    marks = [t for t in (ctx.last_traffic_at, max(busy, default=None)) if t is not None]
    idle_since = max(marks) if marks else ctx.last_scale_at
    if idle_since is None or now - idle_since < spec.scale_to_zero_after_s:
        return None
    return AutoscalingDecision(0, f"scaling to zero: no traffic for {_g(now - idle_since)}s")


def _down(ctx: AutoscalingContext, samples: list[LoadSample], now: float) -> AutoscalingDecision | None:
    spec, current = ctx.spec, ctx.current_target
    if ctx.last_scale_at is not None and now - ctx.last_scale_at < spec.scale_down_delay_s:
        return None
    window = _window(samples, now, spec.scale_down_delay_s)
    if window is None:
        return None
    level = max(wanted_replicas(spec, load) for _, load in window)
    if level >= current:
        return None
    return AutoscalingDecision(
        level,
        f"scaling down {current} → {level}: at most {_g(max(load for _, load in window))} {_signal(spec)} "
        f"for {_g(spec.scale_down_delay_s)}s",
    )


def _holding(ctx: AutoscalingContext, in_flight: float) -> str:
    return (
        f"holding at {ctx.current_target} ({ctx.ready_replicas} ready): {_g(in_flight)} "
        f"{_signal(ctx.spec)}, target {_g(per_replica_target(ctx.spec))} per replica"
    )


def _g(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)
