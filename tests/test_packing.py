"""Padding-free packing (workbench/train/packing.py): rows are never cut, packed batches give
the loss and gradients padded batches give, attention that could let packed rows see each other
falls back to length-grouped batches with a reason, and a resumed run sees the same batches."""

from __future__ import annotations

import json
import os
import random
import signal
import sys

import pytest
import torch

from conftest import REPO, TINY_MODEL, workbench
from workbench.train.methods.sft import with_labels
from workbench.train.packing import (PackedCollator, check_exact, choose, modeling_source, pack,
                                     packed_rows, packs_exactly, real_tokens)


def test_best_fit_decreasing_places_every_row_whole_and_fills_packs():
    rng = random.Random(0)
    lengths = [rng.randint(5, 120) for _ in range(500)] + [128, 128]
    packs = pack(lengths, 128)
    placed = sorted(i for p in packs for i in p)
    assert placed == list(range(len(lengths)))  # each row exactly once, none cut or dropped
    assert all(sum(lengths[i] for i in p) <= 128 for p in packs)
    lower_bound = -(-sum(lengths) // 128)
    assert len(packs) <= lower_bound * 1.03  # best fit decreasing: within 3% of perfect here
    assert pack(lengths, 128) == packs  # deterministic: a resumed run rebuilds the same packs


def test_a_row_longer_than_the_pack_gets_a_pack_of_its_own():
    assert sorted(map(sorted, pack([200, 10, 20], 128))) == [[0], [1, 2]]


def _rows(lengths: list[int], vocab: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for n in lengths:
        prompt = max(1, n // 3)
        rows.append({"input_ids": [rng.randrange(4, vocab) for _ in range(n)],
                     "assistant_masks": [0] * prompt + [1] * (n - prompt)})
    return with_labels(rows)


def _padded(rows: list[dict], pad: int) -> dict:
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def _loss_and_grads(model, batch: dict) -> tuple[float, dict]:
    model.zero_grad()
    loss = model(**batch, use_cache=False).loss
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _two_layer_smollm2():
    """SmolLM2-135M's architecture (its config.json: GQA 9/3 heads, head dim 64, tied
    embeddings), two layers, random weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=2,
        num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
        rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True, bos_token_id=1,
        eos_token_id=2, pad_token_id=2))


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("model_name", ["tiny", "smollm2-2-layers"])
@pytest.mark.parametrize("flat", [False, True], ids=["packs-as-rows", "one-flat-sequence"])
def test_packed_and_padded_batches_give_the_same_loss_and_gradients(attn, model_name, flat):
    from transformers import AutoModelForCausalLM

    if model_name == "tiny":
        model = AutoModelForCausalLM.from_pretrained(TINY_MODEL, dtype=torch.float32)
    else:
        model = _two_layer_smollm2()
    model.config._attn_implementation = attn
    model.train()
    model.config.attention_dropout = 0.0
    vocab = model.config.vocab_size
    rows = _rows([37, 5, 60, 18, 44, 9, 23, 30], vocab)
    packs, stats = packed_rows(rows, 64)
    assert stats.packs < len(rows)
    packed = PackedCollator(pad_token_id=2, flat=flat)(packs)
    padded = _padded(rows, pad=2)
    assert real_tokens(packed) == sum(len(r["input_ids"]) for r in rows)
    loss_a, grads_a = _loss_and_grads(model, padded)
    loss_b, grads_b = _loss_and_grads(model, {k: v for k, v in packed.items()
                                              if not k.startswith(("cu_seq", "max_length"))})
    assert loss_b == pytest.approx(loss_a, rel=1e-5)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-4, atol=1e-6,
                                   msg=lambda m, name=name: f"{name}: {m}")


def _leaky_attention(module, query, key, value, attention_mask, **kwargs):
    """Causal attention that ignores the mask it is given: packed rows see each other."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, None, is_causal=True, **kwargs)


def test_attention_that_ignores_the_mask_is_caught_on_the_loaded_model():
    from transformers import AttentionInterface, AutoModelForCausalLM

    AttentionInterface.register("leaky_for_test", _leaky_attention)
    model = AutoModelForCausalLM.from_pretrained(TINY_MODEL, dtype=torch.float32)
    rows = _rows([20, 16], model.config.vocab_size)
    assert check_exact(model, rows, flat=False, pad_token_id=2) is None
    model.config._attn_implementation = "leaky_for_test"
    problem = check_exact(model, rows, flat=False, pad_token_id=2)
    assert problem and "did not give the logits each gives alone" in problem
    assert model.training is False  # left as it was found (from_pretrained: eval mode)


def test_models_and_attention_without_exact_support_fall_back_with_a_reason():
    from transformers import AutoConfig, LlamaConfig, MambaConfig

    llama = modeling_source(LlamaConfig())
    assert choose("auto", "sft", "sdpa", llama, False).packed
    assert choose("auto", "sft", "flash_attention_2", llama, False).flat
    for attn, source, remote, expected in [
            ("flex_attention", llama, False, "not known to keep packed rows apart"),
            ("sdpa", llama, True, "trust_remote_code"),
            ("sdpa", modeling_source(MambaConfig()), False, "not built by transformers"),
            ("sdpa", modeling_source(AutoConfig.for_model("jamba")), False, "recurrent layers")]:
        choice = choose("auto", "sft", attn, source, remote)
        assert choice.mode == "grouped" and expected in choice.why, (attn, choice)
    assert choose(False, "sft", "sdpa", llama, False).mode == "padded"
    assert choose("auto", "dpo", "sdpa", llama, False).mode == "padded"
    assert packs_exactly("sdpa", None, False)[0] is False


@pytest.fixture(scope="module")
def uneven_setup(tmp_path_factory):
    """A random-init Llama with a ChatML tokenizer and rows of very different lengths."""
    sys.path.insert(0, str(REPO / "tests"))
    from _tokenizers import build_chatml_model

    root = tmp_path_factory.mktemp("uneven")
    model_dir = root / "model"
    build_chatml_model(model_dir, max_positions=512)
    rng = random.Random(1)
    rows = [{"messages": [{"role": "user", "content": "say " + " ".join(["hi"] * rng.randint(1, 14))},
                          {"role": "assistant", "content": f"number {i}"}]} for i in range(80)]
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    profile = root / "uneven.toml"
    profile.write_text(f"""
name = "uneven"
[model]
name_or_path = "{model_dir}"
[data]
train = "{data}"
validation_split = 0
[lora]
target_modules = "all-linear"
dropout = 0.05
[train]
max_steps = 14
batch_size = 2
grad_accum = 1
learning_rate = 1e-3
logging_steps = 1
eval_steps = 0
save_steps = 5
max_seq_len = 128
device = "cpu"
[eval]
after_training = false
""")
    return profile


def _losses(events_file, after: str | None = None) -> dict[int, float]:
    events = [json.loads(x) for x in events_file.read_text().splitlines()]
    if after is not None:
        start = max(i for i, e in enumerate(events) if after in (e.get("message") or ""))
        events = events[start:]
    return {e["step"]: e["loss"] for e in events if e["type"] == "log"}


@pytest.mark.slow
def test_a_packed_run_says_so_and_resumes_after_kill_9_with_the_same_batches(tmp_path, uneven_setup):
    from test_run_control import only_run, status_of, wait_for

    proc = workbench("run", str(uneven_setup), "--runs-dir", "ref", cwd=tmp_path, check=True)
    assert "packing: 79 rows into" in proc.stdout or "packing: 80 rows into" in proc.stdout
    reference = _losses(only_run(tmp_path / "ref") / "events.jsonl")
    assert len(reference) == 14

    # The same run, killed with SIGKILL once a checkpoint exists, then resumed.
    workbench("run", str(uneven_setup), "--runs-dir", "runs", "--detach", "--set",
              "train.max_steps=14", cwd=tmp_path, check=True)
    run = only_run(tmp_path / "runs")
    wait_for(lambda: (run / "checkpoints" / "checkpoint-5").is_dir())
    os.kill(status_of(run)["pid"], signal.SIGKILL)
    wait_for(lambda: json.loads(workbench("runs", "--json", "--runs-dir", "runs",
                                          cwd=tmp_path).stdout)[0]["state"] == "interrupted")
    workbench("resume", run.name, "--runs-dir", "runs", cwd=tmp_path, check=True)
    resumed = _losses(run / "events.jsonl", after="resuming from")
    assert resumed and min(resumed) > 5 and max(resumed) == 14
    for step, loss in resumed.items():
        assert loss == pytest.approx(reference[step], rel=1e-4), step


@pytest.mark.slow
def test_packing_false_pads_as_trl_does_and_says_nothing_about_packing(tmp_path, uneven_setup):
    proc = workbench("run", str(uneven_setup), "--runs-dir", "runs", "--set", "train.packing=false",
                     "--set", "train.max_steps=2", cwd=tmp_path, check=True)
    assert "packing:" not in proc.stdout
