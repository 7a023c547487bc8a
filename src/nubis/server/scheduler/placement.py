"""Where a gang's workers (or one replica) can go: the one placement check, on nodes.

The API's "can this ever run" (against each node's total), job admission (against what each node
has free) and the backends (before they start anything) all ask :func:`place`; so a 2-GPU worker is
never admitted onto two 1-GPU nodes, and a gang that cannot be placed says why instead of being
started and failing.

Two strategies, as Ray's placement groups: ``pack`` puts the workers on as few nodes as possible
(fullest fit first), ``spread`` puts each worker on a different node (Ray's ``STRICT_SPREAD``). A
``selector`` keeps only nodes whose labels hold every ``key=value`` asked for. Every worker of a
gang asks for the same resources. Amounts are integers (millicores, bytes, GPUs), as in admission.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from nubis.backends.nodes import NodeInfo
from nubis.server.scheduler.demand import Demand, Vec, format_resources, millicores


class Strategy(StrEnum):
    pack = "pack"
    spread = "spread"


@dataclass(frozen=True, kw_only=True)
class NodeView:
    """One node as placement sees it: what it has (free, or in all), its labels, alive or not."""

    id: str
    resources: Demand
    labels: Mapping[str, str] = field(default_factory=dict)
    alive: bool = True


@dataclass(frozen=True)
class Placement:
    """The node of each worker, in rank order; or, when the gang cannot be placed, why."""

    nodes: tuple[str, ...] = ()
    reason: str | None = None

    @property
    def placed(self) -> bool:
        return self.reason is None


def vec(demand: Demand) -> Vec:
    return (millicores(demand.cpu), demand.memory, demand.gpu)


def views(nodes: Sequence[NodeInfo], *, free: bool) -> list[NodeView]:
    """The backend's nodes as placement sees them: what each has free, or in all."""
    out = []
    for node in nodes:
        amounts = node.free if free else node.total
        out.append(NodeView(id=node.id, labels=node.labels, alive=node.alive,
                            resources=Demand(cpu=max(0.0, amounts.cpu), memory=max(0, amounts.memory),
                                             gpu=max(0, amounts.gpu))))
    return out


