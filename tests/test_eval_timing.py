"""The evaluation's cost is timed after training's first optimizer step, not before it
(issue 25 item 2, issue 29 item 3; workbench/pipeline/timing.py): nothing but loading and
tokenizing stands between `workbench --run` and the first step.

Runs go through the pipeline in this process (plan, run folder, `run_pipeline`) on a small
random-init Llama, with dropout in the adapter and gradient checkpointing on: the two things
the probes' eval mode and KV cache could disturb.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow

TIMING = "timing the evaluation after training"
STATED = "evaluation after training: "


@pytest.fixture(scope="module")
def profile_path(tmp_path_factory):
    sys.path.insert(0, str(REPO / "tests"))
    from _tokenizers import build_chatml_model

    root = tmp_path_factory.mktemp("timing")
    model_dir = root / "model"
    build_chatml_model(model_dir, max_positions=512)
    rows = [{"messages": [{"role": "user", "content": f"say {i} twice"},
                          {"role": "assistant", "content": f"number {i} and {i}"}]}
            for i in range(60)]
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = root / "timing.toml"
    path.write_text(f"""
name = "timing"
[model]
name_or_path = "{model_dir}"
[data]
train = "{data}"
validation_split = 0.2
[lora]
target_modules = "all-linear"
dropout = 0.2
[train]
max_steps = 4
batch_size = 4
grad_accum = 1
learning_rate = 1e-3
logging_steps = 1
eval_steps = 0
save_steps = 1000
max_seq_len = 64
device = "cpu"
gradient_checkpointing = true
[eval]
max_test_rows = 6
max_new_tokens = 4
shots = 1
""")
    return path


def run_once(tmp_path, profile_path, *overrides: str, on_event=lambda ev: None):
    """Plan and run in this process; (final state, events, status)."""
    from workbench.pipeline.run import run_pipeline
    from workbench.profile import load_profile
    from workbench.train.control import create_run
    from workbench.train.plan import plan_run

    plan = plan_run(load_profile(str(profile_path), list(overrides)))
    run = create_run(plan, tmp_path / "runs")
    state = run_pipeline(run, plan, on_event=on_event)
    events = [json.loads(line) for line in run.events_path.read_text().splitlines()]
    return state, events, run.read_status()


def index_of(events, predicate) -> int:
    return next(i for i, e in enumerate(events) if predicate(e))


def messages(events) -> list[str]:
    return [e.get("message") or "" for e in events if e["type"] == "status"]


def test_the_cost_is_timed_after_the_first_step_and_training_is_unchanged(tmp_path,
                                                                           profile_path):
    state, events, status = run_once(tmp_path / "a", profile_path)
    assert state == "finished", messages(events)
    first_log = index_of(events, lambda e: e["type"] == "log")
    timing = index_of(events, lambda e: e.get("message") == TIMING)
    stated = index_of(events, lambda e: (e.get("message") or "").startswith(STATED + "6 rows"))
    second_log = index_of(events, lambda e: e["type"] == "log" and e["step"] == 2)
    # the first step first, then the probes, said while they run and stated after, once
    assert events[first_log]["step"] == 1 and first_log < timing < stated < second_log
    assert messages(events).count(TIMING) == 1
    assert status["eval_estimate_s"] > 0
    loading = index_of(events, lambda e: e.get("message") == "loading model")
    assert not any(e.get("message") == TIMING for e in events[loading:first_log])

    # The same run without the evaluation: the same losses, bit for bit (dropout draws the
    # same random numbers, gradient checkpointing and the KV cache flag are as they were).
    state, plain, status = run_once(tmp_path / "b", profile_path, "eval.after_training=false")
    assert state == "finished"
    assert TIMING not in messages(plain) and "eval_estimate_s" not in status
    losses = [(e["step"], e["loss"], e["grad_norm"]) for e in events if e["type"] == "log"]
    assert len(losses) == 4
    assert losses == [(e["step"], e["loss"], e["grad_norm"]) for e in plain if e["type"] == "log"]


def test_a_stop_asked_for_while_timing_stops_the_run_at_once(tmp_path, profile_path):
    def stop_while_timing(ev: dict) -> None:
        if ev.get("message") == TIMING:  # as `workbench stop` would, while the probes run
            os.kill(os.getpid(), signal.SIGTERM)

    state, events, status = run_once(tmp_path, profile_path, "train.max_steps=50",
                                     on_event=stop_while_timing)
    assert state == "stopped", messages(events)
    # stopped at the step it was timing after, its checkpoint saved; no estimate stated
    assert status["step"] == 1, status
    assert (Path(status["run_dir"]) / "checkpoints" / "checkpoint-1").is_dir()
    assert "eval_estimate_s" not in status
    said = messages(events)
    assert "evaluation after training: not timed, the run was asked to stop" in said
    assert not any(m.startswith(STATED + "6 rows") for m in said)
    assert [e["step"] for e in events if e["type"] == "log"] == [1]


def test_probes_are_small_and_leave_the_model_as_it_was(profile_path):
    """The probes take a few rows of the largest calls (not 48 rows of ~650 tokens), and the
    model comes back in train mode, KV cache off, the adapter still trainable."""
    import torch

    from workbench.evaluate.cost import PROBE_MIN_ROWS, estimate_evaluation
    from workbench.profile import load_profile
    from workbench.train.plan import plan_run
    from workbench.train.runner import add_adapters, load_model

    plan = plan_run(load_profile(str(profile_path), ["eval.max_test_rows=40"]))
    model = add_adapters(load_model(plan), plan)
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    cost = estimate_evaluation(model, plan)
    # 12 held-out rows x 3 systems: a zero-shot call of 24 rows; the probes' rows are capped
    assert cost.rows == 12 and cost.systems == 3
    assert PROBE_MIN_ROWS <= cost.probe_rows <= 24 and cost.total_s > 0
    assert model.training and all(m.training for m in model.modules())
    assert model.config.use_cache is False
    after = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert after.keys() == before.keys()
    assert all(torch.equal(before[n], after[n]) for n in before)


def test_the_recorder_leaves_the_probes_out_of_its_eta():
    from workbench.train.trainer import RunRecorder, StopFlag

    class Run:
        def write_status(self, **kw):
            pass

    class State:
        global_step, max_steps = 0, 10

    recorder = RunRecorder(Run(), StopFlag())
    recorder._gpu = lambda force=False: None  # no GPU events from a test
    recorder.on_train_begin(None, State(), None)
    t0 = recorder._t0
    recorder.leave_out(30.0)
    assert recorder._t0 == t0 + 30.0 and recorder._last_tokens_t == t0 + 30.0
