"""The admission policy: snapshots built by hand, decisions checked as data; nothing sleeps."""

import itertools
import math
import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nubis.server.scheduler.admission import (
    AdmissionDecision,
    AdmissionSnapshot,
    Demand,
    QueuedJob,
    Quota,
    RunningJob,
    beyond_quota,
    decide_admissions,
    format_resources,
    millicores,
)

GIB = 2**30
NOW = 1_000.0
BIG = Demand(cpu=64, memory=256 * GIB, gpu=8)
_seq = itertools.count()


def res(cpu: float = 0, gib: float = 0, gpu: int = 0) -> Demand:
    return Demand(cpu=cpu, memory=int(gib * GIB), gpu=gpu)


def queued(id: str, *, ws: str = "research", priority: int = 0, seq: int | None = None, workers: int = 1,
           cpu: float = 0, gib: float = 0, gpu: int = 0) -> QueuedJob:
    return QueuedJob(id=id, workspace=ws, priority=priority, seq=next(_seq) if seq is None else seq,
                     workers=workers, per_worker=res(cpu, gib, gpu))


def running(id: str, *, ws: str = "research", priority: int = 0, started_at: float = 0.0, workers: int = 1,
            cpu: float = 0, gib: float = 0, gpu: int = 0, preemptible: bool = True) -> RunningJob:
    return RunningJob(id=id, workspace=ws, priority=priority, seq=next(_seq), workers=workers,
                      per_worker=res(cpu, gib, gpu), started_at=started_at, preemptible=preemptible)


def snap(queue: list[QueuedJob], *, free: Demand = BIG, total: Demand = BIG,
         running: Sequence[RunningJob] = (), quotas: dict[str, Quota] | None = None,
         usage: dict[str, Demand] | None = None) -> AdmissionSnapshot:
    return AdmissionSnapshot(free=free, total=total, queue=queue, running=list(running),
                             quotas=quotas or {}, usage=usage or {})


def decide(*args, **kwargs) -> AdmissionDecision:
    return decide_admissions(snap(*args, **kwargs), now=NOW)


# ---- order and gangs --------------------------------------------------------------------------


def test_higher_priority_goes_first_whatever_the_submission_order() -> None:
    d = decide([queued("low", priority=0, seq=1, cpu=2), queued("high", priority=5, seq=2, cpu=2)],
               free=res(cpu=3))
    assert d.admit == ("high",)
    assert d.waiting == {"low": "waiting for capacity: needs 2 CPU; free 1 CPU"}


def test_fifo_within_a_priority_and_admit_lists_the_order() -> None:
    jobs = [queued(name, seq=seq, cpu=1) for name, seq in [("c", 30), ("a", 10), ("d", 40), ("b", 20)]]
    assert decide(jobs, free=res(cpu=3)).admit == ("a", "b", "c")
    assert decide([*jobs, queued("first", priority=1, seq=99, cpu=1)], free=res(cpu=3)).admit == (
        "first", "a", "b")


def test_a_gang_starts_whole_or_not_at_all() -> None:
    d = decide([queued("train", workers=3, gpu=1), queued("small", gpu=1)], free=res(gpu=2), total=res(gpu=4))
    assert d.admit == ("small",)
    assert d.waiting == {"train": "waiting for capacity: needs 3 GPU; free 2 GPU"}


@pytest.mark.parametrize("free", [
    res(cpu=1.5, gib=4, gpu=2), res(cpu=2, gib=3.9, gpu=2), res(cpu=2, gib=4, gpu=1),
], ids=["cpu", "memory", "gpu"])
def test_every_resource_must_fit(free: Demand) -> None:
    job = queued("j", workers=2, cpu=1, gib=2, gpu=1)
    assert decide([job], free=free).admit == ()
    assert decide([job], free=res(cpu=2, gib=4, gpu=2)).admit == ("j",)


def test_a_waiting_job_does_not_block_smaller_ones_behind_it() -> None:
    d = decide([queued("big", priority=9, cpu=8), queued("small", priority=1, cpu=2),
                queued("medium", priority=1, cpu=3)], free=res(cpu=4))
    assert d.admit == ("small",)
    assert set(d.waiting) == {"big", "medium"}


