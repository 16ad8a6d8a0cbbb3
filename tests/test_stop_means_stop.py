"""Stop means stop (issue 26, items 1 and 2): a stop during the evaluation after training, or
during `workbench eval` / `compare` / `export`, ends it within seconds with a clear line; a
stop while a run is still starting ends it `stopped`, with a line, and each session's
messages are its own.

A small random-init Llama (tests/_tokenizers.py) keeps the runs to seconds; the evaluation is
made long enough (rows x new tokens) that a stop lands in the middle of it.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, workbench
from test_eval_timing import messages
from test_run_control import wait_for
from workbench.rundir import RunDir

pytestmark = pytest.mark.slow

STOPPED_EVAL = "stopped during the evaluation after training"


@pytest.fixture(scope="module")
def profile_path(tmp_path_factory):
    sys.path.insert(0, str(REPO / "tests"))
    from _tokenizers import build_chatml_model

    root = tmp_path_factory.mktemp("stop")
    model_dir = root / "model"
    build_chatml_model(model_dir, max_positions=512)
    rows = [{"messages": [{"role": "user", "content": f"say {i} twice"},
                          {"role": "assistant", "content": f"number {i} and {i}"}]}
            for i in range(200)]
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"say {i}", "reference": f"number {i}"})
                               + "\n" for i in range(40)))
    path = root / "stop.toml"
    path.write_text(f"""
