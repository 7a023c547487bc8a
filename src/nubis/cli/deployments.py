"""``nubis deploy`` and ``nubis deployment …``: photons served behind the gateway."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from nubis.cli import render
from nubis.cli.options import node_selector
from nubis.client.client import Client
from nubis.errors import BadRequestError
from nubis.models.deployments import Deployment
from nubis.photon.loader import split_target

app = typer.Typer(help="Deployments: photons served behind the gateway, scaled and updated in place.",
                  no_args_is_help=True)

Name = Annotated[str, typer.Argument(help="the deployment's name")]
Output = Annotated[str, typer.Option("--output", "-o", help=render.OUTPUT_HELP)]


def deploy(
    target: Annotated[str, typer.Argument(help="a photon folder or file (pushed first), or NAME[:VERSION]")],
    name: Annotated[str | None, typer.Option(help="the deployment's name (default: the photon's)")] = None,
    min_replicas: Annotated[int, typer.Option("--min", help="replicas to keep at least")] = 1,
    max_replicas: Annotated[int | None, typer.Option("--max", help="at most (default: --min)")] = None,
    public: Annotated[bool, typer.Option("--public", help="callable without a token")] = False,
    env: Annotated[list[str] | None, typer.Option("--env", help="K=V, repeatable")] = None,
    secret: Annotated[list[str] | None, typer.Option("--secret", help="secret NAME, repeatable")] = None,
    cpu: Annotated[float | None, typer.Option(help="CPU cores per replica")] = None,
    memory: Annotated[str | None, typer.Option(help="memory per replica, e.g. 2Gi")] = None,
    gpu: Annotated[int | None, typer.Option(help="GPUs per replica")] = None,
    node_label: Annotated[list[str] | None, typer.Option(
        "--node-label", help="KEY=VALUE a replica's node must have, repeatable")] = None,
    wait: Annotated[bool, typer.Option(help="wait until ready")] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait for ready")] = 300,
    output: Output = "table",
) -> None:
    """Deploy a photon: push it if TARGET is a path, then wait until its replicas are ready."""
    render.check_output(output)
    selector = node_selector(node_label)
    with Client() as client:
        ref = _photon_ref(client, target)
        deployment = client.deployments.create(
            name or ref.partition(":")[0], ref,
            min_replicas=min_replicas,
            max_replicas=max_replicas if max_replicas is not None else max(min_replicas, 1),
            resources=_resources(cpu, memory, gpu),
            env=_env(env or []),
            secrets=secret or [],
            access="public" if public else "private",
            node_selector=selector,
        )
        if output != "json":
            render.line(f"deploying {deployment.name} ({deployment.photon})")
        if wait:
            deployment = _wait(client, deployment.name, timeout, quiet=output == "json")
        manifest = client.photons.get(*deployment.photon.split(":", 1)).manifest if output != "json" else None
    if output == "json":
        render.as_json(deployment.model_dump(mode="json"))
        return
    verb = "ready" if wait else "created"
    render.success(f"{deployment.name} {verb} ({deployment.photon}) at {deployment.endpoint}")
    if manifest is not None and manifest.handlers:
        handler = manifest.handlers[0]
        auth = "" if public else '-H "Authorization: Bearer $NUBIS_TOKEN" '
        render.out.print(f"curl {auth}{deployment.endpoint}{handler.path} -d '{_example(handler)}'",
                         highlight=False, soft_wrap=True, markup=False)


def _photon_ref(client: Client, target: str) -> str:
    path, _ = split_target(target)
    if not Path(path).exists():
        return target
    pushed = client.photons.push(target)
    render.line(f"pushed {pushed.ref}" + (" (unchanged)" if pushed.unchanged else ""), console=render.err)
    return pushed.ref


def _env(pairs: list[str]) -> dict[str, str]:
    found = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BadRequestError(f"--env takes KEY=VALUE, not {pair!r}")
        found[key] = value
    return found


def _resources(cpu: float | None, memory: str | None, gpu: int | None) -> dict[str, Any] | None:
    given = {"cpu": cpu, "memory": memory, "gpu": gpu}
    given = {k: v for k, v in given.items() if v is not None}
    return given or None


def _example(handler: Any) -> str:
    names = list(handler.request_schema.get("properties", {}))[:2]
    return "{" + ", ".join(f'"{n}": …' for n in names) + "}"


def _wait(client: Client, name: str, timeout: float, *, quiet: bool) -> Deployment:
    """Wait until ready, printing each change of status, ready count or reason on stderr."""
    return client.deployments.wait_ready(name, timeout=timeout, on_change=None if quiet else _progress)


@app.command("list")
def list_(output: Output = "table") -> None:
    """Deployments in the workspace."""
    with Client() as client:
        deployments = client.deployments.list()
    if render.check_output(output) == "json":
        render.as_json([d.model_dump(mode="json") for d in deployments])
        return
    _table(deployments)


@app.command("get")
def get(name: Name, output: Output = "table") -> None:
    """One deployment and its replicas; ``--output json`` for scripts."""
    with Client() as client:
        deployment = client.deployments.get(name)
    if render.check_output(output) == "json":
        render.as_json(deployment.model_dump(mode="json"))
        return
    _detail(deployment)


@app.command("events")
def events(
    name: Name,
    limit: Annotated[int, typer.Option(help="how many, latest")] = 100,
    output: Output = "table",
) -> None:
    """What happened to the deployment and its replicas, oldest first."""
    render.check_output(output)
    with Client() as client:
        found = client.deployments.events(name, limit=limit)
    if output == "json":
        render.as_json([e.model_dump(mode="json") for e in found])
        return
    render.table(f"events of {name}", ["at", "kind", "replica", "message"], [
        [f"{e.at:%Y-%m-%d %H:%M:%S}", e.kind, (e.replica or "-")[:8], e.message] for e in found
    ])


@app.command("metrics")
def metrics(
    name: Name,
    since: Annotated[str, typer.Option(help="how far back: 15m, 1h, 24h at most")] = "1h",
    step: Annotated[str | None, typer.Option(help="point width, 10s or more (default: ~120 points)")] = None,
    output: Output = "table",
) -> None:
    """Traffic through the gateway: requests/s, 5xx/s and rate, p50/p95 latency per step."""
    render.check_output(output)
    with Client() as client:
        history = client.deployments.metrics(name, since=since, step=step)
    if output == "json":
        render.as_json(history.model_dump(mode="json"))
        return
    render.table(f"traffic of {name} (steps of {history.step_s:g} s)",
                 ["at", "req/s", "5xx/s", "5xx %", "p50 ms", "p95 ms"],
                 [[f"{p.at:%H:%M:%S}", f"{p.requests_per_s:.2f}", f"{p.errors_per_s:.2f}",
                   _maybe(p.error_rate, 100), _maybe(p.p50_ms), _maybe(p.p95_ms)]
                  for p in history.points if p.requests_per_s])


def _maybe(value: float | None, scale: float = 1.0) -> str:
    return "-" if value is None else f"{scale * value:.1f}"


@app.command("logs")
def logs(
    name: Name,
    tail: Annotated[int, typer.Option(help="lines per replica")] = 100,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new lines")] = False,
) -> None:
    """The replicas' output, each line prefixed by its replica id; -f streams new lines (Ctrl-C)."""
    with Client() as client:
        lines = client.deployments.follow_logs(name, tail=tail) if follow else client.deployments.logs(
            name, tail=tail)
        for line in lines:
            render.out.print(line, highlight=False, markup=False, soft_wrap=True)
            if follow:
                render.out.file.flush()  # `logs -f | grep …`: each line as it comes


