"""Fast checks of the bundled tiny model (assets/tiny-model) and the demo dataset (assets/demo)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "assets" / "tiny-model"
DEMO_DIR = ROOT / "assets" / "demo"
MAX_MODEL_BYTES = 8 * 1024 * 1024


def _jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(MODEL_DIR)


@pytest.fixture(scope="module")
def model():
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=torch.float32).eval()


def test_files_present_and_small():
    names = {p.name for p in MODEL_DIR.iterdir()}
    for required in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                     "tokenizer_config.json", "README.md"):
        assert required in names, required
    assert not any(n.endswith(".bin") for n in names), "weights must be safetensors only"
    total = sum(p.stat().st_size for p in MODEL_DIR.iterdir() if p.is_file())
    assert total < MAX_MODEL_BYTES, total


def test_tokenizer_is_fast_with_special_tokens(tokenizer):
    assert tokenizer.is_fast
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token is not None and tokenizer.pad_token_id is not None
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    for t in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        ids = tokenizer(t, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, t
    text = "le chat noir dort sous l'arbre"
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    assert tokenizer.decode(enc["input_ids"]) == text
    assert all(0 <= s <= e <= len(text) for s, e in enc["offset_mapping"])
    # unknown text still round-trips (SentencePiece byte fallback)
    odd = "Zürich 42 ünïcödé ✓"
    assert tokenizer.decode(tokenizer(odd, add_special_tokens=False)["input_ids"]) == odd


def test_chat_template_is_chatml(tokenizer):
    msgs = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Repeat: the cat"},
        {"role": "assistant", "content": "the cat"},
    ]
    text = tokenizer.apply_chat_template(msgs, tokenize=False)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nRepeat: the cat<|im_end|>\n"
        "<|im_start|>assistant\nthe cat<|im_end|>\n"
    )
    gen = tokenizer.apply_chat_template(msgs[:2], tokenize=False, add_generation_prompt=True)
    assert gen.endswith("<|im_start|>user\nRepeat: the cat<|im_end|>\n<|im_start|>assistant\n")
    assert not tokenizer.apply_chat_template(msgs[:2], tokenize=False).endswith("assistant\n")


def test_model_is_llama_from_safetensors(model, tokenizer):
    from transformers import LlamaForCausalLM

    assert isinstance(model, LlamaForCausalLM)
    assert model.config.model_type == "llama"
    assert model.config.vocab_size == len(tokenizer)
    n = sum(p.numel() for p in model.parameters())
    assert 100_000 < n < 2_000_000
    gc = model.generation_config
    eos = gc.eos_token_id if isinstance(gc.eos_token_id, list) else [gc.eos_token_id]
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in eos
    assert gc.pad_token_id == tokenizer.pad_token_id
    assert not gc.do_sample


def test_generation_stops_at_im_end(model, tokenizer):
    import torch

    # The base model learned the chat turn from other tasks (repeat, reverse, count); it copies
    # short sentences but is no good copier of long ones (the SentencePiece build swaps a noun
    # in "the black cat sleeps"): what matters here is the turn's shape and its end.
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Repeat: a small bird sings"}],
                                         tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=24, do_sample=False)
    new = out[0, ids["input_ids"].shape[1]:].tolist()
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert new[-1] == im_end and len(new) < 24, tokenizer.decode(new)
    assert tokenizer.decode(new, skip_special_tokens=True).strip() == "a small bird sings"


def test_demo_dataset_rows_are_valid():
    rows = _jsonl(DEMO_DIR / "translate_en_fr.jsonl")
    assert 300 <= len(rows) <= 800
    seen = set()
    for row in rows:
        assert set(row) == {"messages"}
        msgs = row["messages"]
        assert [m["role"] for m in msgs] == ["user", "assistant"]
        assert msgs[0]["content"].startswith("Translate to French: ")
        assert msgs[1]["content"].strip() and msgs[1]["content"] == msgs[1]["content"].strip()
        key = msgs[0]["content"]
        assert key not in seen, key
        seen.add(key)


def test_prompts_are_held_out():
    rows = _jsonl(DEMO_DIR / "translate_en_fr.jsonl")
    prompts = _jsonl(DEMO_DIR / "prompts.jsonl")
    assert 30 <= len(prompts) <= 50
    train_prompts = {r["messages"][0]["content"].strip() for r in rows}
    for p in prompts:
        assert set(p) == {"prompt", "reference"}
        assert p["prompt"].startswith("Translate to French: ")
        assert p["reference"].strip()
        assert p["prompt"].strip() not in train_prompts
    assert len({p["prompt"] for p in prompts}) == len(prompts)


def test_demo_dataset_is_reproducible():
    """The committed demo files are exactly what the build script generates."""
    from workbench.models import build_tiny

    train, prompts = build_tiny.build_demo_dataset()
    rows = _jsonl(DEMO_DIR / "translate_en_fr.jsonl")
    assert [r["messages"][1]["content"] for r in rows] == [p.fr for p in train]
    assert [p["reference"] for p in _jsonl(DEMO_DIR / "prompts.jsonl")] == [p.fr for p in prompts]