name = "stop"
[model]
name_or_path = "{model_dir}"
[data]
train = "{data}"
validation_split = 0.2
[lora]
target_modules = "all-linear"
[train]
max_steps = 2
batch_size = 4
grad_accum = 1
learning_rate = 1e-3
logging_steps = 1
eval_steps = 0
save_steps = 1
max_seq_len = 64
device = "cpu"
[eval]
max_test_rows = 40
max_new_tokens = 256
shots = 1
prompts = "{prompts}"
""")
    return path


def run_once(tmp_path, profile_path, *overrides: str, on_event=lambda ev: None):
    """Plan and run in this process; (final state, events, status, run)."""
    from workbench.pipeline.run import run_pipeline
    from workbench.profile import load_profile
    from workbench.train.control import create_run
    from workbench.train.plan import plan_run

    plan = plan_run(load_profile(str(profile_path), list(overrides)))
    run = create_run(plan, tmp_path / "runs")
    state = run_pipeline(run, plan, on_event=on_event)
    events = [json.loads(line) for line in run.events_path.read_text().splitlines()]
    return state, events, run.read_status(), run


# ---- item 1: a stop during the evaluation after training -----------------------------------


def test_a_stop_during_the_evaluation_after_training_ends_it_stopped(tmp_path, profile_path):
    asked = []

    def stop_in_the_evaluation(ev: dict) -> None:
        # As `workbench stop` (SIGTERM) would, once the evaluation answers the test rows.
        if ev["type"] == "eval_progress" and ev["stage"] == "test answers" and not asked:
            asked.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGTERM)

    state, events, status, run = run_once(tmp_path, profile_path,
                                          on_event=stop_in_the_evaluation)
    took = time.monotonic() - asked[0]
    assert state == "stopped", messages(events)
    # the adapter is kept, the evaluation is marked stopped, nothing was reported
    assert status["evaluation"] == "stopped"
    assert status["step"] == 2 and Path(status["adapter"]).is_dir()
    assert (run.path / "adapter" / "adapter_model.safetensors").is_file()
    assert not (run.path / "report.md").exists()
    said = messages(events)
    assert STOPPED_EVAL in status["message"]
    assert f"`workbench eval {run.name}` runs the evaluation later" in status["message"]
    assert events[-1]["type"] == "status" and events[-1]["state"] == "stopped"
    # what a stop now does is said when asked, not "saving a checkpoint"
    assert any("stopping the evaluation after training" in m for m in said), said
    assert not any("saving a checkpoint" in m for m in said), said
    # the prompt suite (the next stage) never started: the stop landed mid-generation
    stages = [e["stage"] for e in events if e["type"] == "eval_progress"]
    assert "prompt suite answers" not in stages, stages
    assert took < 30, took


def test_generation_asks_a_should_stop_callable_after_every_token(profile_path):
    """The mechanism: `cancel` may be a run's should_stop (a callable), asked by a
    StoppingCriteria after each token, so a long generate call ends within one step."""
    from workbench.evaluate.compare import ComparisonEngine, System
    from workbench.evaluate.errors import Stopped
    from workbench.evaluate.evaluation import EvalOptions, evaluate
    from workbench.evaluate.testset import load_splits
    from workbench.profile import load_profile
    from workbench.train.plan import load_tokenizer, profile_chat_format
    from transformers import AutoModelForCausalLM

    profile = load_profile(str(profile_path))
    tok = load_tokenizer(profile)
    model = AutoModelForCausalLM.from_pretrained(profile.model.name_or_path).eval()
    engine = ComparisonEngine(model, tok, "cpu", "", profile_chat_format(tok, profile))
    rows = engine.rows([f"say {i}" for i in range(4)], [System("base")])
    asked = []

    def should_stop() -> bool:  # true from the third decoding step on
        asked.append(1)
        return len(asked) >= 3

    gens = engine.generate(rows, max_new_tokens=200, cancel=should_stop)
    assert max(len(a.token_ids) for a in gens.answers) <= 3, [len(a.token_ids)
                                                              for a in gens.answers]
    free = engine.generate(rows, max_new_tokens=40)
    assert max(len(a.token_ids) for a in free.answers) > 3  # it would have gone on

    # The whole evaluation: perplexity batches and answers both ask it; nothing returned.
    splits = load_splits(profile)
    calls = []

    def stop_after_two_batches() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Stopped):
        evaluate(engine, profile, splits, None, EvalOptions(shots=0, max_test_rows=40,
                                                            max_new_tokens=200),
                 cancel=stop_after_two_batches)
    assert len(calls) == 3  # asked before each perplexity batch; stopped at the third


# ---- `workbench eval`, `compare`, `export` interrupted ------------------------------------


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, profile_path):
    """A finished run with an adapter and no evaluation (eval.after_training = false)."""
    root = tmp_path_factory.mktemp("trained")
    state, _, _, run = run_once(root, profile_path, "eval.after_training=false")
    assert state == "finished"
    return run


def _interrupt(args: list[str], cwd: Path, when: str, sig: int,
               on_stdout: bool = False) -> tuple[int, str, float]:
    """Start `workbench ARGS`, send `sig` once `when` shows on its stderr (or stdout); (exit
    code, the output, seconds from the signal to the end)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "workbench", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    try:
        for line in proc.stdout if on_stdout else proc.stderr:
            seen.append(line)
            if when in line:
                break
        sent = time.monotonic()
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out + "".join(seen) + err, time.monotonic() - sent


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_an_interrupted_eval_ends_at_once_with_a_line(trained_run, sig):
    code, out, took = _interrupt(["eval", str(trained_run.path)], trained_run.path.parent,
                                 "evaluating: test answers", sig)
    assert code == 130, out
    name = "SIGTERM" if sig == signal.SIGTERM else "Ctrl-C"
    assert f"stopped ({name}): the evaluation ended, no report was written" in out
    assert f"`workbench eval {trained_run.path}` runs it again" in out
    assert "Traceback" not in out
    assert not (trained_run.path / "report.md").exists()
    assert took < 30, took


def test_an_interrupted_compare_ends_at_once_with_a_line(trained_run):
    code, out, took = _interrupt(["compare", str(trained_run.path)], trained_run.path.parent,
                                 "comparing: answers", signal.SIGTERM)
    assert code == 130, out
    assert "stopped (SIGTERM): the comparison ended before every answer was in" in out
    assert "Traceback" not in out
    assert took < 30, took


def test_an_interrupted_export_ends_at_once_and_keeps_nothing_half_written(trained_run):
    code, out, took = _interrupt(["export", str(trained_run.path), "--format", "merged"],
                                 trained_run.path.parent, "merging (merge_and_unload)",
                                 signal.SIGTERM, on_stdout=True)
    assert code == 130, out
    assert "stopped (SIGTERM): the export ended; nothing half-written was kept" in out
    assert "Traceback" not in out
    export = trained_run.path / "export"
    assert not export.exists() or not any(p.name.startswith(".") for p in export.iterdir())
    assert not (export / "merged").exists()
    assert took < 30, took


