"""Runs as a user drives them, through the real command line in subprocesses: failures
reported before anything is written, stop, kill -9 then resume, --detach outliving its
parent, NaN loss, reproducibility.

A small random-init Llama built here keeps these fast; the demo model's learning is
checked in test_demo_e2e.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, workbench
from workbench.rundir import RunDir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fake_setup(tmp_path_factory):
    """A random-init Llama with a real ChatML tokenizer, a dataset and a profile."""
    sys.path.insert(0, str(REPO / "tests"))
    from _tokenizers import build_chatml_model

    root = tmp_path_factory.mktemp("fake")
    model_dir = root / "model"
    build_chatml_model(model_dir)
    rows = [{"messages": [{"role": "user", "content": f"say {i}"},
                          {"role": "assistant", "content": f"number {i}"}]} for i in range(60)]
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    profile = root / "fake.toml"
    profile.write_text(f"""
name = "fake"
[model]
name_or_path = "{model_dir}"
[data]
train = "{data}"
[lora]
target_modules = "all-linear"
[train]
max_steps = 12
batch_size = 4
grad_accum = 1
learning_rate = 1e-3
logging_steps = 2
eval_steps = 4
save_steps = 4
max_seq_len = 64
device = "cpu"
""")
    return profile


def status_of(run_dir: Path) -> dict:
    return RunDir(run_dir).read_status()  # {} until the runner writes it


def only_run(runs: Path) -> Path:
    found = [p for p in runs.iterdir() if p.is_dir()]
    assert len(found) == 1, found
    return found[0]


def wait_for(predicate, timeout: float = 120, poll: float = 0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError("timed out waiting")


@pytest.mark.parametrize("overrides, expected", [
    (["data.train=nowhere.jsonl"], ["nowhere.jsonl", "data.train"]),
    (["model.name_or_path=./no-such-model"], ["no-such-model", "model.name_or_path"]),
    (["lora.method=qlora", "train.device=auto"], ["qlora", "lora.method"]),  # no GPU here
], ids=["missing-data", "unknown-model", "qlora-on-cpu"])
def test_mistakes_are_reported_before_anything_is_written(tmp_path, fake_setup, overrides,
                                                          expected):
    args = ["run", str(fake_setup), "--runs-dir", "runs"]
    for o in overrides:
        args += ["--set", o]
    proc = workbench(*args, cwd=tmp_path)
    assert proc.returncode == 2
    assert all(text in proc.stderr for text in expected), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_finished_run_directory_follows_the_contract(tmp_path, fake_setup):
    from workbench.profile import load_profile
    from workbench.rundir import EVENT_FIELDS

    secret = "hf_do_not_write_me_0123456789"
    proc = workbench("run", str(fake_setup), "--runs-dir", "runs", cwd=tmp_path, check=True,
                     env={"HF_TOKEN": secret, "WANDB_API_KEY": secret})
    run = only_run(tmp_path / "runs")
    assert str(run) in proc.stdout  # it says where its outputs are
    for path in run.rglob("*"):  # tokens from the environment never reach the run folder
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    st = status_of(run)
    assert st["state"] == "finished" and st["step"] == st["total_steps"] == 12
    for key in ("pid", "started_at", "ended_at", "adapter", "trainable_params"):
        assert st.get(key) is not None, key
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    for ev in events:
        assert ev["type"] in EVENT_FIELDS
        assert set(ev) - {"type", "time"} <= set(EVENT_FIELDS[ev["type"]]), ev
    logs = [e for e in events if e["type"] == "log"]
    assert [e["step"] for e in logs] == [1, 2, 4, 6, 8, 10, 12]
    assert {e["step"] for e in events if e["type"] == "eval"} == {4, 8, 12}
    # `signals` is a preference method's (rewards, margins...): an SFT run has none.
    assert all(set(EVENT_FIELDS["log"]) - {"signals"} <= set(e) for e in logs)
    assert not any("signals" in e for e in logs)
    assert events[-1] == {**events[-1], "type": "status", "state": "finished"}
    estimate = next(e for e in events if e["type"] == "estimate")  # the memory model, at start
    assert estimate["peak_bytes"] > estimate["reserved_bytes"] > 0
    assert sum(estimate["breakdown"].values()) == estimate["peak_bytes"]
    assert st["estimated_peak_bytes"] == estimate["peak_bytes"]
    assert not any(e["type"] == "memory" for e in events)  # measured only on a GPU
    # checkpoints: complete ones only, the last 3 kept, nothing partial left behind
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == \
        ["checkpoint-12", "checkpoint-4", "checkpoint-8"]
    assert (run / "adapter" / "adapter_config.json").exists()
    assert (run / "adapter" / "adapter_model.safetensors").exists()
    assert "step 12/12" in (run / "stdout.log").read_text()
    # the resolved profile reloads, and records versions, dataset hash and seed
    resolved = load_profile(run / "profile.toml")
    assert resolved.train.max_steps == 12
    assert resolved.resolved["seed"] == 42
    assert len(resolved.resolved["dataset_hash"]) == 64
    assert resolved.resolved["versions"]["torch"]
    # `workbench runs --json` sees it
    listed = json.loads(workbench("runs", "--json", "--runs-dir", "runs", cwd=tmp_path,
                                  check=True).stdout)
    assert listed[0]["state"] == "finished" and listed[0]["step"] == 12


def test_same_seed_same_losses(tmp_path, fake_setup):
    losses = []
    for name in ("a", "b"):
        workbench("run", str(fake_setup), "--set", "train.max_steps=4", "--set",
                  "train.eval_steps=0", "--runs-dir", name, cwd=tmp_path, check=True)
        events = (only_run(tmp_path / name) / "events.jsonl").read_text().splitlines()
        losses.append([json.loads(e)["loss"] for e in events if '"log"' in e])
    assert losses[0] == losses[1]


def _start_detached(tmp_path, fake_setup, *sets: str) -> tuple[subprocess.CompletedProcess, Path]:
    args = ["run", str(fake_setup), "--detach", "--runs-dir", "runs"]
    for s in sets:
        args += ["--set", s]
    proc = workbench(*args, cwd=tmp_path, check=True)
    return proc, only_run(tmp_path / "runs")


def test_detached_run_outlives_the_process_that_started_it(tmp_path, fake_setup):
    # The launcher runs in a session of its own, standing in for an SSH login: when the
    # connection drops, its whole session gets SIGHUP.
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "workbench", "run", str(fake_setup), "--detach", "--runs-dir",
         "runs", "--set", "train.max_steps=100000", "--set", "train.eval_steps=0"],
        cwd=tmp_path, env=env, start_new_session=True, stdout=subprocess.PIPE, text=True)
    out, _ = launcher.communicate(timeout=120)
    assert launcher.returncode == 0, out
    run = only_run(tmp_path / "runs")
    pid = wait_for(lambda: status_of(run).get("pid"))
    try:
        with pytest.raises(ProcessLookupError):
            os.killpg(launcher.pid, signal.SIGHUP)  # the login session is gone entirely
        assert os.getsid(pid) == pid != launcher.pid  # the run leads a session of its own
        wait_for(lambda: (status_of(run).get("step") or 0) >= 2)
        assert status_of(run)["state"] == "running"
        assert f"workbench attach {run.name}" in out
    finally:
        os.kill(pid, signal.SIGKILL)


def test_stop_checkpoints_then_ends_stopped_and_resume_finishes(tmp_path, fake_setup):
    # Enough steps that the run cannot finish before the stop lands, even on a fast machine.
    _, run = _start_detached(tmp_path, fake_setup, "train.max_steps=400", "train.eval_steps=0",
                             "train.save_steps=1000")
    wait_for(lambda: (status_of(run).get("step") or 0) >= 3)
    proc = workbench("stop", run.name, "--runs-dir", "runs", cwd=tmp_path, check=True)
    st = status_of(run)
    assert st["state"] == "stopped", proc.stdout
    stopped_at = st["step"]
    assert 3 <= stopped_at < 400
    assert (run / "checkpoints" / f"checkpoint-{stopped_at}").is_dir()
    proc = workbench("stop", run.name, "--runs-dir", "runs", cwd=tmp_path)
    assert proc.returncode == 2 and "not running" in proc.stderr

    workbench("resume", run.name, "--runs-dir", "runs", cwd=tmp_path, check=True)
    st = status_of(run)
    assert st["state"] == "finished" and st["step"] == 400
    events = (run / "events.jsonl").read_text()
    assert f"resuming from checkpoint-{stopped_at}" in events
    proc = workbench("resume", run.name, "--runs-dir", "runs", cwd=tmp_path)
    assert proc.returncode == 2 and "already finished" in proc.stderr


def test_kill_9_then_resume_reaches_the_planned_final_step(tmp_path, fake_setup):
    _, run = _start_detached(tmp_path, fake_setup, "train.max_steps=40", "train.eval_steps=0",
                             "train.save_steps=5")
    wait_for(lambda: (run / "checkpoints" / "checkpoint-5").is_dir())
    os.kill(status_of(run)["pid"], signal.SIGKILL)
    wait_for(lambda: json.loads(workbench("runs", "--json", "--runs-dir", "runs",
                                          cwd=tmp_path).stdout)[0]["state"] == "interrupted")
    # a half-written checkpoint, as a crash mid-save would leave it
    partial = run / "checkpoints" / ".staging-99" / "checkpoint-99"
    partial.mkdir(parents=True)
    (partial / "adapter_model.safetensors").write_bytes(b"\0" * 10)
    last = max(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("checkpoint-*"))

    proc = workbench("resume", run.name, "--runs-dir", "runs", cwd=tmp_path, check=True)
    assert f"from checkpoint-{last}" in proc.stdout
    st = status_of(run)
    assert st["state"] == "finished" and st["step"] == st["total_steps"] == 40
    assert not (run / "checkpoints" / ".staging-99").exists()


def test_sigint_in_the_foreground_checkpoints_and_stops(tmp_path, fake_setup):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench", "run", str(fake_setup), "--runs-dir", "runs",
         "--set", "train.max_steps=100000", "--set", "train.eval_steps=0",
         "--set", "train.save_steps=100000"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    run = wait_for(lambda: next((p for p in (tmp_path / "runs").glob("*") if p.is_dir()), None)
                   if (tmp_path / "runs").exists() else None)
    wait_for(lambda: (status_of(run).get("step") or 0) >= 2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    st = status_of(run)
    assert st["state"] == "stopped"
    assert (run / "checkpoints" / f"checkpoint-{st['step']}").is_dir()
    assert "Traceback" not in out


def test_non_finite_loss_fails_the_run_with_a_hint(tmp_path, fake_setup):
    proc = workbench("run", str(fake_setup), "--set", "train.learning_rate=1e30", "--set",
                     "train.max_grad_norm=0", "--set", "train.max_steps=30", "--set",
                     "train.eval_steps=0", "--runs-dir", "runs", cwd=tmp_path)
    assert proc.returncode == 1
    run = only_run(tmp_path / "runs")
    st = status_of(run)
    assert st["state"] == "failed"
    assert "loss became" in st["message"] and "learning_rate" in st["hint"]
    assert "Traceback" not in proc.stdout + proc.stderr


def test_dora_packing_neftune_and_early_stopping_run(tmp_path, fake_setup):
    """The less common switches all reach a finished run (the trainer accepts them)."""
    workbench("run", str(fake_setup), "--set", "lora.method=dora", "--set", "train.packing=true",
              "--set", "train.neftune_alpha=5", "--set", "train.early_stopping_patience=1",
              "--set", "train.max_steps=8", "--set", "train.eval_steps=2", "--set",
              "train.save_steps=2", "--set", "train.scheduler=linear", "--runs-dir", "runs",
              cwd=tmp_path, check=True)
    run = only_run(tmp_path / "runs")
    st = status_of(run)
    assert st["state"] == "finished"
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert config["use_dora"] is True


def test_training_accepts_a_saved_dataset_folder(tmp_path, fake_setup):
    """`workbench data clean` output is a valid data.train; the run records the manifest."""
    from workbench.data.save import manifest_hash
    from workbench.profile import load_profile

    data = load_profile(fake_setup).data.train
    workbench("data", "clean", data, "-o", "cleaned", "--steps", "dedup_exact,drop_short",
              cwd=tmp_path, check=True)
    workbench("run", str(fake_setup), "--set", f"data.train={tmp_path / 'cleaned'}", "--set",
              "train.max_steps=2", "--runs-dir", "runs", cwd=tmp_path, check=True)
    run = only_run(tmp_path / "runs")
    resolved = load_profile(run / "profile.toml").resolved
    assert resolved["manifest_hash"] == manifest_hash(tmp_path / "cleaned")
    assert resolved["train_rows"] == 48 and resolved["eval_rows"] == 6  # the saved 80/10/10 split


def test_cpu_threads_follow_usable_cores_and_other_load():
    """Issue 11: under load from another process the demo ran 15x slower (threads spinning on
    busy cores). A run uses the idle usable cores, at least one."""
    from workbench.train.threads import choose_threads, usable_cores

    assert choose_threads(2, 0.0) == 2
    assert choose_threads(2, 1.0) == 1    # one core kept busy by another process
    assert choose_threads(2, 5.0) == 1    # never zero
    assert choose_threads(16, 3.4) == 13
    assert 1 <= usable_cores() <= (os.cpu_count() or 1)