def test_fractional_cpu_is_counted_in_millicores_without_drift() -> None:
    assert millicores(0.1) * 3 == millicores(0.3) == 300
    d = decide([queued(f"j{i}", cpu=0.1) for i in range(10)], free=res(cpu=1.0))
    assert len(d.admit) == 10


# ---- quotas -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("quota", "usage", "reason"), [
    (Quota(cpu=4), res(cpu=3), "workspace quota: needs 2 CPU; research has 1 of 4 CPU left"),
    (Quota(memory=16 * GIB), res(gib=15.5),
     "workspace quota: needs 8.00 GiB; research has 0.50 of 16.00 GiB left"),
    (Quota(gpu=2), res(gpu=1), "workspace quota: needs 2 GPU; research has 1 of 2 GPU left"),
    (Quota(cpu=4, gpu=2), res(cpu=3, gpu=1),
     "workspace quota: needs 2 CPU, 2 GPU; research has 1 of 4 CPU, 1 of 2 GPU left"),
])
def test_quota_is_kept_in_every_resource(quota: Quota, usage: Demand, reason: str) -> None:
    job = queued("j", workers=2, cpu=1, gib=4, gpu=1 if quota.gpu is not None else 0)
    d = decide([job, queued("elsewhere", ws="other", cpu=1)], quotas={"research": quota},
               usage={"research": usage})
    assert d.admit == ("elsewhere",)
    assert d.waiting == {"j": reason}


def test_quota_counts_what_this_round_admitted() -> None:
    jobs = [queued("a", cpu=2), queued("b", cpu=2), queued("c", cpu=1), queued("other", ws="prod", cpu=4)]
    d = decide(jobs, quotas={"research": Quota(cpu=4), "prod": Quota(cpu=None)},
               usage={"research": res(cpu=1)})
    assert d.admit == ("a", "c", "other")
    assert d.waiting == {"b": "workspace quota: needs 2 CPU; research has 1 of 4 CPU left"}


def test_quota_never_preempts_another_workspace() -> None:
    victim = running("other-low", ws="other", priority=0, cpu=4)
    d = decide([queued("urgent", priority=9, cpu=2)], free=res(cpu=8), running=[victim],
               quotas={"research": Quota(cpu=4)}, usage={"research": res(cpu=3), "other": res(cpu=4)})
    assert d.preempt == ()
    assert d.waiting == {"urgent": "workspace quota: needs 2 CPU; research has 1 of 4 CPU left"}


def test_quota_room_may_come_from_the_workspaces_own_lower_priority_jobs() -> None:
    mine = [running("mine-old", priority=0, started_at=1, cpu=2),
            running("mine-new", priority=0, started_at=2, cpu=2),
            running("mine-high", priority=9, started_at=3, cpu=1)]
    theirs = running("theirs", ws="other", priority=0, started_at=9, cpu=2)
    d = decide([queued("urgent", priority=5, cpu=2)], free=res(cpu=10), running=[*mine, theirs],
               quotas={"research": Quota(cpu=5)}, usage={"research": res(cpu=5), "other": res(cpu=2)})
    assert d.admit == ("urgent",)
    assert d.preempt == ("mine-new",)  # newest of the lowest priority; capacity was never short


@pytest.mark.parametrize(("free", "victims"), [
    (res(cpu=0), ("theirs", "mine")),  # newest first: theirs frees capacity, mine capacity and quota
    (res(cpu=2), ("mine",)),  # mine alone frees enough of both: theirs is put back
])
def test_preemption_can_make_room_in_both_quota_and_capacity(free: Demand, victims: tuple[str, ...]) -> None:
    active = [running("mine", priority=0, started_at=1, cpu=2),
              running("theirs", ws="other", priority=0, started_at=2, cpu=2)]
    d = decide([queued("urgent", priority=5, cpu=4)], free=free, total=res(cpu=6), running=active,
               quotas={"research": Quota(cpu=4)}, usage={"research": res(cpu=2), "other": res(cpu=2)})
    assert d.admit == ("urgent",)
    assert d.preempt == victims


