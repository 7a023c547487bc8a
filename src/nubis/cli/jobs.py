"""``nubis job …``: batch commands run by gangs of workers (torch.distributed env injected)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated

import typer

from nubis.cli import render
from nubis.cli.options import node_selector
from nubis.cli.workdir import IGNORE_FILE, zip_workdir
from nubis.client.client import Client
from nubis.errors import BadRequestError
from nubis.models.jobs import Job
from nubis.models.requirements import parse_requirements
from nubis.models.resources import Resources
from nubis.models.storage import format_bytes

app = typer.Typer(help="Jobs: a command run by N workers started together, with retries and logs.",
                  no_args_is_help=True)

Ref = Annotated[str, typer.Argument(help="the job's name (its latest run) or id")]
Output = Annotated[str, typer.Option("--output", "-o", help=render.OUTPUT_HELP)]
COLUMNS = ["name", "status", "kind", "workers", "attempt", "model", "reason", "created_at"]
SHOWN_FILES = 5
REQUIREMENTS_FILE = "requirements.txt"


def upload_code(client: Client, folder: Path) -> str:
    """Zip ``folder`` (see ``cli/workdir.py`` for what is left out), say on stderr what goes, upload."""
    if not folder.is_dir():
        raise BadRequestError(f"--workdir {folder} is not a folder")
    archive = zip_workdir(folder)
    left_out = f"; {archive.ignored} left out by {IGNORE_FILE}" if archive.ignored else ""
    render.line(f"uploading {len(archive.files)} file(s) from {folder}: {format_bytes(archive.size)} "
                f"({format_bytes(len(archive.data))} zipped){left_out}", console=render.err)
    largest = sorted(archive.files, key=lambda f: -f[1])[:SHOWN_FILES]
    for rel, size in largest:
        render.line(f"  {format_bytes(size):>10}  {rel}", console=render.err)
    if len(archive.files) > len(largest):
        render.line(f"  … and {len(archive.files) - len(largest)} smaller file(s)", console=render.err)
    path = f".code/{hashlib.sha256(archive.data).hexdigest()[:24]}.zip"
    client.storage.put_bytes(path, archive.data)
    return path


def read_requirements(path: Path | None, workdir: Path | None) -> list[str]:
    """``--requirements FILE``, else the ``requirements.txt`` at the top of the uploaded folder
    (``workdir``; None when nothing is uploaded); said on stderr."""
    source = path if path is not None else workdir / REQUIREMENTS_FILE if workdir is not None else None
    if source is None or (path is None and not source.is_file()):
        return []
    try:
        requirements = parse_requirements(source.read_text(encoding="utf-8"), source=str(source))
    except (OSError, UnicodeDecodeError) as exc:
        raise BadRequestError(f"--requirements {source}: cannot read it ({exc})") from None
    except ValueError as exc:
        raise BadRequestError(str(exc)) from None
    if requirements:
        render.line(f"requirements from {source}: {', '.join(requirements)} (what the platform's "
                    "environment lacks is installed into a virtualenv for the job)", console=render.err)
    return requirements


def _env(pairs: list[str]) -> dict[str, str]:
    env = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise BadRequestError(f"--env {pair!r}: write KEY=VALUE")
        env[key] = value
    return env


@app.command("submit", context_settings={"allow_interspersed_args": False})
def submit(
    command: Annotated[list[str], typer.Argument(help="the command, after --")],
    name: Annotated[str | None, typer.Option(help="a name to find it by")] = None,
    workers: Annotated[int, typer.Option(help="processes started together (RANK 0..N-1)")] = 1,
    cpu: Annotated[float, typer.Option(help="CPU cores per worker")] = 1.0,
    memory: Annotated[str, typer.Option(help="memory per worker, e.g. 2Gi")] = "1Gi",
    gpu: Annotated[int, typer.Option(help="GPUs per worker")] = 0,
    max_retries: Annotated[int, typer.Option(help="restarts of the gang after a failure")] = 0,
    timeout: Annotated[float | None, typer.Option(help="seconds one attempt may run")] = None,
    priority: Annotated[int, typer.Option(help="higher is admitted first, and may preempt")] = 0,
    env: Annotated[list[str] | None, typer.Option("--env", help="KEY=VALUE, repeatable")] = None,
    secret: Annotated[list[str] | None, typer.Option("--secret", help="secret NAME, repeatable")] = None,
    workdir: Annotated[Path, typer.Option(help="folder uploaded as the workers' cwd")] = Path(),
    code: Annotated[bool, typer.Option("--code/--no-code", help="upload --workdir")] = True,
    requirements: Annotated[Path | None, typer.Option(
        help="pip requirements file (default: requirements.txt in --workdir); what the platform's "
             "environment lacks is installed into a virtualenv the workers' python runs in")] = None,
    spread: Annotated[bool, typer.Option("--spread", help="one worker per node (else packed)")] = False,
    node_label: Annotated[list[str] | None, typer.Option(
        "--node-label", help="KEY=VALUE a worker's node must have, repeatable")] = None,
    output: Output = "table",
) -> None:
    """Queue a job: nubis job submit --workers 2 -- python train.py --epochs 3"""
    render.check_output(output)
    selector = node_selector(node_label)
    wanted = read_requirements(requirements, workdir if code else None)
    with Client() as client:
        code_path = upload_code(client, workdir) if code else None
        job = client.jobs.submit(
            command, name=name, workers=workers, resources=Resources(cpu=cpu, memory=memory, gpu=gpu),
            env=_env(env or []), secrets=secret or [], code=code_path, max_retries=max_retries,
            timeout_s=timeout, priority=priority, requirements=wanted, spread=spread,
            node_selector=selector,
        )
    if output == "json":
        render.as_json(job.model_dump(mode="json"))
        return
    render.success(f"queued job {job.name} ({job.id}): {job.reason or job.status}")
    render.line(f"  follow it: nubis job get {job.name} ; nubis job logs {job.name} -f")


@app.command("list")
def list_jobs(
    status: Annotated[str | None, typer.Option(help="only jobs in this status")] = None,
    limit: Annotated[int, typer.Option(help="newest first, at most this many")] = 100,
    output: Output = "table",
) -> None:
    """Jobs of the workspace, newest first."""
    with Client() as client:
        jobs = client.jobs.list(status=status, limit=limit)
    if render.check_output(output) == "json":
        render.as_json([j.model_dump(mode="json") for j in jobs])
        return
    rows = [[j.name, render.status(j.status), j.kind, j.workers, j.attempt, j.model or "-",
             j.reason or "", render.cell(j.created_at)] for j in jobs]
    render.table("jobs", COLUMNS, rows)


def print_job(job: Job) -> None:
    render.line((job.name, "bold"), f" ({job.id})  ", render.status(job.status),
                f"  {job.kind}  attempt {job.attempt} of {job.max_retries + 1}")
    if job.reason:
        render.line(f"  reason: {job.reason}")
    render.line(f"  command: {' '.join(job.command)}")
    for w in job.worker_status:
        code = "" if w.exit_code is None else f" (exit {w.exit_code})"
        render.line(f"  worker {w.rank}: ", render.status(w.status), code)
    if job.metrics:
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in job.metrics.items() if not isinstance(v, dict | list))
        render.line(f"  metrics: {shown}")
    if job.model:
        render.line(f"  model: {job.model}")


@app.command("get")
def get(ref: Ref, output: Output = "table") -> None:
    """A job: status and why, workers, latest metrics, the model it registered."""
    with Client() as client:
        job = client.jobs.get(ref)
    if render.check_output(output) == "json":
        render.as_json(job.model_dump(mode="json"))
    else:
        print_job(job)


@app.command("logs")
def logs(
    ref: Ref,
    worker: Annotated[int, typer.Option(help="which worker (rank)")] = 0,
    tail: Annotated[int, typer.Option(help="lines")] = 100,
    attempt: Annotated[int | None, typer.Option(help="an earlier attempt (default: the current)")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing until the job ends")] = False,
) -> None:
    """One worker's output; with -f, as it is written until the job ends (through retries)."""
    with Client() as client:
        lines = (client.jobs.follow_logs(ref, worker=worker, tail=tail) if follow and attempt is None
                 else client.jobs.logs(ref, worker=worker, tail=tail, attempt=attempt))
        for line in lines:
            render.out.print(line, highlight=False, markup=False, soft_wrap=True)
            if follow:
                render.out.file.flush()


