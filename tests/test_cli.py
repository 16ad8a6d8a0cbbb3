"""The command line's fast paths (no training), the engine/app import rules, and the app."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from conftest import REPO, workbench
from workbench.cli import main
from workbench.train.rundir import RunDir


def test_profile_validate_ok_and_bad(tmp_path, capsys):
    assert main(["profile", "validate", "demo"]) == 0
    assert "ok" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text('[model]\nname_or_path = "x"\n[data]\ntrain = "d.jsonl"\n[train]\nlerning_rate = 1\n')
    assert main(["profile", "validate", str(bad)]) == 2
    out = capsys.readouterr().out
    assert "bad.toml:6: train.lerning_rate" in out and "learning_rate" in out


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
        "import sys, workbench.cli, workbench.profile, workbench.train.rundir, "
        "workbench.train.control, workbench.train.console, workbench.data, workbench.estimate.gpu\n"
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