def test_a_preempted_jobs_usage_no_longer_counts_for_its_workspace() -> None:
    victim = running("v", ws="other", priority=0, cpu=4)
    jobs = [queued("urgent", priority=5, cpu=4), queued("theirs", ws="other", priority=1, cpu=2)]
    d = decide(jobs, free=res(cpu=2), total=res(cpu=8), running=[victim],
               quotas={"other": Quota(cpu=4)}, usage={"other": res(cpu=4)})
    assert d.admit == ("urgent", "theirs")
    assert d.preempt == ("v",)


def test_missing_quota_or_none_is_unlimited() -> None:
    d = decide([queued("a", cpu=32), queued("b", ws="free-for-all", cpu=32)],
               quotas={"research": Quota(memory=GIB)}, usage={"research": res(cpu=1000)})
    assert d.admit == ("a", "b")


# ---- preemption -------------------------------------------------------------------------------


def test_preempts_lowest_priority_then_newest_and_only_as_many_as_needed() -> None:
    victims = [
        running("p0-old", priority=0, started_at=10, cpu=2),
        running("p0-new", priority=0, started_at=20, cpu=2),
        running("p1-newest", priority=1, started_at=30, cpu=2),
        running("p0-newer", priority=0, started_at=15, cpu=2),
    ]
    d = decide([queued("urgent", priority=5, cpu=5)], free=res(cpu=1), total=res(cpu=9), running=victims)
    assert d.admit == ("urgent",)
    assert d.preempt == ("p0-new", "p0-newer")


def test_victims_the_job_could_do_without_are_put_back() -> None:
    victims = [running("tiny", priority=0, cpu=1), running("large", priority=1, cpu=4)]
    d = decide([queued("urgent", priority=5, cpu=4)], free=res(), total=res(cpu=5), running=victims)
    assert d.preempt == ("large",)  # tiny alone is not enough; large alone is


def test_victims_that_free_nothing_needed_are_skipped() -> None:
    victims = [running("cpu-only", priority=0, started_at=9, cpu=8), running("gpu", priority=1, gpu=1, cpu=1)]
    d = decide([queued("urgent", priority=5, gpu=1)], free=res(cpu=8), total=res(cpu=16, gpu=1),
               running=victims)
    assert d.preempt == ("gpu",)


@pytest.mark.parametrize("victim", [
    running("same", priority=5, cpu=4),
    running("higher", priority=6, cpu=4),
    running("pinned", priority=0, cpu=4, preemptible=False),
], ids=lambda r: r.id)
def test_never_preempts_equal_higher_or_non_preemptible(victim: RunningJob) -> None:
    d = decide([queued("j", priority=5, cpu=4)], free=res(), total=res(cpu=4), running=[victim])
    assert d.preempt == ()
    assert d.waiting == {"j": "waiting for capacity: needs 4 CPU; free 0 CPU"}


def test_nothing_is_preempted_when_even_all_candidates_would_not_do() -> None:
    victims = [running("a", priority=0, cpu=2), running("b", priority=0, cpu=2),
               running("c", priority=7, cpu=4)]
    d = decide([queued("urgent", priority=5, cpu=6)], free=res(cpu=1), total=res(cpu=9), running=victims)
    assert d.preempt == ()
    assert d.admit == ()
    assert d.waiting == {"urgent": "waiting for capacity: needs 6 CPU; free 1 CPU"}


def test_freed_capacity_serves_the_rest_of_the_round_and_victims_are_not_readmitted() -> None:
    victim = running("v", priority=0, cpu=4)
    d = decide([queued("urgent", priority=5, cpu=3), queued("after", priority=2, cpu=1)],
               free=res(), total=res(cpu=4), running=[victim])
    assert d.admit == ("urgent", "after")
    assert d.preempt == ("v",)
    assert "v" not in d.waiting


def test_each_preemptor_takes_its_own_victims() -> None:
    victims = [running(f"v{i}", priority=i, started_at=i, cpu=2) for i in range(4)]
    jobs = [queued("a", priority=9, cpu=2), queued("b", priority=2, cpu=2), queued("c", priority=2, cpu=2)]
    d = decide(jobs, free=res(), total=res(cpu=8), running=victims)
    assert d.admit == ("a", "b")
    assert d.preempt == ("v0", "v1")  # c would need v2 or v3: not of lower priority
    assert d.waiting["c"] == "waiting for capacity: needs 2 CPU; free 0 CPU"


