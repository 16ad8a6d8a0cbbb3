"""Issue 16: a full disk, anywhere in a run, ends it `failed` with one clear message (which
filesystem, how much was needed, the last complete checkpoint, "free space, then workbench
resume RUN"), status.json written, no traceback, nothing partial kept as complete. And the
free-space check before a run: refuse what cannot fit, warn when tight, --force.

Where the tests run as root a real 2 MiB tmpfs fills up under the demo run; everywhere the
full disk is injected at each write site (the write raises OSError(ENOSPC), as the kernel's
would) in a demo run trained in this process.
"""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, workbench
from workbench.train import diskspace
from workbench.train.diskspace import Need, is_disk_full, preflight
from workbench.rundir import RunDir

DEMO = REPO / "profiles" / "demo.toml"
FAST = ["train.max_steps=6", "train.save_steps=2", "train.grad_accum=1", "train.eval_steps=0",
        "eval.after_training=false"]


def enospc(path: str = "") -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path or None)


# ---- recognising a full disk, and the pre-flight ----------------------------------------------

def test_a_full_disk_is_recognised_however_the_library_says_it(tmp_path):
    assert is_disk_full(enospc())
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    # safetensors' Rust error and an OSError wrapped by another exception
    assert is_disk_full(RuntimeError("Error while serializing: I/O error: No space left on "
                                     "device (os error 28)"))
    try:
        try:
            raise enospc()
        except OSError as inner:
            raise RuntimeError("saving failed") from inner
    except RuntimeError as outer:
        assert is_disk_full(outer)
    # torch's zip writer says only "unexpected pos": a full disk only if the disk is full
    torch_says = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    assert not is_disk_full(torch_says, tmp_path)  # this disk has room
    assert not is_disk_full(ValueError("bad value"), tmp_path)
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))


def test_preflight_refuses_what_cannot_fit_and_warns_when_tight(tmp_path):
    needs = [Need(tmp_path / "runs", 300 * 2**20, "4 checkpoints, the adapter and the report"),
             Need(tmp_path / "cache", 200 * 2**20, "the model (not downloaded yet)")]
    # both on one filesystem here: they add up to 500 MiB
    refused = preflight(needs, free=lambda path: 400 * 2**20)
    assert refused.level == "refuse"
    assert "not enough disk space" in refused.text() and "400.0 MiB free" in refused.text()
    assert "500.0 MiB" in refused.text() and "the model (not downloaded yet)" in refused.text()
    tight = preflight(needs, free=lambda path: 600 * 2**20)
    assert tight.level == "tight" and "tight" in tight.text() and "600.0 MiB free" in tight.text()
    assert preflight(needs, free=lambda path: 10 * 2**30).level == "ok"


def test_space_needed_grows_with_the_checkpoints_kept():
    from workbench.profile import load_profile

    profile = load_profile(DEMO)
    one = diskspace.space_needs(profile, Path("runs"), trainable_params=86_016)[0].bytes
    more = diskspace.space_needs(profile.with_overrides(["train.save_total_limit=6"]),
                                 Path("runs"), trainable_params=86_016)[0].bytes
    assert more - one == 3 * diskspace.checkpoint_bytes(86_016)
    # the demo's measured checkpoint (1.06 MiB of adapter + optimizer) is within the estimate
    assert 1_063_103 <= diskspace.checkpoint_bytes(86_016) <= 2 * 1_063_103


def test_demo_estimate_of_trainable_parameters_matches_the_run():
    """The pre-flight sizes checkpoints from the memory model's count, before any torch."""
    from workbench.estimate.config import load_model_config
    from workbench.estimate.memory import EstimateSettings, estimate
    from workbench.profile import load_profile

    profile = load_profile(DEMO)
    config, _ = load_model_config(profile.model.name_or_path)
    assert estimate(config, EstimateSettings.from_profile(profile)).trainable_params == 86_016


# ---- a full disk injected at each write site of a run ----------------------------------------

@pytest.fixture(scope="module")
def demo_plan():
    from workbench.profile import load_profile
    from workbench.train.plan import plan_run

    return plan_run(load_profile(DEMO, FAST))


def _run_in_process(tmp_path, plan) -> tuple[RunDir, str, int]:
    """Train the demo in this process, as a foreground run does; returns the run, what the
    terminal showed, and the exit code."""
    from workbench.pipeline.console import TeePrinter
    from workbench.train.control import create_run
    from workbench.pipeline.worker import run_in_this_process

    run = create_run(plan, tmp_path / "runs")
    screen = io.StringIO()
    printer = TeePrinter(run, live=False, screen=screen)
    code = run_in_this_process(run, resume=False, printer=printer, plan=plan)
    printer.close()
    return run, screen.getvalue(), code


def _assert_failed_for_disk(run: RunDir, screen: str, code: int, last: str | None) -> dict:
    st = run.read_status()
    assert code == 1 and st["state"] == "failed", (st, screen)
    assert "disk full" in st["message"] and "no space left" in st["message"], st["message"]
    assert (f"the last complete checkpoint is {last}" if last
            else "no complete checkpoint yet") in st["message"]
    assert "free space on" in st["hint"] and f"workbench resume {run.name}" in st["hint"]
    assert "report it" not in st["hint"]
    assert "error (disk): disk full" in screen and "Traceback" not in screen
    # nothing partial left to be taken as complete, no reserve left behind
    assert not list(run.checkpoints_dir.glob(".staging-*"))
    assert not (run.path / ".adapter.partial").exists()
    assert not (run.path / diskspace.RESERVE_NAME).exists()
    return st


