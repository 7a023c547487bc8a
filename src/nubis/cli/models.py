"""``nubis train`` and ``nubis model …``: train with the built-in trainer, then compress and deploy."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from nubis.cli import render
from nubis.cli.job_progress import JobProgress
from nubis.cli.options import node_selector
from nubis.client.client import Client
from nubis.errors import NubisError
from nubis.models.jobs import Job, JobStatus
from nubis.models.models import ModelVersion
from nubis.models.resources import Resources

app = typer.Typer(help="The model registry: versions, int8 quantization, ONNX export, deploy.",
                  no_args_is_help=True)

Ref = Annotated[str, typer.Argument(help="NAME:VERSION (or NAME for the latest)")]
Output = Annotated[str, typer.Option("--output", "-o", help=render.OUTPUT_HELP)]


class JobFailedError(NubisError):
    code = "job_failed"
    http_status = 500


def wait_with_progress(client: Client, job: Job, *, quiet: bool, label: str) -> Job:
    """Follow a job to its end, showing each change from the first second: a live progress bar over
    its epochs on a terminal, plain lines (``queued (…)``, ``starting 2 workers``, ``epoch 3/10 …``)
    when stdout is a pipe or a CI log; nothing when ``quiet``."""
    if quiet:
        done = client.jobs.wait(job.id)
    elif render.out.is_terminal and render.err.is_terminal:
        done = _follow_live(client, job, label=label)
    else:
        done = _follow_plain(client, job)
    if done.status != JobStatus.succeeded:
        raise JobFailedError(f"job {done.name} {done.status}: {done.reason or 'no reason given'} "
                             f"(see `nubis job logs {done.name}`)")
    return done


def _follow_plain(client: Client, job: Job) -> Job:
    progress = JobProgress()

    def update(current: Job) -> None:
        for line in progress.update(current):
            render.line(line)
        render.out.file.flush()  # each line as it happens, also through a pipe

    update(job)
    return client.jobs.wait(job.id, on_update=update)


def _follow_live(client: Client, job: Job, *, label: str) -> Job:
    """A progress bar on stderr: the job's state, then its epochs and latest metrics."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[info]}"))
    progress = JobProgress()
    with Progress(*columns, console=render.err, transient=False) as bar:
        task = bar.add_task(render.escape_text(label), total=None, info="")

        def update(current: Job) -> None:
            progress.update(current)
            m = current.metrics
            if isinstance(m.get("epoch"), int):
                bar.update(task, total=m.get("epochs"), completed=m["epoch"])
            bar.update(task, info=render.escape_text(progress.latest[:100]))

        update(job)
        return client.jobs.wait(job.id, on_update=update)


def train(
    model: Annotated[str, typer.Option(help="logreg, mlp or cnn")],
    data: Annotated[str, typer.Option(help="builtin:digits|iris|wine|breast_cancer, or CSV/NPZ in storage")],
    epochs: Annotated[int, typer.Option(help="passes over the data")] = 10,
    workers: Annotated[int, typer.Option(help="DDP workers")] = 1,
    name: Annotated[str | None, typer.Option(help="the model's registry name (default DATA-MODEL)")] = None,
    batch_size: Annotated[int, typer.Option(help="per worker")] = 64,
    lr: Annotated[float | None, typer.Option(help="learning rate (default: the model's)")] = None,
    amp: Annotated[bool, typer.Option("--amp", help="mixed precision")] = False,
    label_column: Annotated[str, typer.Option(help="the CSV's label column")] = "label",
    cpu: Annotated[float, typer.Option(help="CPU cores per worker")] = 1.0,
    memory: Annotated[str, typer.Option(help="memory per worker")] = "1Gi",
    max_retries: Annotated[int, typer.Option(help="restarts from the checkpoint after a failure")] = 2,
    spread: Annotated[bool, typer.Option("--spread", help="one worker per node (else packed)")] = False,
    node_label: Annotated[list[str] | None, typer.Option(
        "--node-label", help="KEY=VALUE a worker's node must have, repeatable")] = None,
    wait: Annotated[bool, typer.Option(help="follow it to the end")] = True,
    output: Output = "table",
) -> None:
    """Train a model as a job (live progress), evaluate it, register it as a model version."""
    render.check_output(output)
    selector = node_selector(node_label)
    with Client() as client:
        job = client.jobs.train(model, data, epochs=epochs, workers=workers, name=name, batch_size=batch_size,
                                learning_rate=lr, amp=amp, label_column=label_column,
                                resources=Resources(cpu=cpu, memory=memory), max_retries=max_retries,
                                spread=spread, node_selector=selector)
        if output != "json":
            render.line(f"training job {job.name} ({job.id}): {workers} worker(s)")
        if wait:
            job = wait_with_progress(client, job, quiet=output == "json", label=f"{model} on {data}")
    if output == "json":
        render.as_json(job.model_dump(mode="json"))
        return
    if wait:
        accuracy = job.metrics.get("accuracy")
        shown = f"{accuracy:.4f}" if isinstance(accuracy, float) else "-"
        render.success(f"held-out accuracy {shown}; registered model {job.model}")
        render.line(f"  next: nubis model quantize {job.model} ; nubis model deploy {job.model} "
                    f"--name {job.model.split(':')[0] if job.model else 'NAME'}")