def test_a_low_priority_job_backfills_but_never_preempts() -> None:
    victim = running("v", priority=3, cpu=2)
    d = decide([queued("huge", priority=9, cpu=100), queued("low", priority=3, cpu=2)],
               free=res(cpu=1), total=res(cpu=200), running=[victim])
    assert d.preempt == ()
    assert set(d.waiting) == {"huge", "low"}


# ---- jobs that can never start, and reasons ----------------------------------------------------


def test_a_gang_larger_than_the_backend_can_never_fit() -> None:
    d = decide([queued("train", workers=3, gpu=1, cpu=1)], free=res(cpu=8, gpu=2), total=res(cpu=8, gpu=2))
    assert d.waiting == {
        "train": "can never fit: needs 3 GPU (3 workers × 1 GPU); the backend has 2 GPU in all"}


def test_a_single_worker_too_large_for_the_backend() -> None:
    d = decide([queued("j", cpu=100, gib=1)], total=res(cpu=64, gib=512))
    assert d.waiting == {
        "j": "can never fit: needs 100 CPU (1 worker × 100 CPU); the backend has 64 CPU in all"}


def test_a_job_above_its_quota_outright_says_so_and_preempts_nothing() -> None:
    d = decide([queued("j", priority=9, workers=4, gib=8)], running=[running("v", gib=64)],
               quotas={"research": Quota(memory=16 * GIB)})
    assert d.preempt == ()
    assert d.waiting == {"j": "exceeds workspace quota: needs 32.00 GiB; research's quota is 16.00 GiB"}


def test_capacity_reasons_name_every_resource_the_job_asks_for() -> None:
    d = decide([queued("j", workers=2, cpu=0.75, gib=1.5, gpu=1)], free=res(cpu=0.5, gib=10, gpu=1),
               total=res(cpu=8, gib=64, gpu=2))
    assert d.waiting == {
        "j": "waiting for capacity: needs 1.5 CPU, 3.00 GiB, 2 GPU; free 0.5 CPU, 10.00 GiB, 1 GPU"}


def test_format_resources() -> None:
    assert format_resources((2000, 4 * GIB, 1)) == "2 CPU, 4.00 GiB, 1 GPU"
    assert format_resources((250, 0, 0), [0]) == "0.25 CPU"
    assert format_resources((0, 0, 0), []) == "nothing"


