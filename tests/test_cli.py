"""The command line's fast paths (no training), the engine/app import rules, and the app."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from conftest import REPO, workbench
from workbench.cli import main
from workbench.rundir import RunDir


def test_profile_validate_ok_and_bad(tmp_path, capsys):
    assert main(["profile", "validate", "demo"]) == 0
    assert "ok" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\nname_or_path = "x"\n[data]\ntrain = "d.jsonl"\n[train]\nlerning_rate = 1\n')
    assert main(["profile", "validate", str(bad)]) == 2
    out = capsys.readouterr().out
    assert "bad.toml:6: train.lerning_rate" in out and "learning_rate" in out


def test_profile_validate_checks_the_files_a_run_needs(tmp_path, monkeypatch, capsys):
    """Paths resolve against the profile's folder, as `run` resolves them, whatever the
    current directory; missing ones are errors with their line."""
    folder = tmp_path / "profiles"
    folder.mkdir()
    profile = folder / "mine.toml"
    profile.write_text('[model]\nname_or_path = "../model"\n[data]\ntrain = "../train.jsonl"\n')
    monkeypatch.chdir(folder.parent.parent)
    assert main(["profile", "validate", str(profile)]) == 2
    out = capsys.readouterr().out
    assert out.startswith(f"invalid  {profile}")
    assert ":2: model.name_or_path: model folder not found" in out
    assert ":4: data.train: file not found" in out and "ok" not in out
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    (tmp_path / "train.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    assert main(["profile", "validate", str(profile)]) == 0
    assert capsys.readouterr().out == f"ok       {profile} (mine)\n"


def test_profile_validate_warns_about_an_uncached_hub_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    (tmp_path / "train.jsonl").write_text('{"instruction": "a", "output": "b"}\n')
    profile = tmp_path / "hub.toml"
    profile.write_text('[model]\nname_or_path = "someorg/not-cached"\n[data]\ntrain = "train.jsonl"\n')
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert main(["profile", "validate", str(profile)]) == 0  # a warning, not an error
    out = capsys.readouterr().out
    assert out.startswith(f"warning  {profile} (hub)\n")
    assert "hub.toml:2: model.name_or_path: 'someorg/not-cached' is not in the Hugging Face cache" in out
    assert str(tmp_path / "cache") in out and "`workbench run` downloads it, which needs a network" in out
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["profile", "validate", str(profile)]) == 0
    assert "with HF_HUB_OFFLINE=1 set, `workbench run` stops until it is downloaded" in capsys.readouterr().out


def test_profile_show_applies_overrides(capsys):
    assert main(["profile", "show", "demo", "--set", "lora.r=4"]) == 0
    out = capsys.readouterr().out
    assert "r = 4" in out and "[train]" in out


def test_profile_diff(capsys, tmp_path):
    assert main(["profile", "diff", "demo", "qwen2.5-0.5b-lora"]) == 0
    out = capsys.readouterr().out
    assert "model.name_or_path" in out


def test_profile_diff_between_runs(tmp_path, capsys, monkeypatch):
    from workbench.profile import load_profile, save_profile

    runs = []
    for r in (8, 4):
        run = RunDir.create(tmp_path, "demo")
        save_profile(load_profile("demo", [f"lora.r={r}"]), run.profile_path)
        run.write_status(state="finished")
        runs.append(run)
    assert main(["profile", "diff", str(runs[0].path), str(runs[1].path)]) == 0
    out = capsys.readouterr().out
    assert "lora.r" in out and "8" in out and "4" in out
    monkeypatch.chdir(tmp_path.parent)
    monkeypatch.setenv("WORKBENCH_RUNS_DIR", str(tmp_path))
    # "demo" is the preset, even with runs named demo-... around
    assert main(["profile", "diff", "demo", runs[1].name]) == 0
    assert "lora.r" in capsys.readouterr().out


def test_profile_list(capsys):
    assert main(["profile", "list"]) == 0
    assert "demo" in capsys.readouterr().out


def test_bad_override_is_an_error_without_traceback(capsys):
    assert main(["run", "demo", "--set", "train.batchsize=2"]) == 2
    err = capsys.readouterr().err
    assert "batch_size" in err and "Traceback" not in err


def test_runs_empty_and_unknown_run(tmp_path, capsys):
    assert main(["runs", "--runs-dir", str(tmp_path / "none")]) == 0
    assert "no runs" in capsys.readouterr().out
    assert main(["attach", "nope", "--runs-dir", str(tmp_path)]) == 2
    assert "no run 'nope'" in capsys.readouterr().err


def test_attach_without_a_run_and_nothing_running_lists_the_candidates(tmp_path, capsys):
    assert main(["attach", "--runs-dir", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no runs under {tmp_path / 'none'}/ to attach to")
    assert "usage:" not in err
    finished = RunDir.create(tmp_path, "demo")
    finished.write_status(state="finished", pid=None)
    gone = RunDir.create(tmp_path, "other")
    gone.write_status(state="running", pid=None)  # its process is gone: interrupted
    assert main(["attach", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: no run is running under {tmp_path}/")
    assert f"workbench attach {gone.name}" in err
    assert f"  {finished.name:<34} finished" in err and f"  {gone.name:<34} interrupted" in err


def test_attach_without_a_run_follows_the_newest_running_one(tmp_path, capsys):
    import os
    import threading

    older = RunDir.create(tmp_path, "aaa")
    older.write_status(state="running", pid=os.getpid(), created_at="2024-01-01T00:00:00")
    live = RunDir.create(tmp_path, "bbb")
    live.write_status(state="running", pid=os.getpid(), created_at="2024-01-02T00:00:00",
                      total_steps=2)
    newer = RunDir.create(tmp_path, "ccc")  # newest, but not running
    newer.write_status(state="finished", pid=None, created_at="2024-01-03T00:00:00")
    live.append_event("log", step=1, epoch=0.5, loss=2.0, learning_rate=1e-4, grad_norm=1.0,
                      tokens_per_s=10.0, gpu_mem_bytes=None, gpu_mem_peak_bytes=None, eta_s=1.0)

    def finish():  # the run ends while attach follows it
        live.append_event("status", state="finished", message="adapter saved")
        live.write_status(state="finished", step=2)

    timer = threading.Timer(1.0, finish)
    timer.start()
    try:
        assert main(["attach", "--runs-dir", str(tmp_path)]) == 0
    finally:
        timer.join()
    out = capsys.readouterr().out
    assert f"attaching to the newest running run, {live.name} (also running: {older.name})" in out
    assert f"attached to {live.name}" in out and "[finished]" in out


def test_attach_replays_a_finished_run(tmp_path, capsys):
    run = RunDir.create(tmp_path, "demo")
    run.write_status(state="running", pid=None, total_steps=2, step=0)
    for step, loss in ((1, 2.0), (2, 1.5)):
        run.append_event("log", step=step, epoch=step / 2, loss=loss, learning_rate=1e-4,
                         grad_norm=1.0, tokens_per_s=10.0, gpu_mem_bytes=None,
                         gpu_mem_peak_bytes=None, eta_s=0.0)
    run.append_event("status", state="finished", message="adapter saved")
    run.write_status(state="finished", step=2)
    assert main(["attach", run.name, "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "step 2/2" in out and "loss 1.5000" in out and "[finished]" in out


def test_engine_never_imports_textual_or_torch_at_import():
    code = (
        "import sys, workbench.cli, workbench.profile, workbench.rundir, "
        "workbench.train.control, workbench.pipeline.console, workbench.data, workbench.estimate.gpu\n"
        "bad = [m for m in ('textual', 'torch', 'transformers', 'trl', 'datasets') if m in sys.modules]\n"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_app_imports_without_torch():
    code = "import sys, screens.app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO)
    assert out.stdout.strip() == "False"


def test_runs_command_is_fast_and_correct(tmp_path):
    run = RunDir.create(tmp_path / "runs", "demo")
    run.write_status(state="stopped", step=3, total_steps=9, loss=1.25,
                     created_at="2026-11-28T00:00:00+00:00")
    proc = workbench("runs", "--runs-dir", "runs", cwd=tmp_path, check=True)
    assert run.name in proc.stdout and "stopped" in proc.stdout and "3/9" in proc.stdout
    rows = json.loads(workbench("runs", "--json", "--runs-dir", "runs", cwd=tmp_path).stdout)
    assert rows[0]["state"] == "stopped"


def test_app_lists_runs(tmp_path):
    from screens.app import WorkbenchApp
    from textual.widgets import DataTable

    run = RunDir.create(tmp_path, "demo")
    run.write_status(state="finished", step=5, total_steps=5, loss=0.5)

    async def drive():
        app = WorkbenchApp(runs_dir=tmp_path)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause()
            table = app.query_one("#runs", DataTable)
            assert table.row_count == 1
            assert "finished" in [str(c) for c in table.get_row_at(0)]
            await pilot.press("q")

    asyncio.run(drive())  # pytest-asyncio is not a dependency