@app.command("events")
def events(ref: Ref, output: Output = "table") -> None:
    """What happened to the job: admissions, failures, retries, preemptions."""
    with Client() as client:
        items = client.jobs.events(ref)
    render.models("events", items, ["at", "kind", "message"], output)


@app.command("outputs")
def outputs(
    ref: Ref,
    get: Annotated[Path | None, typer.Option("--get", help="download them all into this folder")] = None,
    output: Output = "table",
) -> None:
    """What the job's workers left in NUBIS_OUTPUT_DIR (kept in storage when each attempt ended)."""
    render.check_output(output)
    with Client() as client:
        if get is not None:
            written = client.jobs.get_outputs(ref, get)
            if output == "json":
                render.as_json([str(p) for p in written])
            else:
                render.line(f"downloaded {len(written)} file(s) into {get}", console=render.err)
            return
        items = client.jobs.outputs(ref)
    if output == "json":
        render.as_json([i.model_dump(mode="json") for i in items])
        return
    if not items:
        render.line(f"job {ref} has no outputs (yet)")
        return
    render.table(f"outputs of {ref}", ["path", "size", "modified"],
                 [[i.path.split("/", 3)[-1], format_bytes(i.size), render.cell(i.modified)] for i in items])
    folder = "/".join(items[0].path.split("/", 3)[:3])  # .jobs/<job id>/outputs
    render.line(f"in storage under {folder}/; download them: nubis job outputs {ref} --get DEST")


@app.command("cancel")
def cancel(ref: Ref, output: Output = "table") -> None:
    """Stop the job's workers; it ends as cancelled."""
    with Client() as client:
        job = client.jobs.cancel(ref)
    if render.check_output(output) == "json":
        render.as_json(job.model_dump(mode="json"))
    else:
        render.success(f"cancelling job {job.name}")
