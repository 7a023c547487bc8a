"""A tiny random Llama model built locally, for tests of every layer (no model hub, no download).

``build_tiny_model(dest)`` writes a safetensors folder (``config.json``, ``model.safetensors``,
a byte-level BPE tokenizer trained with ``tokenizers`` on a built-in text, a chat template, an
EOS token) in well under a second; the same ``seed`` gives the same files. Its output is
gibberish, but deterministic gibberish: enough to test sampling, batching, streaming and the API.
"""

from __future__ import annotations

from pathlib import Path

_TEXT = """\
The quick brown fox jumps over the lazy dog. A cloud runs models for people who own their machines.
Paris is the capital of France. Berlin is the capital of Germany. Rome is the capital of Italy.
What is the capital of France? The capital of France is Paris. Hello, how are you today?
I am fine, thank you. Models are trained on data, evaluated, compressed and deployed behind endpoints.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000. Punctuation: , . ; : ! ? ( ) [ ] { } " ' - _ / \\ @ # $ % &
Unicode: café, naïve, Zürich, München, 東京, 北京, 😀, 🚀, ünïcödé, ελληνικά, русский, العربية.
"""

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""ChatML, the template SmolLM2 and many others use."""

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def _train_tokenizer(vocab_size: int):
    # tokenizers/transformers are the LLM extra's: imported where used
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_TEXT.splitlines(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(dest: Path, *, seed: int = 0) -> Path:
    """Write a tiny random Llama model (safetensors folder) to ``dest`` and return ``dest``."""
    # torch/transformers are heavy optional imports: only here
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(vocab_size=512)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        initializer_range=0.2,  # varied greedy output (0.02 repeats one token)
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest
