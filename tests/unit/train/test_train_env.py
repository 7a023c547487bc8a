"""The worker env contract and metric reports."""

from __future__ import annotations

import io
import json

import httpx
import pytest

from nubis.train.distributed import EnvError, WorkerEnv, cpu_threads
from nubis.train.reporting import MetricReporter, metrics_url

DIST = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


def test_no_world_size_means_one_plain_process() -> None:
    assert WorkerEnv.from_env({"RANK": "3"}) == WorkerEnv(rank=0, world_size=1, distributed=False)


def test_torchrun_env() -> None:
    worker = WorkerEnv.from_env({**DIST, "WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"})
    assert (worker.rank, worker.local_rank, worker.world_size, worker.distributed) == (2, 0, 4, True)
    assert not worker.is_main


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({**DIST, "WORLD_SIZE": "2", "RANK": "2"}, "RANK 2 does not fit WORLD_SIZE 2"),
        ({**DIST, "WORLD_SIZE": "two"}, "must be integers"),
        ({"WORLD_SIZE": "2", "RANK": "0"}, "MASTER_ADDR and MASTER_PORT is not"),
    ],
)
def test_inconsistent_env_is_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(EnvError, match=message):
        WorkerEnv.from_env(env)


def test_threads_follow_omp_num_threads() -> None:
    assert cpu_threads({}) == 1
    assert cpu_threads({"OMP_NUM_THREADS": "3"}) == 3
    assert cpu_threads({"OMP_NUM_THREADS": "x"}) == 1


def test_metrics_url_needs_all_three() -> None:
    env = {"NUBIS_API_URL": "http://cp:8000/", "NUBIS_JOB_ID": "j1", "NUBIS_JOB_TOKEN": "t"}
    assert metrics_url(env) == ("http://cp:8000/api/v1/jobs/j1/metrics", "t")
    assert metrics_url({**env, "NUBIS_JOB_TOKEN": ""}) is None


def test_report_prints_then_posts_with_the_token() -> None:
    seen: list[httpx.Request] = []
    transport = httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(204))
    out = io.StringIO()
    env = {"NUBIS_API_URL": "http://cp", "NUBIS_JOB_ID": "j1", "NUBIS_JOB_TOKEN": "tok"}
    reporter = MetricReporter(env, out=out, transport=transport)
    assert reporter.report({"epoch": 1, "loss": 0.5})
    assert out.getvalue() == 'nubis-metric {"epoch":1,"loss":0.5}\n'
    assert seen[0].headers["authorization"] == "Bearer tok"
    assert json.loads(seen[0].content) == {"epoch": 1, "loss": 0.5}


def test_a_failed_report_is_a_warning_only() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(503))
    out, err = io.StringIO(), io.StringIO()
    env = {"NUBIS_API_URL": "http://cp", "NUBIS_JOB_ID": "j1", "NUBIS_JOB_TOKEN": "tok"}
    reporter = MetricReporter(env, out=out, err=err, transport=transport)
    assert not reporter.report({"epoch": 1})
    assert out.getvalue().startswith("nubis-metric ")
    url = "http://cp/api/v1/jobs/j1/metrics"
    assert err.getvalue() == f"warning: could not report metrics to {url}: HTTP 503\n"