@app.command("update")
def update(
    name: Name,
    photon: Annotated[str | None, typer.Option(help="NAME:VERSION to roll out")] = None,
    cpu: Annotated[float | None, typer.Option(help="CPU cores per replica")] = None,
    memory: Annotated[str | None, typer.Option(help="memory per replica, e.g. 2Gi")] = None,
    gpu: Annotated[int | None, typer.Option(help="GPUs per replica")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", help="set K=V, repeatable")] = None,
    unset_env: Annotated[list[str] | None, typer.Option("--unset-env", help="remove K")] = None,
    secret: Annotated[list[str] | None, typer.Option("--secret", help="add a secret")] = None,
    unset_secret: Annotated[list[str] | None, typer.Option("--unset-secret", help="remove one")] = None,
    min_replicas: Annotated[int | None, typer.Option("--min", help="replicas to keep at least")] = None,
    max_replicas: Annotated[int | None, typer.Option("--max", help="replicas at most")] = None,
    output: Output = "table",
) -> None:
    """Change a deployment. A new photon, resources, env or secrets roll out one replica at a time
    (rolled back if the new replicas keep crashing); --min/--max rescale at once."""
    render.check_output(output)
    with Client() as client:
        current = client.deployments.get(name)
        body: dict[str, Any] = {"photon": photon}
        if cpu is not None or memory is not None or gpu is not None:
            base = current.resources or client.photons.get(*current.photon.split(":", 1)).manifest.resources
            body["resources"] = {**base.model_dump(mode="json"), **(_resources(cpu, memory, gpu) or {})}
        if env or unset_env:
            kept = {k: v for k, v in current.env.items() if k not in (unset_env or [])}
            body["env"] = {**kept, **_env(env or [])}
        if secret or unset_secret:
            kept_secrets = [s for s in current.secrets if s not in (unset_secret or [])]
            body["secrets"] = kept_secrets + [s for s in secret or [] if s not in kept_secrets]
        if min_replicas is not None or max_replicas is not None:
            body["min_replicas"], body["max_replicas"] = _bounds(current, min_replicas, max_replicas)
        if not any(v is not None for v in body.values()):
            raise BadRequestError("nothing to change: give --photon, --cpu, --memory, --gpu, --env, "
                                  "--unset-env, --secret, --unset-secret, --min or --max")
        deployment = client.deployments.update(name, **body)
    if output == "json":
        render.as_json(deployment.model_dump(mode="json"))
    elif {"photon", "resources", "env", "secrets"} & {k for k, v in body.items() if v is not None}:
        render.success(f"rolling out {deployment.photon} to {name}; watch `nubis deployment get {name}`")
    else:
        render.success(f"{name}: {deployment.min_replicas}..{deployment.max_replicas} replicas")


@app.command("scale")
def scale(
    name: Name,
    min_replicas: Annotated[int | None, typer.Option("--min", help="replicas to keep at least")] = None,
    max_replicas: Annotated[int | None, typer.Option("--max", help="replicas at most")] = None,
) -> None:
    """Change the replica bounds."""
    if min_replicas is None and max_replicas is None:
        raise BadRequestError("give --min, --max or both")
    with Client() as client:
        low, high = _bounds(client.deployments.get(name), min_replicas, max_replicas)
        deployment = client.deployments.update(name, min_replicas=low, max_replicas=high)
    render.success(f"{name}: {deployment.min_replicas}..{deployment.max_replicas} replicas")


def _bounds(current: Deployment, low: int | None, high: int | None) -> tuple[int | None, int | None]:
    """Raising --min above the current --max raises --max with it (and the reverse)."""
    if low is not None and high is None and low > current.max_replicas:
        high = low
    if high is not None and low is None and high < current.min_replicas:
        low = high
    return low, high


@app.command("delete")
def delete(name: Name, yes: Annotated[bool, typer.Option("--yes", help="do not ask")] = False) -> None:
    """Stop every replica and remove the deployment."""
    if not yes:
        typer.confirm(f"delete deployment {name!r} and stop its replicas?", abort=True)
    with Client() as client:
        client.deployments.delete(name)
    render.success(f"deleted {name}; its replicas are stopping")


def _table(deployments: list[Deployment]) -> None:
    t = Table(title="deployments", title_justify="left")
    for column in ("name", "photon", "status", "ready", "access"):
        t.add_column(column)
    t.add_column("endpoint", overflow="fold")
    for d in deployments:
        t.add_row(*map(render.text, (d.name, d.photon, render.status(d.status),
                                     f"{d.ready_replicas}/{d.target_replicas}", d.access, d.endpoint or "-")))
    render.out.print(t)


def _detail(d: Deployment) -> None:
    ready = f"{d.ready_replicas}/{d.target_replicas} ready ({d.min_replicas}..{d.max_replicas})"
    render.line((d.name, "bold"), f"  {d.photon} · ", render.status(d.status), f" · {ready} · {d.access}")
    if d.reason:
        render.out.print(f"reason: {d.reason}", highlight=False, markup=False)
    render.out.print(f"endpoint: {d.endpoint or '-'}", highlight=False, markup=False)
    t = Table(title="replicas", title_justify="left")
    for column in ("id", "status", "photon", "restarts", "endpoint", "reason"):
        t.add_column(column)
    for r in d.replicas:
        t.add_row(*map(render.text, (r.id[:8], render.status(r.status), r.photon or "-", r.restarts,
                                     r.endpoint or "-", r.reason or "-")))
    render.out.print(t)


def _progress(d: Deployment) -> None:
    """One line on stderr while ``nubis deploy`` waits: ``pending: waiting for resources: … · 0/1 ready``."""
    reason = d.reason or next((r.reason for r in d.replicas if r.reason), None)
    render.line("  ", render.status(d.status), f": {reason}" if reason else "",
                f" · {d.ready_replicas}/{d.target_replicas} ready", console=render.err)
