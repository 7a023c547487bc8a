"""``nubis alert …``: current alerts, rules and thresholds, silences, the workspace's webhook, a test
notification and the delivery log (see docs/alerts.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from nubis.cli import render
from nubis.client.client import Client
from nubis.errors import BadRequestError
from nubis.models.alerts import AlertRule, WebhookFormat

app = typer.Typer(help="Alerts: rules evaluated by the platform, notified to a signed webhook.",
                  no_args_is_help=True)
webhook_app = typer.Typer(help="The workspace's webhook (admins): set, show, delete.", no_args_is_help=True)
rules_app = typer.Typer(help="Rules and their thresholds; `set` overrides them for this workspace (admins).",
                        invoke_without_command=True)
app.add_typer(webhook_app, name="webhook")
app.add_typer(rules_app, name="rules")
Output = Annotated[str, typer.Option("--output", "-o", help=render.OUTPUT_HELP)]


@app.command("list")
def list_(state: Annotated[str | None, typer.Option(help="pending, firing or resolved")] = None,
          output: Output = "table") -> None:
    """Current alerts: firing, pending, and those resolved in the last day."""
    with Client() as client:
        alerts = client.alerts.list(state)
    if render.check_output(output) == "json":
        render.as_json([a.model_dump(mode="json") for a in alerts])
        return
    rows = [[a.rule, a.object, render.status(a.state), render.cell(a.since),
             "yes" if a.silenced else "", a.summary] for a in alerts]
    render.table("alerts", ["rule", "object", "state", "since", "silenced", "summary"], rows)


@rules_app.callback()
def rules(ctx: typer.Context, output: Output = "table") -> None:
    """Every rule with its effective settings (durations in seconds; * marks this workspace's own)."""
    if ctx.invoked_subcommand is not None:
        return
    with Client() as client:
        found = client.alerts.rules()
    if render.check_output(output) == "json":
        render.as_json([r.model_dump(mode="json") for r in found])
        return
    rows = [[r.name, ", ".join(f"{k}={_value(v)}{'*' if k in r.overridden else ''}"
                               for k, v in r.settings.items()), r.description] for r in found]
    render.table("alert rules", ["rule", "settings", "fires when"], rows, keep=("rule",))


def _value(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def _pairs(pairs: list[str]) -> dict[str, str]:
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise BadRequestError(f"cannot read {pair!r}: write key=value, e.g. rate=0.1 or for=2m")
        settings[key.strip()] = value.strip()
    return settings


@rules_app.command("set")
def rules_set(rule: str, pairs: Annotated[list[str], typer.Argument(help="key=value, e.g. rate=0.1 for=2m")],
              output: Output = "table") -> None:
    """Override a rule's settings for this workspace, e.g. `nubis alert rules set error_rate rate=0.1`."""
    with Client() as client:
        updated = client.alerts.set_rule(rule, settings=_pairs(pairs))
    _print_rule(updated, output)


@rules_app.command("reset")
def rules_reset(rule: str, keys: Annotated[list[str], typer.Argument(help="the settings to put back")],
                output: Output = "table") -> None:
    """Put settings of a rule back to nubis's defaults."""
    with Client() as client:
        updated = client.alerts.set_rule(rule, reset=keys)
    _print_rule(updated, output)


def _print_rule(rule: AlertRule, output: str) -> None:
    if render.check_output(output) == "json":
        render.as_json(rule.model_dump(mode="json"))
        return
    render.success(f"{rule.name}: " + ", ".join(f"{k}={_value(v)}" for k, v in rule.settings.items()))


@app.command("silence")
def silence(
    args: Annotated[list[str] | None, typer.Argument(
        help="RULE to silence (omit with --object for every rule), or `list`, or `delete ID`")] = None,
    object_: Annotated[str | None, typer.Option("--object", help="only this deployment, job, node …")] = None,
    for_: Annotated[str | None, typer.Option("--for", help="how long, e.g. 30m, 2h, 7d")] = None,
    comment: Annotated[str, typer.Option(help="why (shown in the list)")] = "",
    output: Output = "table",
) -> None:
    """`nubis alert silence RULE [--object NAME] --for 2h`, `nubis alert silence list`,
    `nubis alert silence delete ID`. A silenced alert is still listed, but not notified."""
    args = args or []
    with Client() as client:
        if args[:1] == ["list"]:
            found = client.alerts.silences()
            if render.check_output(output) == "json":
                render.as_json([s.model_dump(mode="json") for s in found])
                return
            rows = [[s.id, s.rule or "*", s.object or "*", render.cell(s.until),
                     "yes" if s.active else "ended", s.created_by, s.comment] for s in found]
            render.table("silences", ["id", "rule", "object", "until", "active", "by", "comment"], rows,
                         keep=("id",))
            return
        if args[:1] == ["delete"]:
            if len(args) != 2:
                raise BadRequestError("usage: nubis alert silence delete ID (see nubis alert silence list)")
            client.alerts.delete_silence(args[1])
            render.success(f"deleted silence {args[1]}")
            return
        if len(args) > 1 or for_ is None:
            raise BadRequestError("usage: nubis alert silence RULE [--object NAME] --for 2h [--comment TEXT]")
        made = client.alerts.silence(args[0] if args else None, object=object_, duration=for_,
                                     comment=comment)
    if render.check_output(output) == "json":
        render.as_json(made.model_dump(mode="json"))
        return
    render.success(f"silenced {made.rule or 'every rule'} on {made.object or 'every object'} until "
                   f"{render.cell(made.until)} UTC (id {made.id})")


@webhook_app.command("set")
def webhook_set(
    url: Annotated[str, typer.Argument(help="http(s) URL; stored encrypted, never shown again")],
    format_: Annotated[WebhookFormat, typer.Option("--format", help="json (nubis's envelope) or slack")] = (
        WebhookFormat.json),
) -> None:
    """Set the workspace's webhook; prints the signing secret once (verify X-Nubis-Signature with it)."""
    with Client() as client:
        created = client.alerts.set_webhook(url, format=format_)
    render.success(f"webhook set: {created.target} ({created.format.value})")
    render.line("signing secret (shown once): ", (created.signing_secret, "bold"))


@webhook_app.command("show")
def webhook_show(output: Output = "table") -> None:
    """The webhook's format and host (its URL and secret are never shown)."""
    with Client() as client:
        render.model(client.alerts.webhook(), output)


@webhook_app.command("delete")
def webhook_delete() -> None:
    with Client() as client:
        client.alerts.delete_webhook()
    render.success("webhook deleted: alerts are no longer notified")


@app.command("test")
def test(output: Output = "table") -> None:
    """Send a signed test notification to the webhook and say how it went."""
    with Client() as client:
        result = client.alerts.test()
    if render.check_output(output) == "json":
        render.as_json(result.model_dump(mode="json"))
    elif result.ok:
        render.success(f"delivered: HTTP {result.status_code} in {result.elapsed_ms:.0f} ms")
    else:
        render.line(("✗", "red"), f" not delivered: {result.error} ({result.elapsed_ms:.0f} ms)")
    if not result.ok:
        raise typer.Exit(1)


@app.command("deliveries")
def deliveries(limit: Annotated[int, typer.Option(min=1, max=200)] = 50, output: Output = "table") -> None:
    """The latest delivery attempts, newest first (each retry is a line)."""
    with Client() as client:
        found = client.alerts.deliveries(limit)
    if render.check_output(output) == "json":
        render.as_json([d.model_dump(mode="json") for d in found])
        return
    rows = [[render.cell(d.at), d.status, d.rule, d.object, d.attempt, d.status_code,
             "ok" if d.ok else (d.error or "failed")] for d in found]
    render.table("alert deliveries", ["at", "event", "rule", "object", "attempt", "HTTP", "result"], rows)
