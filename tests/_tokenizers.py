"""Small real ChatML fast tokenizers for tests, built offline with the `tokenizers` library.

The bundled tiny model may not exist when these tests run, and the Hub is unreachable, so we train
a byte-level BPE on a few sentences: byte-level means any text round-trips exactly, which the mask
tests rely on (they decode the trained tokens and compare strings).
"""

from __future__ import annotations

from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Same layout, but refuses system messages the way e.g. Gemma's template does.
NO_SYSTEM_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Forgets to close assistant turns: check_template must notice.
NO_END_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] }}"
    "{% if message['role'] != 'assistant' %}{{ '<|im_end|>' }}{% endif %}{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_CORPUS = [
    "You are a helpful assistant.",
    "What is two plus two? Four. And three plus three? Six.",
    "Translate to French: good morning. Bonjour.",
    "The quick brown fox jumps over the lazy dog.",
    "system user assistant tool\n",
]


def build_chatml_tokenizer(directory: Path, chat_template: str | None = CHATML_TEMPLATE):
    """Train a tiny byte-level BPE, wrap it as a PreTrainedTokenizerFast, save and reload it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 5, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    if chat_template is not None:
        fast.chat_template = chat_template
    fast.save_pretrained(directory)
    return PreTrainedTokenizerFast.from_pretrained(directory)


def trained_segments(tokenizer, row) -> list[str]:
    """Decode each consecutive run of trained tokens."""
    segments, current = [], []
    for token, trained in zip(row.input_ids, row.assistant_masks):
        if trained:
            current.append(token)
        elif current:
            segments.append(tokenizer.decode(current, skip_special_tokens=False))
            current = []
    if current:
        segments.append(tokenizer.decode(current, skip_special_tokens=False))
    return segments


def build_chatml_model(model_dir: Path, max_positions: int = 256):
    """A ChatML tokenizer (above) and a random-init two-layer Llama sized to it, both saved in
    `model_dir`: a real model folder the runner loads, trained in seconds on a CPU. Returns the
    tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_chatml_tokenizer(model_dir)
    tok.save_pretrained(model_dir)
    LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_positions,
        bos_token_id=None, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.pad_token_id)).save_pretrained(model_dir)
    return tok

