"""The control plane's metrics without a server: queue reasons as labels, reconciler rounds, gauges."""

from collections.abc import Callable

import pytest
from prometheus_client.parser import text_string_to_metric_families

from nubis.server.metrics import PlatformCounts, ServerMetrics
from nubis.server.scheduler.admission import AdmissionSnapshot, Demand, QueuedJob, Quota, decide_admissions
from nubis.server.services.metrics import queue_reason

Metric = Callable[[str, str], float | None]
NOTHING = PlatformCounts(queued={}, replicas={}, workers={})

FREE = Demand(cpu=1)
TOTAL = Demand(cpu=4)


def why_waiting(cpu: float, *, quota: float | None = None, used: float = 0) -> str:
    """The reason the admission policy gives a 1-worker job of ``cpu`` cores in workspace ws."""
    job = QueuedJob(id="j", workspace="ws", priority=0, seq=0, workers=1, per_worker=Demand(cpu=cpu))
    snapshot = AdmissionSnapshot(free=FREE, total=TOTAL, queue=[job], running=[],
                                 quotas={"ws": Quota(cpu=quota)}, usage={"ws": Demand(cpu=used)})
    return decide_admissions(snapshot, now=0.0).waiting["j"]


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        (why_waiting(2), "capacity"),
        (why_waiting(8), "never_fits"),
        (why_waiting(2, quota=1), "quota"),
        (why_waiting(1, quota=1, used=0.5), "quota"),
        ("waiting for admission", "new"),
        ("preempted by a job of higher priority; it resumes from its checkpoint", "preempted"),
        ("the platform stopped; it resumes at the next start", "platform_stopped"),
        ("building a virtualenv for rich (missing from the platform's environment; 3 s so far)",
         "environment"),
        ("something new the reconciler says", "other"),
        (None, "other"),
    ],
)
def test_a_queued_jobs_reason_becomes_one_of_a_few_labels(reason: str | None, label: str) -> None:
    assert queue_reason(reason, retry_wait=False, cancelling=False) == label


def test_retry_backoff_and_cancelling_win_over_the_sentence() -> None:
    reason = "worker 1 exited with code 3; retry 1 of 2 in 1 s from the checkpoint"
    assert queue_reason(reason, retry_wait=True, cancelling=False) == "retry"
    assert queue_reason(why_waiting(2), retry_wait=True, cancelling=True) == "cancelling"


def test_a_failed_round_is_timed_and_counted_as_an_error(metric: Metric) -> None:
    metrics = ServerMetrics()
    with metrics.reconciler_round("jobs"):
        pass
    with pytest.raises(RuntimeError), metrics.reconciler_round("jobs"):
        raise RuntimeError("the database went away")
    text = metrics.render(NOTHING).decode()
    assert metric(text, 'nubis_reconciler_round_duration_seconds_count{reconciler="jobs"}') == 2
    assert metric(text, 'nubis_reconciler_round_errors_total{reconciler="jobs"}') == 1
    assert metric(text, 'nubis_reconciler_round_errors_total{reconciler="deployments"}') == 0


def test_gauges_follow_each_scrape_and_a_status_emptied_reads_zero(metric: Metric) -> None:
    metrics = ServerMetrics()
    metrics.render(PlatformCounts(queued={("ws", "capacity"): 3}, replicas={"ready": 2}, workers={}))
    text = metrics.render(PlatformCounts(
        queued={("ws", "quota"): 1}, replicas={"starting": 1}, workers={"running": 4})).decode()
    [queued] = [f for f in text_string_to_metric_families(text) if f.name == "nubis_jobs_queued"]
    assert [(s.labels, s.value) for s in queued.samples] == [({"workspace": "ws", "reason": "quota"}, 1)]
    assert metric(text, 'nubis_replicas{status="ready"}') == 0
    assert metric(text, 'nubis_replicas{status="starting"}') == 1
    assert metric(text, 'nubis_job_workers{status="running"}') == 4
    assert metric(text, 'nubis_job_workers{status="failed"}') == 0
    assert "_created" not in text
