"""The plain progress lines of `nubis train`: one per change of the job, none repeated, none skipped."""

from __future__ import annotations

from typing import Any

from nubis.cli.job_progress import JobProgress, epoch_line
from nubis.models.jobs import Job

WAITING = "waiting for capacity: needs 2 CPU; free 1 CPU"


def job(status: str, *, reason: str | None = None, attempt: int = 0, epochs: int = 0,
        of: int = 3, **extra: Any) -> Job:
    history = [{"epoch": e, "epochs": of, "loss": 1.0 / e, "accuracy": 0.5 + e / 10, "val_accuracy": None,
                "samples_per_s": 1234.5} for e in range(1, epochs + 1)]
    return Job(id="j1", name="digits-mlp", status=status, reason=reason, workers=2, attempt=attempt,
               history=history, metrics=history[-1] if history else {}, **extra)


def shown(*polls: Job) -> list[str]:
    progress = JobProgress()
    return [line for poll in polls for line in progress.update(poll)]


def test_each_state_once_in_order() -> None:
    assert shown(
        job("queued"), job("queued"), job("queued", reason=WAITING), job("queued", reason=WAITING),
        job("running", attempt=1), job("running", attempt=1),
        job("running", attempt=1, epochs=1), job("running", attempt=1, epochs=2),
        job("running", attempt=1, epochs=2), job("running", attempt=1, epochs=3),
        job("succeeded", reason="registered digits-mlp:1", attempt=1, epochs=3),
    ) == [
        "queued",
        f"queued ({WAITING})",
        "starting 2 workers",
        "epoch 1/3 loss=1 accuracy=0.6",
        "epoch 2/3 loss=0.5 accuracy=0.7",
        "epoch 3/3 loss=0.3333 accuracy=0.8",
        "succeeded: registered digits-mlp:1",
    ]


def test_steps_passed_between_two_polls_are_still_shown() -> None:
    assert shown(job("queued"), job("succeeded", attempt=1, epochs=3)) == [
        "queued", "starting 2 workers", "epoch 1/3 loss=1 accuracy=0.6", "epoch 2/3 loss=0.5 accuracy=0.7",
        "epoch 3/3 loss=0.3333 accuracy=0.8", "succeeded",
    ]


def test_a_retry_waits_again_then_starts_its_next_attempt() -> None:
    retry = "retrying after worker 1 exited with code 1"
    lines = shown(job("running", attempt=1, epochs=1), job("stopping", reason="worker 1 failed", attempt=1,
                                                                epochs=1),
                  job("queued", reason=retry, attempt=1, epochs=1), job("running", attempt=2, epochs=1),
                  job("failed", reason="worker 0 exited with code 1", attempt=2, epochs=1))
    assert lines == ["starting 2 workers", "epoch 1/3 loss=1 accuracy=0.6", "stopping (worker 1 failed)",
                     f"queued ({retry})", "starting 2 workers (attempt 2)",
                     "failed: worker 0 exited with code 1"]


def test_the_latest_line_is_what_a_live_bar_shows() -> None:
    progress = JobProgress()
    progress.update(job("queued", reason=WAITING))
    assert progress.latest == f"queued ({WAITING})"
    progress.update(job("running", attempt=1, epochs=2))
    assert progress.latest == "epoch 2/3 loss=0.5 accuracy=0.7"


def test_epoch_lines_show_what_a_report_holds() -> None:
    assert epoch_line({"epoch": 4}) == "epoch 4"
    assert epoch_line({"epoch": 4, "epochs": 10, "loss": 0.41234, "val_accuracy": 0.9}) == (
        "epoch 4/10 loss=0.4123 val_accuracy=0.9")
    assert epoch_line({"epoch": 1, "epochs": 2, "loss": True, "accuracy": "high"}) == "epoch 1/2"