@pytest.mark.parametrize(("make", "message"), [
    (lambda: queued("j", workers=0, cpu=1), "at least one worker"),
    (lambda: queued("j", cpu=-1), "negative"),
    (lambda: Demand(cpu=math.nan), "finite"),
])
def test_malformed_input_is_refused(make, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_ten_thousand_queued_jobs_in_one_call() -> None:
    rnd = random.Random(7)
    queue = [queued(f"q{i}", ws=f"ws{i % 7}", priority=rnd.randrange(5), seq=i, workers=rnd.randint(1, 4),
                    cpu=rnd.choice([0.5, 1, 2]), gib=rnd.choice([1, 4]), gpu=rnd.choice([0, 0, 1]))
             for i in range(10_000)]
    active = [running(f"r{i}", ws=f"ws{i % 7}", priority=rnd.randrange(5), started_at=i, cpu=1, gib=2)
              for i in range(100)]
    d = decide(queue, free=res(cpu=32, gib=128, gpu=4), total=res(cpu=256, gib=1024, gpu=8), running=active,
               quotas={f"ws{i}": Quota(cpu=40) for i in range(3)})
    assert len(d.admit) + len(d.waiting) == 10_000
    assert d.admit and d.preempt
    assert not set(d.admit) & set(d.waiting)


# ---- properties ---------------------------------------------------------------------------------
# A reference replay, written independently of the policy: walk the queue in order, hand each
# admitted job the victims the decision lists next until it fits, and check every rule on the way.

WORKSPACES = ["a", "b", "c"]


def v(d: Demand, n: int = 1) -> tuple[int, int, int]:
    return (millicores(d.cpu) * n, d.memory * n, d.gpu * n)


def add(x, y, sign: int = 1) -> tuple[int, ...]:
    return tuple(a + sign * b for a, b in zip(x, y, strict=True))


def le(x, y) -> bool:
    return all(a <= b for a, b in zip(x, y, strict=True))


def limit(quota: Quota | None) -> tuple[float, ...]:
    q = quota or Quota()
    return (math.inf if q.cpu is None else millicores(q.cpu), math.inf if q.memory is None else q.memory,
            math.inf if q.gpu is None else q.gpu)


def fits(job, free, usage, quota, victims) -> bool:
    d = v(job.per_worker, job.workers)
    freed = free
    used = usage.get(job.workspace, (0, 0, 0))
    for r in victims:
        freed = add(freed, v(r.per_worker, r.workers))
        if r.workspace == job.workspace:
            used = add(used, v(r.per_worker, r.workers), -1)
    return le(d, freed) and le(add(used, d), quota)


def replay(s: AdmissionSnapshot, decision: AdmissionDecision) -> None:
    queue = sorted(s.queue, key=lambda j: (-j.priority, j.seq))
    assert set(decision.admit).isdisjoint(decision.waiting)  # (e)
    assert set(decision.admit) | set(decision.waiting) == {j.id for j in queue}
    assert list(decision.admit) == [j.id for j in queue if j.id in set(decision.admit)]
    by_id = {r.id: r for r in s.running}
    victims = [by_id[i] for i in decision.preempt]
    alive = {r.id for r in s.running}
    free, usage = v(s.free), {ws: v(u) for ws, u in s.usage.items()}
    for job in queue:
        quota = limit(s.quotas.get(job.workspace))
        candidates = [r for r in s.running if r.id in alive and r.preemptible and r.priority < job.priority]
        mine = [r for r in candidates if r.workspace == job.workspace]
        if job.id in decision.waiting:  # (c): it fits nowhere, not even by preempting every candidate
            could_capacity = fits(job, free, {}, (math.inf,) * 3, candidates)
            could_quota = fits(job, (math.inf,) * 3, usage, quota, mine)
            assert not (could_capacity and could_quota and le(v(job.per_worker, job.workers), v(s.total)))
            check_reason(s, job, decision.waiting[job.id], could_quota=could_quota)
            continue
        taken = []
        while not fits(job, free, usage, quota, taken):
            assert victims, f"{job.id} was admitted without room"  # (a), (b)
            taken.append(victims.pop(0))
        for r in taken:  # (d): strictly lower priority, preemptible, each one needed
            assert r.priority < job.priority and r.preemptible and r.id in alive
            assert not fits(job, free, usage, quota, [o for o in taken if o is not r])
        for r in taken:
            alive.discard(r.id)
            free = add(free, v(r.per_worker, r.workers))
            usage[r.workspace] = add(usage.get(r.workspace, (0, 0, 0)), v(r.per_worker, r.workers), -1)
        d = v(job.per_worker, job.workers)
        free = add(free, d, -1)
        usage[job.workspace] = add(usage.get(job.workspace, (0, 0, 0)), d)
        assert min(free) >= 0 and le(usage[job.workspace], quota)
    assert victims == []  # every victim was needed by some admitted job


def check_totals(s: AdmissionSnapshot, decision: AdmissionDecision) -> None:
    """(a) and (b) over the whole round, as the caller will apply it."""
    jobs = {j.id: j for j in [*s.queue, *s.running]}
    admitted = [jobs[i] for i in decision.admit]
    preempted = [jobs[i] for i in decision.preempt]

    def held(group, ws: str | None = None) -> tuple[int, ...]:
        total = (0, 0, 0)
        for j in group:
            if ws is None or j.workspace == ws:
                total = add(total, v(j.per_worker, j.workers))
        return total

    assert le(held(admitted), add(v(s.free), held(preempted)))
    for ws in {j.workspace for j in admitted}:
        after = add(add(v(s.usage.get(ws, Demand())), held(preempted, ws), -1), held(admitted, ws))
        assert le(after, limit(s.quotas.get(ws)))


def check_reason(s: AdmissionSnapshot, job: QueuedJob, reason: str, *, could_quota: bool) -> None:
    d = v(job.per_worker, job.workers)
    if not le(d, v(s.total)):
        assert reason.startswith("can never fit: ")
    elif not le(d, limit(s.quotas.get(job.workspace))):
        assert reason.startswith("exceeds workspace quota: ")
    elif not could_quota:
        assert reason.startswith("workspace quota: needs ") and f"; {job.workspace} has " in reason
    else:
        assert reason.startswith("waiting for capacity: needs ")


def cpus(most: int) -> st.SearchStrategy[float]:
    """Tenths of a core, which floats do not hold exactly (0.1 * 3 != 0.3)."""
    return st.integers(0, 10 * most).map(lambda tenths: tenths / 10)


@st.composite
def demands(draw, *, most: int = 4) -> Demand:
    return Demand(cpu=draw(cpus(most)), memory=draw(st.integers(0, most)) * GIB,
                  gpu=draw(st.integers(0, most // 2)))


@st.composite
def snapshots(draw) -> AdmissionSnapshot:
    n_queue, n_running = draw(st.integers(0, 12)), draw(st.integers(0, 8))
    seqs = draw(st.permutations(range(n_queue + n_running)))
    workspaces, priorities = st.sampled_from(WORKSPACES), st.integers(0, 3)
    queue = [QueuedJob(id=f"q{i}", workspace=draw(workspaces), priority=draw(priorities), seq=seqs[i],
                       workers=draw(st.integers(1, 3)), per_worker=draw(demands(most=2)))
             for i in range(n_queue)]
    active = [RunningJob(id=f"r{i}", workspace=draw(workspaces), priority=draw(priorities),
                         seq=seqs[n_queue + i], workers=draw(st.integers(1, 2)),
                         per_worker=draw(demands(most=2)), started_at=draw(st.integers(0, 5)),
                         preemptible=draw(st.booleans()))
              for i in range(n_running)]
    # usage: running jobs plus deployment replicas; total: free plus all of that
    usage = {ws: sum_demand([v(r.per_worker, r.workers) for r in active if r.workspace == ws]
                            + [v(draw(demands(most=1)))]) for ws in WORKSPACES}
    free = draw(demands(most=6))
    total = sum_demand([v(free), *(v(u) for u in usage.values())])
    gib = st.integers(0, 16).map(lambda g: g * GIB)
    quotas = {ws: Quota(cpu=draw(st.none() | cpus(16)), memory=draw(st.none() | gib),
                        gpu=draw(st.none() | st.integers(0, 6)))
              for ws in draw(st.lists(st.sampled_from(WORKSPACES), unique=True))}
    return AdmissionSnapshot(free=free, total=total, queue=queue, running=active, quotas=quotas, usage=usage)


def sum_demand(amounts: list[tuple[int, int, int]]) -> Demand:
    cpu, memory, gpu = (sum(a[i] for a in amounts) for i in range(3))
    return Demand(cpu=cpu / 1000, memory=memory, gpu=gpu)


@settings(max_examples=300)
@given(snapshots())
def test_decisions_keep_every_rule(s: AdmissionSnapshot) -> None:
    decision = decide_admissions(s, now=NOW)
    check_totals(s, decision)
    replay(s, decision)


@settings(max_examples=200)
@given(snapshots(), st.randoms(use_true_random=False))
def test_decisions_are_deterministic_and_ignore_input_order(s: AdmissionSnapshot, rnd) -> None:
    queue, active = list(s.queue), list(s.running)
    rnd.shuffle(queue)
    rnd.shuffle(active)
    shuffled = AdmissionSnapshot(free=s.free, total=s.total, queue=queue, running=active, quotas=s.quotas,
                                 usage=s.usage)
    first = decide_admissions(s, now=NOW)
    assert decide_admissions(s, now=NOW) == first == decide_admissions(shuffled, now=NOW + 1)


def test_beyond_quota_says_per_worker_times_workers_and_the_quota() -> None:
    assert beyond_quota("ws", 2, Demand(cpu=2), Quota(cpu=1)) == (
        "needs 2 CPU per worker × 2 workers = 4 CPU; workspace ws's quota is 1 CPU")
    assert beyond_quota("ws", 2, Demand(cpu=0.5, memory=GIB), Quota(cpu=1, memory=2 * GIB)) is None
    assert beyond_quota("ws", 1, Demand(gpu=1), Quota()) is None