@pytest.mark.slow
def test_disk_full_while_writing_a_checkpoint(tmp_path, demo_plan, monkeypatch):
    import torch

    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if "checkpoint-4" in str(f):  # the second checkpoint's optimizer state
            raise enospc(str(f))
        return real_save(obj, f, *args, **kwargs)
    monkeypatch.setattr(torch, "save", save)
    run, screen, code = _run_in_process(tmp_path, demo_plan)
    st = _assert_failed_for_disk(run, screen, code, "checkpoint-2")
    assert "while writing checkpoint-4, which needs about 1.1 MiB" in st["message"]
    assert [s for s, _ in run.checkpoints()] == [2]
    from workbench.train.checkpoints import verify
    assert verify(run.checkpoints_dir / "checkpoint-2").intact


@pytest.mark.slow
def test_disk_full_while_appending_events(tmp_path, demo_plan, monkeypatch):
    real_append = RunDir.append_event

    def append(self, type_, **fields):
        if type_ == "checkpoint" and fields.get("step", 0) >= 4 or getattr(self, "_full", False):
            self._full = True  # from now on the disk stays full for events
            raise enospc(str(self.events_path))
        return real_append(self, type_, **fields)
    monkeypatch.setattr(RunDir, "append_event", append)
    run, screen, code = _run_in_process(tmp_path, demo_plan)
    # checkpoint-4 was complete (renamed into place) before its event could not be written
    _assert_failed_for_disk(run, screen, code, "checkpoint-4")
    # events.jsonl takes no more lines: the terminal and status.json still say it all
    assert "error (disk)" not in run.events_path.read_text()


@pytest.mark.slow
def test_disk_full_while_replacing_status(tmp_path, demo_plan, monkeypatch):
    from workbench import rundir

    real_write = rundir.write_json_atomic
    failed = []

    def write(path, data):
        # once, as checkpoint-4 is recorded: the reserve given back makes room for the last
        if not failed and str(data.get("last_checkpoint", "")).endswith("checkpoint-4"):
            failed.append(path)
            raise enospc(str(path))
        return real_write(path, data)
    monkeypatch.setattr(rundir, "write_json_atomic", write)
    run, screen, code = _run_in_process(tmp_path, demo_plan)
    assert failed
    _assert_failed_for_disk(run, screen, code, "checkpoint-4")


@pytest.mark.slow
def test_disk_full_while_saving_the_adapter(tmp_path, demo_plan, monkeypatch):
    from peft import PeftModel

    real_save = PeftModel.save_pretrained

    def save(self, save_directory, *args, **kwargs):
        if ".adapter.partial" in str(save_directory):
            os.makedirs(save_directory, exist_ok=True)
            Path(save_directory, "adapter_model.safetensors").write_bytes(b"\0" * 100)
            raise enospc(str(Path(save_directory, "adapter_model.safetensors")))
        return real_save(self, save_directory, *args, **kwargs)
    monkeypatch.setattr(PeftModel, "save_pretrained", save)
    run, screen, code = _run_in_process(tmp_path, demo_plan)
    st = _assert_failed_for_disk(run, screen, code, "checkpoint-6")
    assert "while writing the adapter, which needs about 340.0 KiB" in st["message"]
    assert not run.adapter_dir.exists()


# ---- a real full filesystem (root only: a 2 MiB tmpfs) ----------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the injected cases above run everywhere")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_a_real_full_disk_fails_the_run_cleanly_and_resume_finishes_it(tmp_path, small_disk):
    sets = [a for s in FAST for a in ("--set", s)]
    proc = workbench("run", str(DEMO), "--runs-dir", str(small_disk / "runs"), *sets,
                     cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "not enough disk space on" in proc.stderr and "--force" in proc.stderr
    assert not (small_disk / "runs").exists()  # refused before anything was written

    proc = workbench("run", str(DEMO), "--runs-dir", str(small_disk / "runs"), *sets, "--force",
                     cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Traceback" not in out
    run = RunDir(next((small_disk / "runs").iterdir()))
    st = _assert_failed_for_disk(run, out, 1, "checkpoint-2")
    assert f"filesystem at {small_disk}" in st["message"]
    assert f"workbench resume {run.name}" in out  # the remedy reaches the terminal
    events = [json.loads(x) for x in run.events_path.read_text().splitlines()]
    assert events[-1]["type"] == "status" and events[-1]["state"] == "failed"

    # free space (here: the filesystem grows), then resume finishes the run
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    proc = workbench("resume", run.name, "--runs-dir", str(small_disk / "runs"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "resuming from checkpoint-2" in proc.stdout
    assert run.read_status()["state"] == "finished"


def test_resume_says_when_the_space_freed_is_not_enough(tmp_path):
    from workbench.train.diskspace import folder_bytes, resume_check

    run = RunDir.create(tmp_path / "runs", "demo")
    assert resume_check(run).level == "ok"  # nothing to size it by yet
    ckpt = run.checkpoints_dir / "checkpoint-2"
    ckpt.mkdir()
    (ckpt / "trainer_state.json").write_text("{}")
    (ckpt / "adapter_model.safetensors").write_bytes(b"\0" * 300_000)
    (ckpt / "optimizer.pt").write_bytes(b"\0" * 600_000)
    need = folder_bytes(ckpt) + 300_000 + diskspace.REPORT_BYTES
    short = resume_check(run, free=lambda path: need - 1)
    assert short.level == "refuse" and "the next checkpoint" in short.text()
    assert resume_check(run, free=lambda path: need * 2).level == "ok"
