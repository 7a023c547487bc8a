"""What every engine checks of a request before it queues it, and the Hugging Face chat template."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nubis.llm.engine import SamplingParams


def check_request(prompt_tokens: int, params: SamplingParams, *, context_length: int) -> None:
    """``ValueError`` (→ 400) for a request no engine could serve."""
    if params.max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    if params.temperature < 0:
        raise ValueError("temperature must be >= 0")
    if not 0 < params.top_p <= 1:
        raise ValueError("top_p must be in (0, 1]")
    if prompt_tokens == 0:
        raise ValueError("the prompt is empty")
    if prompt_tokens + params.max_tokens > context_length:
        raise ValueError(
            f"this model's context is {context_length} tokens; the prompt has {prompt_tokens} "
            f"and max_tokens asks for {params.max_tokens} more"
        )


def render_chat_template(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> str:
    """A ``transformers`` tokenizer's chat template over OpenAI ``messages``, assistant turn open."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("this model has no chat template: use /v1/completions with a plain prompt")
    try:
        return tokenizer.apply_chat_template(
            [dict(m) for m in messages], add_generation_prompt=True, tokenize=False
        )
    except Exception as e:  # jinja2's TemplateError, the template's raise_exception
        raise ValueError(f"the chat template refused these messages: {e}") from e
