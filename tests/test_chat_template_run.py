"""A training run through a real reasoning template: the demo model with Qwen3's chat template and
multi-turn conversations (with reasoning) reaches `finished`, the log says how conversations
became rows, and evaluation renders prompts the way training rendered them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chat_template_corpus import TEMPLATES
from conftest import workbench

pytestmark = pytest.mark.slow

DEMO = Path(__file__).resolve().parent.parent / "assets" / "demo"


def multi_turn_data(path: Path, n: int = 48) -> None:
    """Conversations of 2-3 demo questions; every other answer carries its reasoning."""
    rows = [json.loads(line) for line in (DEMO / "translate_en_fr.jsonl").read_text().splitlines()]
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            turns = 2 + i % 2
            messages = [{"role": "system", "content": "Answer in French."}]
            for k in range(turns):
                row = rows[(i * 3 + k) % len(rows)]["messages"]
                answer = {"role": "assistant", "content": row[1]["content"]}
                if k % 2 == 0:
                    answer["reasoning_content"] = "Word by word."
                messages += [row[0], answer]
            fh.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")


def test_qwen3_template_run_trains_per_answer_and_evaluates_alike(tmp_path, needs_tiny_model):
    multi_turn_data(tmp_path / "chats.jsonl")
    profile = tmp_path / "qwen3-style.toml"
    profile.write_text(f"""
name = "qwen3-style"
[model]
name_or_path = "{(DEMO.parent / 'tiny-model').as_posix()}"
chat_template = "{(TEMPLATES / 'Qwen-Qwen3-0.6B.jinja').as_posix()}"
[data]
train = "chats.jsonl"
validation_split = 0.1
[lora]
r = 4
alpha = 8
[train]
max_steps = 4
batch_size = 4
grad_accum = 1
logging_steps = 1
eval_steps = 2
save_steps = 4
max_seq_len = 256
device = "cpu"
precision = "fp32"
gradient_checkpointing = false
[eval]
max_new_tokens = 8
max_test_rows = 6
""", encoding="utf-8")
    workbench("--run", str(profile), "--runs-dir", "runs", cwd=tmp_path, timeout=1200, check=True)
    run = next((tmp_path / "runs").iterdir())
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished", status

    # The reasoning in the data is trained in its own answer's row (data show renders as training does).
    shown = workbench("data", "show", "chats.jsonl", "--row", "1", "--model", str(DEMO.parent / "tiny-model"),
                      "--chat-template", str(TEMPLATES / "Qwen-Qwen3-0.6B.jinja"), cwd=tmp_path, check=True)
    assert "«<think>\nWord by word.\n</think>\n\nla ville mange<|im_end|>»" in shown.stdout

    log = (run / "stdout.log").read_text()
    assert "conversations with several answers became" in log and "one per answer" in log
    assert "training conversations in" in log

    # Evaluation's prompts come from the run's ChatFormat: for a conversation whose history has
    # reasoning, the prompt leaves it out exactly as the training rows did.
    from workbench.evaluate.compare import ComparisonEngine
    from workbench.profile import load_profile
    from workbench.rundir import RunDir

    resolved = load_profile(run / "profile.toml")
    engine = ComparisonEngine.from_run(RunDir(run), resolved, device="cpu")
    history = [{"role": "user", "content": "Translate to French: the cat"},
               {"role": "assistant", "content": "le chat", "reasoning_content": "Word by word."},
               {"role": "user", "content": "Translate to French: the dog"}]
    prompt = engine.chat_text(history)
    assert "Word by word." not in prompt and "le chat" in prompt
    assert prompt.endswith("<|im_start|>assistant\n")
    assert engine.fmt.template == (TEMPLATES / "Qwen-Qwen3-0.6B.jinja").read_text(encoding="utf-8")
