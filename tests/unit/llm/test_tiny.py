"""The tiny test model: built locally, deterministic, a chat template and an EOS token."""

from __future__ import annotations

from pathlib import Path

import pytest

from nubis.llm.tiny import build_tiny_model

transformers = pytest.importorskip("transformers")


def test_same_seed_same_files(tmp_path: Path, tiny_model_path: Path) -> None:
    again = build_tiny_model(tmp_path / "again")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (tiny_model_path / name).read_bytes(), name
    other = build_tiny_model(tmp_path / "other", seed=1)
    assert (other / "model.safetensors").read_bytes() != (again / "model.safetensors").read_bytes()


def test_loads_with_a_chat_template_and_eos(tiny_model_path: Path) -> None:
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model_path, local_files_only=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_path, local_files_only=True)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello"}], add_generation_prompt=True, tokenize=False
    )
    assert prompt == "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.eos_token == "<|im_end|>"
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert model.config.model_type == "llama"
