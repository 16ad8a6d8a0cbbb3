"""Issue 26, "hints that work": every hint a command prints names something that works, and the
command line behaves as a Unix tool (a closed pipe is not a traceback)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomllib
from conftest import DEMO_DATA, REPO, TINY_MODEL

from workbench.cli import main

DEMO_PROFILE = REPO / "profiles" / "demo.toml"


def _bad_row_data(tmp_path: Path) -> Path:
    """The demo data with one broken JSON line (line 6)."""
    lines = DEMO_DATA.read_text(encoding="utf-8").splitlines()[:40]
    lines.insert(5, '{"instruction": "x", bad')
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# ---- a bad row: the hint's flag is one `run` accepts ----------------------------------------

def test_a_bad_row_hint_names_a_flag_that_run_accepts(tmp_path, capsys):
    data = _bad_row_data(tmp_path)
    base = ["run", str(DEMO_PROFILE), "--runs-dir", str(tmp_path / "runs"),
            "--set", f"data.train={data}"]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:6:" in err and "--skip-bad-rows" in err
    # The flag the hint names is one `run` takes: the same as data.on_bad_rows = "skip".
    from workbench.cli import build_parser

    args = build_parser().parse_args(base + ["--skip-bad-rows"])
    assert "data.on_bad_rows=skip" in args.overrides
    assert main(["profile", "show", str(DEMO_PROFILE), "--skip-bad-rows"]) == 0
    assert 'on_bad_rows = "skip"' in capsys.readouterr().out


# ---- `profile show --set` says what it applied ------------------------------------------------

def test_profile_show_says_which_overrides_it_applied(capsys):
    assert main(["profile", "show", "demo", "--set", "train.max_steps=20"]) == 0
    out = capsys.readouterr().out
    assert "# with --set train.max_steps=20" in out
    assert main(["profile", "show", "demo"]) == 0
    assert "--set" not in capsys.readouterr().out


# ---- a closed pipe (`workbench runs | head -3`) ends quietly -----------------------------------

@pytest.mark.parametrize("args", [["runs"], ["profile", "list"], ["--help"]])
def test_a_closed_pipe_is_no_traceback(tmp_path, args):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "-m", "workbench", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the command writes a line, as after `head`
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err


# ---- `python -m workbench.export.llamacpp --help` prints help, builds nothing -----------------

def test_llamacpp_help_prints_help_and_starts_nothing(tmp_path):
    env = dict(os.environ, WORKBENCH_CACHE=str(tmp_path / "cache"), PIP_NO_INDEX="1")
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "workbench.export.llamacpp", "--help"],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout and "workbench export" in proc.stdout
    assert not (tmp_path / "cache").exists()  # nothing fetched, nothing unpacked
    assert time.monotonic() - start < 60


def test_llamacpp_setup_ends_by_saying_what_to_do_next(monkeypatch, tmp_path):
    from workbench.export import llamacpp

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    tree = tmp_path / f"llama-cpp-python-{llamacpp.VERSION}" / "vendor" / "llama.cpp"
    tree.mkdir(parents=True)
    (tree / llamacpp.SCRIPT).write_text("# the converter\n")
    monkeypatch.setattr(llamacpp, "have_runtime", lambda: True)
    installed: list[tuple] = []
    monkeypatch.setattr(llamacpp, "_pip", lambda *a: installed.append(a))
    said: list[str] = []
    llamacpp.setup(log=said.append)
    assert installed  # the converter's requirements
    assert "next:" in said[-1] and "--format gguf" in said[-1]


# ---- pyproject: no setuptools deprecation box in `make demo` ---------------------------------

def test_pyproject_license_raises_no_setuptools_deprecation():
    import warnings

    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        apply_configuration(Distribution(), str(REPO / "pyproject.toml"))
    assert not [w for w in caught if "license" in str(w.message)], [str(w.message)[:200] for w in caught]
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    # A string license (SPDX) needs setuptools 77; an older one would fail to build.
    assert any(re.fullmatch(r"setuptools>=(\d+)", r) and int(r.split(">=")[1]) >= 77 for r in requires)


# ---- the README's preset table says what the presets are -------------------------------------

def test_readme_preset_table_matches_the_profiles():
    from workbench.profile import list_profiles, load_profile, shipped_profiles_dir

    text = (REPO / "README.md").read_text(encoding="utf-8")
    table = text[text.index("| preset |"):]
    rows = {}
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells
    shipped = {n: p for n, p in list_profiles([shipped_profiles_dir()]).items()}
    assert set(rows) == set(shipped)
    for name, (_, model, training, targets, precision) in rows.items():
        p = load_profile(shipped[name])
        if p.model.name_or_path == str(TINY_MODEL):
            assert "assets/tiny-model" in model or "tiny Llama" in model, name
        else:
            assert p.model.name_or_path in model, name
        assert p.train.method.upper() in training, name
        assert ("QLoRA" in training) == (p.lora.method == "qlora"), name
        assert f"r {p.lora.r}" in training, name
        if p.lora.target_modules == "all-linear":
            assert targets == "all linear layers", name
        else:
            assert targets.startswith("attention projections"), name
            assert p.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"], name
        assert precision.split(",")[0].split(" (")[0] == p.train.precision, name
        assert (", CPU" in precision) == (p.train.device == "cpu"), name


# ---- a mistyped local model path is a missing folder, not a hub id -----------------------------

def test_a_mistyped_local_model_path_is_a_missing_folder(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert main(["profile", "validate", "demo", "--set", "model.name_or_path=assets/tiny-modle"]) == 2
    out = capsys.readouterr().out
    assert "invalid" in out and "hf download" not in out
    assert "model folder not found" in out and "did you mean" in out
    assert str(TINY_MODEL) in out  # the closest existing folder
    assert main(["data", "inspect", str(DEMO_DATA), "--model", "assets/tiny-modle"]) == 2
    err = capsys.readouterr().err
    assert "hf download" not in err and "no such folder" in err
    assert "did you mean assets/tiny-model?" in err


def test_a_hub_id_stays_a_hub_id(monkeypatch, tmp_path):
    from workbench.hub import mistyped_local

    monkeypatch.chdir(tmp_path)
    assert mistyped_local("meta-llama/Llama-3.1-8B") is None  # no folder meta-llama here
    (tmp_path / "meta-llama").mkdir()
    assert mistyped_local("meta-llama/Llama-3.1-8B") is None  # nothing alike in it
    (tmp_path / "meta-llama" / "Llama-3.1-8b").mkdir()
    assert mistyped_local("meta-llama/Llama-3.1-8B") == tmp_path / "meta-llama" / "Llama-3.1-8b"


def test_a_set_path_is_said_relative_to_the_current_folder(monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(DEMO_PROFILE), "--set", "data.train=nope.jsonl",
                 "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nope.jsonl") in err
    assert "relative to the current folder" in err and "profile's folder" not in err
    hint = err.split("hint:", 1)[1]
    assert "--set data.train=PATH" in hint and "model.name_or_path" not in hint


# ---- estimate: an uncounted dataset is not priced as one step an epoch -------------------------

def test_estimate_without_data_prices_no_run(capsys):
    # A hub model with no data counted: the step is timed, the run is neither timed nor priced
    # (it once read "$0.01 to fine-tune Llama 8B": one step an epoch), and the text says why.
    assert main(["estimate", "--model", "meta-llama/Llama-3.1-8B", "--gpu", "l4"]) == 0
    out = capsys.readouterr().out
    assert "not timed or priced" in out and "--dataset-tokens" in out
    assert "$" not in out