# ---- item 2: a stop while the run starts; each session's own messages ----------------------


def _detached(tmp_path: Path, profile_path: Path, *sets: str) -> Path:
    args = ["run", str(profile_path), "--detach", "--runs-dir", "runs"]
    for s in sets:
        args += ["--set", s]
    workbench(*args, cwd=tmp_path, check=True)
    found = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    assert len(found) == 1
    return found[0]


def test_a_stop_while_the_run_starts_ends_it_stopped_with_a_line(tmp_path, profile_path):
    run = _detached(tmp_path, profile_path, "train.max_steps=400", "eval.after_training=false")
    assert RunDir(run).read_status()["state"] == "starting"
    proc = workbench("stop", run.name, "--runs-dir", "runs", cwd=tmp_path)
    status = RunDir(run).read_status()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert status["state"] == "stopped", status
    assert status["message"] == "stopped before training began; nothing to resume from"
    assert f"{run.name}: stopped (stopped before training began" in proc.stdout
    assert "checkpoint and stop" not in proc.stdout  # nothing to checkpoint yet
    log = (run / "stdout.log").read_text()
    assert "[stopped]  stopped before training began" in log
    assert "saving a checkpoint" not in log  # said by no handler before the first step
    assert "Traceback" not in log


def test_resume_then_an_immediate_stop_says_this_sessions_words(tmp_path, profile_path):
    run = _detached(tmp_path, profile_path, "train.max_steps=400", "eval.after_training=false")
    wait_for(lambda: (RunDir(run).read_status().get("step") or 0) >= 2)
    workbench("stop", run.name, "--runs-dir", "runs", cwd=tmp_path, check=True)
    first = RunDir(run).read_status()
    assert first["message"].startswith(f"stopped at step {first['step']}")

    workbench("resume", run.name, "--detach", "--runs-dir", "runs", cwd=tmp_path, check=True)
    status = RunDir(run).read_status()
    assert status["state"] == "starting" and status.get("message") is None, status
    # what the app's Train header shows (the latest status event) is this session's already
    sys.path.insert(0, str(REPO))
    from screens.widgets.run_view import RunView

    view = RunView()
    view.add(RunDir(run).read_events()[0])
    assert view.message_state == "starting" and "stopped at step" not in view.message
    assert any(m.startswith("resuming: a new session starts")
               for m in messages(RunDir(run).read_events()[0]))
    proc = workbench("stop", run.name, "--runs-dir", "runs", cwd=tmp_path)
    status = RunDir(run).read_status()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert status["state"] == "stopped"
    last = RunDir(run).last_checkpoint().name
    assert status["message"] == f"stopped before training began; resume continues from {last}"
    assert f"stopped at step {first['step']}" not in proc.stdout
    assert status["step"] == first["step"]


def test_stop_on_a_finished_run_says_only_the_error(tmp_path):
    run = RunDir.create(tmp_path / "runs", "done")
    run.write_status(state="finished", step=4, total_steps=4, pid=None)
    proc = workbench("stop", run.name, "--runs-dir", "runs", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == "", proc.stdout  # no "asking ... to stop" before the error
    assert "not running (state: finished)" in proc.stderr


# ---- appendix: no stale progress bar after the run's last word ------------------------------


def test_no_progress_bar_is_drawn_after_the_final_status():
    from workbench.pipeline.console import ProgressPrinter

    out = io.StringIO()
    printer = ProgressPrinter(out, live=True, total_steps=10)
    printer.handle({"type": "log", "step": 10, "loss": 1.0, "learning_rate": 1e-4})
    printer.handle({"type": "eval_progress", "stage": "test answers", "done": 3, "total": 9})
    printer.handle({"type": "status", "state": "stopping", "message": "SIGTERM: stopping"})
    # under a line said during the evaluation, its progress comes back, not the step bar
    assert out.getvalue().endswith("evaluating: test answers 3/9 (33%)")
    printer.handle({"type": "status", "state": "stopped", "message": "stopped"})
    printer.close()
    assert out.getvalue().endswith("[stopped]  stopped\n"), repr(out.getvalue()[-120:])
