"""The README's main command, as a user runs it: the demo profile, headless, end to end.

Done when: it reaches `finished`, the loss falls, and the fine-tuned model answers more
held-out demo prompts correctly than the base model. How long it takes is bench/demo_run.py's
business: a time limit here turned a busy CI machine into a failure (issue 11); the timeout is
only a guard against a hang.
"""

from __future__ import annotations

import json

import pytest

from conftest import workbench

pytestmark = pytest.mark.slow


def test_demo_profile_trains_and_beats_the_base_model(tmp_path, needs_tiny_model):
    proc = workbench("--run", "demo", "--runs-dir", "runs", cwd=tmp_path, timeout=1800, check=True)
    runs = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    assert len(runs) == 1
    run = runs[0]
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished", status
    assert status["step"] == status["total_steps"]

    # the loss falls: the last logged losses are well below the first ones
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in events if e["type"] == "log"]
    assert len(losses) >= 6
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.5 * first, losses
    eval_losses = [e["eval_loss"] for e in events if e["type"] == "eval"]
    assert eval_losses and eval_losses[-1] < eval_losses[0]

    # fine-tuned beats base on held-out prompts (none of them are in the training file)
    suite = json.loads((run / "prompt_suite.json").read_text())
    assert suite["scored"] >= 20
    assert suite["fine_tuned_correct"] > suite["base_correct"], suite
    assert suite["fine_tuned_correct"] >= 0.5 * suite["scored"], suite
    assert str(run / "adapter") in proc.stdout and "prompt suite exact match" in proc.stdout

    # right after the first step (pipeline/timing.py), the console said what the evaluation
    # after training would cost
    said = [e for e in events if e["type"] == "status"
            and (e.get("message") or "").startswith("evaluation after training: ")]
    assert len(said) == 1 and status["eval_estimate_s"] > 0, said
    logs = [i for i, e in enumerate(events) if e["type"] == "log"]
    assert logs[0] < events.index(said[0]) < logs[1]
    assert said[0]["message"].split(": ", 1)[1] in proc.stdout