@app.command("list")
def list_models(output: Output = "table") -> None:
    """Models and their versions."""
    with Client() as client:
        models = client.models.list()
    if render.check_output(output) == "json":
        render.as_json([m.model_dump(mode="json") for m in models])
        return
    rows = [[v.ref, v.format, v.arch or "-", _accuracy(v),
             f"{v.size_bytes:,}", (v.lineage or {}).get("parent") or "-", render.cell(v.created_at)]
            for m in models for v in m.versions]
    render.table("models", ["ref", "format", "arch", "accuracy", "bytes", "parent", "created_at"], rows)


def _accuracy(v: ModelVersion) -> str:
    accuracy = v.metrics.get("accuracy")
    return f"{accuracy:.4f}" if isinstance(accuracy, float) else "-"


def print_version(v: ModelVersion) -> None:
    render.line((v.ref, "bold"), f"  {v.format}  {v.arch or ''}  {v.size_bytes:,} bytes  at {v.path}")
    m = v.metrics
    render.out.print("  " + "  ".join(f"{k} {m[k]:.4g}" for k in ("accuracy", "f1_macro", "latency_ms_b1",
                                                                    "latency_ms_b64") if k in m),
                     highlight=False)
    lineage = v.lineage or {}
    render.line(f"  lineage: job {lineage.get('job_name')}, data {lineage.get('dataset')}, "
                f"parent {lineage.get('parent') or '-'}")
    c = v.comparison
    if c:
        parent = c.get("parent") or {}
        render.out.print(
            f"  vs parent: {c.get('size_ratio', 0):.2f}x smaller, accuracy {m.get('accuracy', 0):.4f} vs "
            f"{parent.get('accuracy', 0):.4f} ({c.get('accuracy_delta', 0):+.4f}), latency b1 "
            f"{m.get('latency_ms_b1', 0):.3f} vs {parent.get('latency_ms_b1', 0):.3f} ms, b64 "
            f"{m.get('latency_ms_b64', 0):.3f} vs {parent.get('latency_ms_b64', 0):.3f} ms",
            highlight=False,
        )


@app.command("get")
def get(ref: Ref, output: Output = "table") -> None:
    """One version: metrics, files, lineage, comparison with its parent."""
    with Client() as client:
        version = client.models.get(ref)
    if render.check_output(output) == "json":
        render.as_json(version.model_dump(mode="json"))
    else:
        print_version(version)


def _derive(ref: str, kind: str, output: str) -> None:
    render.check_output(output)
    with Client() as client:
        job = client.models.quantize(ref) if kind == "quantize" else client.models.export(ref)
        if output != "json":
            render.line(f"{kind} job {job.name} for {ref}")
        job = wait_with_progress(client, job, quiet=output == "json", label=f"{kind} {ref}")
        version = client.models.get(job.model or "")
    if output == "json":
        render.as_json(version.model_dump(mode="json"))
    else:
        print_version(version)


@app.command("quantize")
def quantize(ref: Ref, output: Output = "table") -> None:
    """Dynamic int8 quantization → the next version, compared with its parent."""
    _derive(ref, "quantize", output)


@app.command("export")
def export(
    ref: Ref,
    onnx: Annotated[bool, typer.Option("--onnx", help="ONNX, served with onnxruntime")] = True,
    output: Output = "table",
) -> None:
    """Export to ONNX → the next version, compared with its parent."""
    _derive(ref, "export", output)


@app.command("deploy")
def deploy(
    ref: Ref,
    name: Annotated[str, typer.Option(help="the deployment's name")],
    min_replicas: Annotated[int, typer.Option("--min", help="replicas to keep at least")] = 1,
    max_replicas: Annotated[int | None, typer.Option("--max", help="at most (default: --min)")] = None,
    cpu: Annotated[float | None, typer.Option(help="CPU cores per replica (default 1)")] = None,
    memory: Annotated[str | None, typer.Option(help="memory per replica, e.g. 512Mi (default 1Gi)")] = None,
    gpu: Annotated[int | None, typer.Option(help="GPUs per replica (default 0)")] = None,
    public: Annotated[bool, typer.Option("--public", help="callable without a token")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for ready")] = 300,
    output: Output = "table",
) -> None:
    """Serve a version behind the gateway: POST /<workspace>/<name>/predict {"inputs": [[...]]}."""
    render.check_output(output)
    given = {"cpu": cpu, "memory": memory, "gpu": gpu}
    resources = {k: v for k, v in given.items() if v is not None} or None  # unset: 1 CPU, 1Gi, 0 GPU
    with Client() as client:
        deployment = client.models.deploy(ref, name, min_replicas=min_replicas,
                                          max_replicas=max_replicas or max(min_replicas, 1),
                                          access="public" if public else "private", resources=resources)
        if min_replicas > 0:
            deployment = client.deployments.wait_ready(name, timeout=timeout)
    if output == "json":
        render.as_json(deployment.model_dump(mode="json"))
        return
    render.success(f"{ref} serves at {deployment.endpoint}/predict ({deployment.status})")
    render.out.print(f"  curl -H \"Authorization: Bearer $NUBIS_TOKEN\" {deployment.endpoint}/predict "
                     "-d '{\"inputs\": [[...one row of features...]]}'", highlight=False, markup=False)


@app.command("delete")
def delete(ref: Ref) -> None:
    """Delete one version and its files (its number is never given again)."""
    with Client() as client:
        client.models.delete(ref)
    render.success(f"deleted {ref}")