def matches(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def place(nodes: Sequence[NodeView], per_worker: Demand, workers: int = 1, *,
          strategy: Strategy = Strategy.pack, selector: Mapping[str, str] | None = None,
          unit: str = "worker") -> Placement:
    """Put ``workers`` workers of ``per_worker`` each on ``nodes``, or say why they do not fit
    (``unit`` names one of them in the reason: a worker, a replica)."""
    amounts = {n.id: vec(n.resources) for n in nodes}
    return place_amounts(nodes, amounts, vec(per_worker), workers, strategy=strategy, selector=selector,
                         unit=unit)


def place_amounts(nodes: Sequence[NodeView], amounts: Mapping[str, Vec], need: Vec, workers: int, *,
                  strategy: Strategy = Strategy.pack, selector: Mapping[str, str] | None = None,
                  unit: str = "worker", avoid: Collection[str] = ()) -> Placement:
    """:func:`place` with each node's amounts given apart (``amounts[node.id]``), in integers;
    nodes in ``avoid`` (where a deployment's other replicas run) are used last."""
    if workers < 1:
        raise ValueError(f"a gang needs at least one worker, got {workers}")
    selector = selector or {}
    eligible = [n for n in nodes if n.alive and matches(n.labels, selector)]
    if not eligible:
        wanted = ", ".join(f"{k}={v}" for k, v in sorted(selector.items()))
        return Placement(reason=f"no alive node has the labels {wanted}" if selector else "no alive node")
    room = {n.id: _how_many(amounts[n.id], need) for n in eligible}
    order = sorted(eligible, key=lambda n: (n.id in avoid, -room[n.id], n.id))  # most room first
    chosen: list[str] = []
    for node in order:
        take = min(room[node.id], 1 if strategy is Strategy.spread else workers - len(chosen))
        chosen.extend([node.id] * take)
        if len(chosen) == workers:
            return Placement(nodes=tuple(chosen))
    holders = sum(1 for n in eligible if room[n.id] > 0)
    largest = max((amounts[n.id] for n in eligible), key=lambda a: (a[2], a[0], a[1]))
    return Placement(reason=_why_not(len(eligible), largest, need, workers, strategy,
                                     sum(room.values()), holders, unit))


class Nodes:
    """Each node's free amounts through one admission round: placed gangs take, victims give back."""

    def __init__(self, free: Sequence[NodeView], totals: Sequence[NodeView]) -> None:
        self.views = list(free)
        self.free = {n.id: vec(n.resources) for n in free}
        self.totals = list(totals) or list(free)
        self._total_amounts = {n.id: vec(n.resources) for n in self.totals}
        self._never: dict[tuple[object, ...], Placement] = {}

    def place(self, need: Vec, workers: int, strategy: Strategy, selector: Mapping[str, str],
              freed: Mapping[str, Vec] | None = None, avoid: Collection[str] = ()) -> Placement:
        amounts = self.free
        if freed:
            amounts = {k: _add(v, freed.get(k, (0, 0, 0))) for k, v in self.free.items()}
        return place_amounts(self.views, amounts, need, workers, strategy=strategy, selector=selector,
                             avoid=avoid)

    def never(self, need: Vec, workers: int, strategy: Strategy, selector: Mapping[str, str]) -> Placement:
        """The placement on empty nodes (their totals), remembered for the round."""
        key = (need, workers, strategy, tuple(sorted(selector.items())))
        if key not in self._never:
            self._never[key] = place_amounts(self.totals, self._total_amounts, need, workers,
                                             strategy=strategy, selector=selector)
        return self._never[key]

    def take(self, nodes: Sequence[str], need: Vec, sign: int = 1) -> None:
        taken = (-sign * need[0], -sign * need[1], -sign * need[2])
        for node in nodes:
            if node in self.free:
                self.free[node] = _add(self.free[node], taken)

    def held_by(self, placements: Sequence[tuple[Sequence[str], Vec]]) -> dict[str, Vec]:
        """What gangs placed as given hold, by node."""
        held: dict[str, Vec] = {}
        for nodes, need in placements:
            for node in nodes:
                held[node] = _add(held.get(node, (0, 0, 0)), need)
        return held


def _add(a: Vec, b: Vec) -> Vec:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2])


def _how_many(free: Vec, need: Vec) -> int:
    """How many workers of ``need`` fit in ``free`` (a worker that needs nothing: any number)."""
    if any(free[i] < 0 for i in range(3)):
        return 0
    counts = [free[i] // need[i] for i in range(3) if need[i] > 0]
    return min(counts) if counts else 1 << 30


def _why_not(count: int, largest: Vec, need: Vec, workers: int, strategy: Strategy,
             fit: int, holders: int, unit: str) -> str:
    dims = [i for i in range(3) if need[i]] or [0]
    each = format_resources(need, dims)
    plural = "s" if workers != 1 else ""
    if holders == 0:
        return (f"no node can hold a {unit} of {each}; the largest has "
                f"{format_resources(largest, dims)} (of {count} node(s))")
    if strategy is Strategy.spread:
        return (f"needs {workers} distinct node{plural} with {each} each; only {holders} of "
                f"{count} node(s) can hold one")
    return f"needs {workers} {unit}{plural} × {each}; the nodes can hold {fit} (of {count} node(s))"


def never_placeable(nodes: Sequence[NodeInfo], per_worker: Demand, workers: int = 1, *, spread: bool = False,
                    selector: Mapping[str, str] | None = None, unit: str = "worker") -> str | None:
    """Why a gang (or one replica) could never run on these nodes even were they empty, or None:
    the API's "does it fit", the same check admission and the reconcilers make."""
    placement = place(views(nodes, free=False), per_worker, workers, unit=unit, selector=selector,
                      strategy=Strategy.spread if spread else Strategy.pack)
    return placement.reason
