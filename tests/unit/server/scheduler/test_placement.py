"""The one placement check, and admission on several nodes: snapshots by hand, decisions as data."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nubis.server.scheduler.admission import (
    AdmissionSnapshot,
    Demand,
    QueuedJob,
    RunningJob,
    decide_admissions,
)
from nubis.server.scheduler.placement import NodeView, Strategy, place

GIB = 2**30


def node(id: str, cpu: float = 4, gib: float = 16, gpu: int = 0, **labels: str) -> NodeView:
    return NodeView(id=id, resources=Demand(cpu=cpu, memory=int(gib * GIB), gpu=gpu), labels=labels)


def worker(cpu: float = 0, gib: float = 0, gpu: int = 0) -> Demand:
    return Demand(cpu=cpu, memory=int(gib * GIB), gpu=gpu)


def test_a_two_gpu_worker_never_lands_on_two_one_gpu_nodes() -> None:
    result = place([node("a", gpu=1), node("b", gpu=1)], worker(cpu=1, gpu=2))
    assert not result.placed
    assert "no node can hold a worker of 1 CPU, 2 GPU" in result.reason
    assert "the largest has 4 CPU, 1 GPU" in result.reason


def test_pack_fills_the_fullest_fit_first_and_spread_uses_distinct_nodes() -> None:
    nodes = [node("a", cpu=2), node("b", cpu=4), node("c", cpu=1)]
    assert place(nodes, worker(cpu=1), 3).nodes == ("b", "b", "b")
    assert place(nodes, worker(cpu=1), 6).nodes == ("b", "b", "b", "b", "a", "a")
    assert place(nodes, worker(cpu=1), 3, strategy=Strategy.spread).nodes == ("b", "a", "c")
    spread = place(nodes, worker(cpu=2), 3, strategy=Strategy.spread)
    assert spread.reason == "needs 3 distinct nodes with 2 CPU each; only 2 of 3 node(s) can hold one"
    packed = place(nodes, worker(cpu=2), 4)
    assert packed.reason == "needs 4 workers × 2 CPU; the nodes can hold 3 (of 3 node(s))"


def test_selectors_and_dead_nodes() -> None:
    nodes = [node("a", gpu=2, pool="a100"), node("b", gpu=2), NodeView(id="c", resources=worker(cpu=8, gpu=8),
                                                                       labels={"pool": "a100"}, alive=False)]
    assert place(nodes, worker(gpu=1), 2, selector={"pool": "a100"}).nodes == ("a", "a")
    assert not place(nodes, worker(gpu=1), 3, selector={"pool": "a100"}).placed
    missing = place(nodes, worker(gpu=1), selector={"pool": "h100"})
    assert missing.reason == "no alive node has the labels pool=h100"
    with pytest.raises(ValueError, match="at least one worker"):
        place(nodes, worker(), 0)


@settings(max_examples=200, deadline=None)
@given(free=st.lists(st.tuples(st.integers(0, 8), st.integers(0, 4)), min_size=1, max_size=5),
       cpu=st.integers(0, 4), gpu=st.integers(0, 2), workers=st.integers(1, 6), spread=st.booleans())
def test_a_placement_never_overcommits_a_node(free, cpu, gpu, workers, spread) -> None:
    nodes = [node(f"n{i}", cpu=c, gpu=g) for i, (c, g) in enumerate(free)]
    strategy = Strategy.spread if spread else Strategy.pack
    result = place(nodes, worker(cpu=cpu, gpu=gpu), workers, strategy=strategy)
    # for identical workers, a greedy fill is exact: placed iff the nodes can hold them all
    fits = [min([a // b for a, b in ((c, cpu), (g, gpu)) if b > 0] or [workers]) for c, g in free]
    can = sum(min(f, 1) for f in fits) >= workers if spread else sum(fits) >= workers
    assert result.placed == can
    if result.placed:
        assert len(result.nodes) == workers
        for i, (c, g) in enumerate(free):
            n = result.nodes.count(f"n{i}")
            assert n * cpu <= c and n * gpu <= g
            assert not spread or n <= 1


def snapshot(nodes: list[NodeView], queue: list[QueuedJob], running: tuple[RunningJob, ...] = (),
             free: list[NodeView] | None = None) -> AdmissionSnapshot:
    free = free if free is not None else nodes

    def total(ns: list[NodeView]) -> Demand:
        return Demand(cpu=sum(n.resources.cpu for n in ns), memory=sum(n.resources.memory for n in ns),
                      gpu=sum(n.resources.gpu for n in ns))

    return AdmissionSnapshot(free=total(free), total=total(nodes), queue=queue, running=running, quotas={},
                             usage={}, nodes=free, node_totals=nodes)


def job(id: str, *, workers: int, gpu: int = 0, cpu: float = 1, priority: int = 0, spread: bool = False,
        **selector: str) -> QueuedJob:
    return QueuedJob(id=id, workspace="w", priority=priority, seq=0, workers=workers,
                     per_worker=worker(cpu=cpu, gpu=gpu),
                     strategy=Strategy.spread if spread else Strategy.pack, selector=selector)


def test_admission_refuses_a_gang_the_pool_holds_but_no_node_does() -> None:
    nodes = [node("a", gpu=1), node("b", gpu=1)]
    decision = decide_admissions(snapshot(nodes, [job("big", workers=1, gpu=2), job("ok", workers=2, gpu=1)]),
                                 now=0)
    assert decision.admit == ("ok",)
    assert decision.placements == {"ok": ("a", "b")}
    assert decision.waiting["big"].startswith("can never fit: no node can hold a worker of 1 CPU, 2 GPU")


def test_admission_takes_what_it_places_node_by_node() -> None:
    nodes = [node("a", cpu=2), node("b", cpu=2), node("c", cpu=2)]
    queue = [job("first", workers=3, spread=True), job("second", workers=2, cpu=1.5),
             job("third", workers=3, cpu=1)]
    decision = decide_admissions(snapshot(nodes, queue), now=0)
    assert decision.admit == ("first", "third")
    assert decision.waiting["second"] == ("waiting for capacity: no node can hold a worker of 1.5 CPU; "
                                          "the largest has 1 CPU (of 3 node(s))")
    held = [n for j in ("first", "third") for n in decision.placements[j]]
    assert all(held.count(n) <= 2 for n in "abc")


def test_preemption_happens_only_when_the_victims_nodes_make_room() -> None:
    nodes = [node("a", cpu=2, gpu=1), node("b", cpu=2, gpu=1)]
    low = RunningJob(id="low", workspace="w", priority=0, seq=0, workers=1, per_worker=worker(cpu=1, gpu=1),
                     started_at=0, nodes=("a",))
    free = [node("a", cpu=1, gpu=0), node("b", cpu=2, gpu=1)]
    wants_both = job("high", workers=2, gpu=1, priority=5, spread=True)
    decision = decide_admissions(snapshot(nodes, [wants_both], (low,), free=free), now=0)
    assert decision.preempt == ("low",)
    assert decision.admit == ("high",)
    assert sorted(decision.placements["high"]) == ["a", "b"]
    labelled = job("high", workers=1, gpu=1, priority=5, pool="x")
    decision = decide_admissions(snapshot([*nodes, node("c", gpu=1, pool="x")], [labelled], (low,),
                                          free=[*free, node("c", gpu=0, pool="x")]), now=0)
    assert decision.preempt == ()
    assert decision.waiting["high"].startswith("waiting for capacity")
