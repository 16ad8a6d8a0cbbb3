"""Issue 16: checkpoints you can trust. A manifest is written as each checkpoint is renamed
into place; resume verifies the newest, and a damaged one (truncated, bit-flipped) is named
with what is wrong, kept aside, and the run resumes from the newest intact one. `--from`
picks one; `workbench runs` marks damaged ones; export / eval check the adapter.

The end-to-end cases drive the demo profile through the real command line: one run killed
(kill -9) after its second checkpoint, copied for each case.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, workbench
from workbench.train.checkpoints import (MANIFEST, CheckpointError, adapter_problem,
                                         choose_for_resume, damaged_checkpoints, verify,
                                         write_manifest)
from workbench.rundir import RunDir

DEMO = REPO / "profiles" / "demo.toml"
FAST = ["--set", "train.max_steps=16", "--set", "train.save_steps=2", "--set",
        "train.grad_accum=1", "--set", "train.eval_steps=0", "--set", "eval.after_training=false"]


# ---- the manifest, without training ------------------------------------------------------------

def _fake_checkpoint(run: RunDir, step: int, manifest: bool = True) -> Path:
    """A folder with the files a checkpoint has (real bytes; what is checked is the files)."""
    path = run.checkpoints_dir / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (path / "adapter_model.safetensors").write_bytes(os.urandom(4096))
    (path / "optimizer.pt").write_bytes(os.urandom(8192))
    if manifest:
        write_manifest(path)
    return path


@pytest.fixture
def run(tmp_path):
    return RunDir.create(tmp_path / "runs", "demo")


def test_verify_names_the_file_and_what_is_wrong(run):
    path = _fake_checkpoint(run, 10)
    assert verify(path).intact and verify(path).has_manifest
    data = bytearray((path / "optimizer.pt").read_bytes())
    data[100] ^= 0x01  # one bit, same size: only the sha256 sees it
    (path / "optimizer.pt").write_bytes(bytes(data))
    assert verify(path, quick=True).intact  # sizes only
    found = verify(path)
    assert not found.intact and "optimizer.pt" in found.describe() and "sha256" in found.describe()
    with open(path / "adapter_model.safetensors", "r+b") as fh:
        fh.truncate(100)
    quick = verify(path, quick=True).describe()
    assert "adapter_model.safetensors is truncated: 100 bytes, 4,096 when written" in quick
    (path / "trainer_state.json").unlink()
    assert "trainer_state.json is missing" in verify(path).describe()
    (path / MANIFEST).write_text("{not json")
    assert "unreadable" in verify(path).describe()


def test_a_checkpoint_from_before_manifests_is_accepted_and_said_unverified(run):
    _fake_checkpoint(run, 5, manifest=False)
    choice = choose_for_resume(run)
    assert choice.path.name == "checkpoint-5"
    assert "not verified" in choice.notes[-1]


def test_resume_falls_back_past_damaged_checkpoints(run):
    for step in (10, 20, 30):
        _fake_checkpoint(run, step)
    with open(run.checkpoints_dir / "checkpoint-30" / "optimizer.pt", "r+b") as fh:
        fh.truncate(10)
    (run.checkpoints_dir / "checkpoint-20" / "adapter_model.safetensors").write_bytes(b"\0" * 4096)
    choice = choose_for_resume(run)
    assert choice.path.name == "checkpoint-10"
    text = "\n".join(choice.notes)
    assert "checkpoint-30 is damaged: optimizer.pt is truncated" in text
    assert "checkpoint-20 is damaged: adapter_model.safetensors has changed" in text
    assert "20 steps will be trained again" in text
    # kept for a person to look at, under a name resume never lists
    assert [s for s, _ in run.checkpoints()] == [10]
    assert {n for n, _ in damaged_checkpoints(run)} == {"damaged-checkpoint-20",
                                                        "damaged-checkpoint-30"}


def test_from_names_a_checkpoint_and_refuses_missing_or_damaged_ones(run):
    for step in (10, 20):
        _fake_checkpoint(run, step)
    assert choose_for_resume(run, "checkpoint-10").path.name == "checkpoint-10"
    assert choose_for_resume(run, "10").path.name == "checkpoint-10"
    with pytest.raises(CheckpointError, match="no complete checkpoint-99.*checkpoint-10, checkpoint-20"):
        choose_for_resume(run, "checkpoint-99")
    with open(run.checkpoints_dir / "checkpoint-10" / "optimizer.pt", "r+b") as fh:
        fh.truncate(1)
    with pytest.raises(CheckpointError, match="checkpoint-10 is damaged: optimizer.pt is truncated"):
        choose_for_resume(run, "checkpoint-10")


def test_every_checkpoint_damaged_is_a_clear_error_not_a_fresh_start(run):
    path = _fake_checkpoint(run, 10)
    (path / "optimizer.pt").unlink()
    with pytest.raises(CheckpointError) as err:
        choose_for_resume(run)
    assert "every checkpoint" in err.value.message and "optimizer.pt is missing" in err.value.message
    assert run.checkpoints_dir.name in err.value.hint


def test_runs_marks_damaged_checkpoints(tmp_path, run):
    run.write_status(state="stopped", pid=None, created_at="2026-01-01T00:00:00+00:00")
    path = _fake_checkpoint(run, 10)
    listed = json.loads(workbench("runs", "--json", "--runs-dir", str(run.path.parent),
                                  cwd=tmp_path, check=True).stdout)
    assert listed[0]["damaged_checkpoints"] == []
    with open(path / "adapter_model.safetensors", "r+b") as fh:
        fh.truncate(7)
    proc = workbench("runs", "--runs-dir", str(run.path.parent), cwd=tmp_path, check=True)
    assert "damaged checkpoint-10: adapter_model.safetensors is truncated" in proc.stdout


def test_export_and_eval_refuse_a_damaged_adapter(tmp_path, run):
    from workbench.export.common import ExportError, check_adapter_ready

    run.adapter_dir.mkdir()
    (run.adapter_dir / "adapter_config.json").write_text("{}")
    (run.adapter_dir / "adapter_model.safetensors").write_bytes(os.urandom(2048))
    write_manifest(run.adapter_dir)
    check_adapter_ready(run)  # intact: no error
    with open(run.adapter_dir / "adapter_model.safetensors", "r+b") as fh:
        fh.truncate(10)
    assert "truncated" in adapter_problem(run)[0]
    with pytest.raises(ExportError, match="adapter of .* is damaged: adapter_model.safetensors"):
        check_adapter_ready(run)
    run.write_status(state="finished", created_at="2026-01-01T00:00:00+00:00")
    proc = workbench("eval", run.name, "--runs-dir", str(run.path.parent), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "is damaged: adapter_model.safetensors is truncated" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


# ---- end to end on the demo profile ------------------------------------------------------------

def _status(run: Path) -> dict:
    return RunDir(run).read_status()


def _checkpoint_steps(run: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("checkpoint-*"))


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    """A demo run killed with kill -9 once its second checkpoint is complete."""
    root = tmp_path_factory.mktemp("killed")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "workbench", "run", str(DEMO), "--runs-dir",
                             "runs", *FAST, "--set", "train.max_steps=400"],
                            cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    try:
        while time.time() < deadline:
            found = list((root / "runs").glob("*/checkpoints/checkpoint-4"))
            if found:
                break
            assert proc.poll() is None, "the run ended before its second checkpoint"
            time.sleep(0.05)
        else:
            raise AssertionError("no checkpoint-4 in time")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    return found[0].parent.parent


@pytest.fixture
def interrupted(killed_run, tmp_path):
    """A private copy of the killed run (profile.toml holds absolute paths: it still plans)."""
    shutil.copytree(killed_run, tmp_path / "runs" / killed_run.name)
    return tmp_path / "runs" / killed_run.name


def _resume(run: Path, *extra: str) -> subprocess.CompletedProcess:
    # The run was planned for 400 steps: resume it detached, watch what it loads, stop it.
    proc = workbench("resume", run.name, "--runs-dir", str(run.parent), "--detach", *extra,
                     cwd=run.parent.parent)
    if proc.returncode == 0:
        deadline = time.time() + 180
        while (_status(run).get("step") or 0) <= 4 and time.time() < deadline:
            assert _status(run).get("state") != "failed", _status(run)
            time.sleep(0.1)
        workbench("stop", run.name, "--runs-dir", str(run.parent), cwd=run.parent.parent,
                  check=True)
    return proc


def _resume_notes(run: Path) -> str:
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    return "\n".join(e.get("message") or "" for e in events if e["type"] == "status")


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "bit-flipped"])
def test_a_damaged_newest_checkpoint_resumes_from_the_previous_one(interrupted, damage):
    steps = _checkpoint_steps(interrupted)
    newest, previous = steps[-1], steps[-2]
    target = interrupted / "checkpoints" / f"checkpoint-{newest}" / "adapter_model.safetensors"
    if damage == "truncated":  # as a killed copy or a full disk leaves it
        with open(target, "r+b") as fh:
            fh.truncate(target.stat().st_size // 2)
    else:  # as a flaky disk leaves it: same size, one bit
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x10
        target.write_bytes(bytes(data))
    _resume(interrupted)
    notes = _resume_notes(interrupted)
    assert f"checkpoint-{newest} is damaged: adapter_model.safetensors" in notes
    assert (f"resuming from checkpoint-{previous}, the newest intact checkpoint: "
            f"{newest - previous} step") in notes
    st = _status(interrupted)
    assert st["state"] == "stopped" and st["step"] > previous, st
    assert (interrupted / "checkpoints" / f"damaged-checkpoint-{newest}").is_dir()
    assert "Traceback" not in (interrupted / "stdout.log").read_text()


@pytest.mark.slow
def test_resume_from_names_the_checkpoint(interrupted):
    proc = workbench("resume", interrupted.name, "--runs-dir", str(interrupted.parent),
                     "--from", "checkpoint-99", cwd=interrupted.parent.parent)
    assert proc.returncode == 2 and "no complete checkpoint-99" in proc.stderr
    assert _status(interrupted)["state"] == "running"  # untouched (read as interrupted)
    first = _checkpoint_steps(interrupted)[0]
    proc = _resume(interrupted, "--from", f"checkpoint-{first}")
    assert proc.returncode == 0 and f"from checkpoint-{first} (verified)" in proc.stdout
    assert f"resuming from checkpoint-{first} as asked" in _resume_notes(interrupted)
    assert _status(interrupted)["state"] == "stopped"


@pytest.mark.slow
def test_a_damaged_checkpoint_without_manifest_is_not_called_a_bug(interrupted):
    """Checkpoints written before manifests cannot be verified first: loading one that is
    damaged fails, and the message says so and what to do (no "please report it")."""
    newest = _checkpoint_steps(interrupted)[-1]
    folder = interrupted / "checkpoints" / f"checkpoint-{newest}"
    (folder / MANIFEST).unlink()
    with open(folder / "adapter_model.safetensors", "r+b") as fh:
        fh.truncate(100)
    proc = workbench("resume", interrupted.name, "--runs-dir", str(interrupted.parent),
                     cwd=interrupted.parent.parent)
    assert proc.returncode == 1
    st = _status(interrupted)
    assert st["state"] == "failed"
    assert f"checkpoint-{newest} is damaged" in st["message"]
    assert "--from checkpoint-N" in st["hint"] and "report" not in st["hint"]
    assert "Traceback" not in proc.stdout + proc.stderr
