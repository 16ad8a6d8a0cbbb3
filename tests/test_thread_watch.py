"""Issue 25: a run's CPU thread count no longer hangs on one fifth of a second at start.
The start sample is a median of slices (a moment's load elsewhere does not count), and a CPU
run looks again while it trains (ThreadWatch), following the load both ways."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerControl, TrainerState, TrainingArguments

from workbench.train import threads


@pytest.fixture
def torch_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def fake_samples(monkeypatch, points):
    """/proc/stat as a sequence of (machine busy s, own CPU s, time s) samples."""
    now = threads.time.monotonic() - 1000.0  # in the past: every interval has passed
    it = iter([(busy, own, now + t) for busy, own, t in points])
    monkeypatch.setattr(threads, "_sample", lambda: next(it))
    monkeypatch.setattr(threads.time, "sleep", lambda s: None)


def test_a_moments_load_elsewhere_does_not_take_a_thread(monkeypatch):
    # Four 0.1 s slices on 2 cores, this process idle: another process kept both cores busy
    # during one slice only (a shell command), nothing in the others.
    fake_samples(monkeypatch, [(0.0, 0.0, 0.0), (0.0, 0.0, 0.1), (0.2, 0.0, 0.2),
                               (0.2, 0.0, 0.3), (0.2, 0.0, 0.4)])
    load = threads.busy_elsewhere()
    assert load == 0.0
    assert threads.choose_threads(2, load) == 2


def test_a_process_busy_all_along_still_counts(monkeypatch):
    # One core busy elsewhere in every slice, this process using the other one.
    fake_samples(monkeypatch, [(0.0, 0.0, 0.0), (0.2, 0.1, 0.1), (0.4, 0.2, 0.2),
                               (0.6, 0.3, 0.3), (0.8, 0.4, 0.4)])
    load = threads.busy_elsewhere()
    assert load == pytest.approx(1.0)
    assert threads.choose_threads(2, load) == 1


def test_the_watch_follows_the_load_both_ways(monkeypatch, torch_threads):
    monkeypatch.delenv("WORKBENCH_CPU_THREADS", raising=False)
    monkeypatch.setattr(threads, "_automatic", True)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    # start; 30 s with another process on one core (this one on the other: 30 s of its own);
    # 30 s more with the other process gone.
    fake_samples(monkeypatch, [(0.0, 0.0, 0.0), (60.0, 30.0, 30.0), (90.0, 60.0, 60.0)])
    torch.set_num_threads(2)
    watch = threads.ThreadWatch(every_s=0.0)
    line = watch.check()
    assert torch.get_num_threads() == 1
    assert line.startswith("cpu: torch now uses 1 thread instead of 2") and "load 1.0" in line
    line = watch.check()
    assert torch.get_num_threads() == 2
    assert line.startswith("cpu: torch now uses 2 threads instead of 1")


def test_the_watch_waits_its_interval_and_leaves_a_chosen_count_alone(monkeypatch, torch_threads):
    monkeypatch.setattr(threads, "_automatic", True)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    fake_samples(monkeypatch, [(0.0, 0.0, 0.0)])
    torch.set_num_threads(2)
    assert threads.ThreadWatch(every_s=3600.0).check() is None  # not yet: no sample taken
    monkeypatch.setenv("WORKBENCH_CPU_THREADS", "2")  # the person's choice: never changed
    assert threads.ThreadWatch(every_s=0.0).check() is None
    monkeypatch.delenv("WORKBENCH_CPU_THREADS")
    monkeypatch.setattr(threads, "_automatic", False)  # not sized by the workbench (a test, a
    assert threads.ThreadWatch(every_s=0.0).check() is None  # library caller): left alone


def test_the_real_sample_is_sane():
    a = threads._sample()
    b = threads._sample()
    assert b[2] >= a[2] and b[0] >= a[0] and b[1] >= a[1]
    assert 0.0 <= threads.busy_elsewhere(sample_s=0.04, slices=2) <= threads.usable_cores() * 4


def test_the_recorder_writes_a_change_into_the_run_log(tmp_path, monkeypatch, torch_threads):
    from workbench.rundir import RunDir
    from workbench.train.trainer import RunRecorder, StopFlag

    monkeypatch.delenv("WORKBENCH_CPU_THREADS", raising=False)
    monkeypatch.setattr(threads, "_automatic", True)
    monkeypatch.setattr(threads, "usable_cores", lambda: 2)
    fake_samples(monkeypatch, [(0.0, 0.0, 0.0), (60.0, 30.0, 30.0)])
    torch.set_num_threads(2)
    run = RunDir(tmp_path / "run")
    run.path.mkdir(parents=True)
    recorder = RunRecorder(run, StopFlag())
    recorder.threads.every_s = 0.0
    state, control = TrainerState(), TrainerControl()
    state.global_step, state.max_steps = 1, 10
    args = TrainingArguments(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True)
    recorder.on_step_end(args, state, control)
    assert torch.get_num_threads() == 1
    assert "cpu: torch now uses 1 thread instead of 2" in run.log_path.read_text()
    assert RunRecorder(run, StopFlag(), device="cuda").threads is None  # GPU runs: untouched
