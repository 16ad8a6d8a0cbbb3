"""Sweep definitions: --grid / --range / paired axes / the [sweep] section, the memory check
before anything runs, and the user errors (no traceback, a did-you-mean)."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.cli import main
from workbench.profile import ProfileError, load_profile
from workbench.sweep.definition import (SweepDefinitionError, build_definition, overrides_for,
                                        parse_grid, parse_range, short_label, split_values)

DEMO = Path(__file__).resolve().parent.parent / "profiles" / "demo.toml"


@pytest.fixture
def demo():
    return load_profile(DEMO)


def test_grid_is_the_product_of_its_axes_in_the_order_typed(demo):
    d = build_definition(demo, ["lora.r=4,16", "train.learning_rate=5e-4,2e-3"], [], None, None, None)
    points = d.grid_points()
    assert len(points) == 4
    assert [overrides_for(d, p) for p in points][:2] == [
        ["lora.r=4", "train.learning_rate=5e-4"], ["lora.r=4", "train.learning_rate=2e-3"]]
    assert short_label(overrides_for(d, points[1])) == "r=4 learning_rate=0.002"
    assert not d.sampled and d.prune


def test_paired_axes_change_together(demo):
    d = build_definition(demo, ["lora.r+lora.alpha=8+16,16+32"], [], None, None, None)
    assert [overrides_for(d, p) for p in d.grid_points()] == [
        ["lora.r=8", "lora.alpha=16"], ["lora.r=16", "lora.alpha=32"]]
    with pytest.raises(SweepDefinitionError, match="paired keys"):
        parse_grid("lora.r+lora.alpha=8+16,32")


def test_list_values_and_target_aliases(demo):
    assert split_values('["q_proj","v_proj"],all-linear') == ['["q_proj","v_proj"]', "all-linear"]
    d = build_definition(demo, ["lora.target_modules=attention,all-linear"], [], None, None, None)
    profiles = [demo.with_overrides(overrides_for(d, p)) for p in d.grid_points()]
    assert profiles[0].lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert profiles[1].lora.target_modules == "all-linear"


def test_ranges_need_trials_and_sane_bounds(demo):
    r = parse_range("train.learning_rate=log:1e-5..1e-3")
    assert (r.kind, r.low, r.high) == ("log", 1e-5, 1e-3)
    for bad, message in [("train.learning_rate=log:0..1e-3", "LOW > 0"),
                         ("train.learning_rate=1e-3..1e-5", "below HIGH"),
                         ("train.learning_rate=exp:1..2", "KIND"),
                         ("lora.r=int:4.5..8", "whole bounds")]:
        with pytest.raises(SweepDefinitionError, match=message):
            parse_range(bad)
    with pytest.raises(SweepDefinitionError, match="--trials N"):
        build_definition(demo, [], ["train.learning_rate=log:1e-5..1e-3"], None, None, None)
    d = build_definition(demo, ["lora.r=4,8"], ["train.learning_rate=log:1e-5..1e-3"], 5, None, None)
    assert d.sampled and d.trials == 5


def test_bad_axes_are_reported_together_with_did_you_mean(demo):
    with pytest.raises(SweepDefinitionError) as exc:
        build_definition(demo, ["lora.rr=4,8", "lora.target_modules=attention,allinear"], [], None,
                         None, None)
    text = str(exc.value)
    assert "did you mean 'r'?" in text and 'did you mean "all-linear"?' in text
    with pytest.raises(SweepDefinitionError, match="two axes"):
        build_definition(demo, ["lora.r=4,8", "lora.r+lora.alpha=4+8,8+16"], [], None, None, None)
    with pytest.raises(SweepDefinitionError, match="nothing to sweep"):
        build_definition(demo, [], [], None, None, None)


def test_sweep_section_in_a_profile(tmp_path, demo):
    path = tmp_path / "p.toml"
    path.write_text(DEMO.read_text().replace("../assets", str(DEMO.parent.parent / "assets"))
                    + '\n[sweep]\ngrid = { "lora.r+lora.alpha" = [[4, 8], [16, 32]], '
                      '"train.learning_rate" = [5e-4, 2e-3] }\nprune = false\n')
    profile = load_profile(path)
    d = build_definition(profile, [], [], None, None, None)
    assert len(d.grid_points()) == 4 and d.prune is False
    # The command line wins over the profile, axis by axis.
    d = build_definition(profile, ["train.learning_rate=1e-3"], [], None, None, None)
    assert len(d.grid_points()) == 2
    # The section survives the round trip through a run's profile.toml.
    assert profile.with_overrides([]).sweep == profile.sweep


def test_sweep_section_mistakes_name_line_and_suggest(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(DEMO.read_text().replace("../assets", str(DEMO.parent.parent / "assets"))
                    + '\n[sweep]\ngrid = { "lora.rank" = [4, 8] }\ntrails = 3\n')
    with pytest.raises(ProfileError) as exc:
        load_profile(path)
    text = str(exc.value)
    assert "'lora.rank' is not a profile key; did you mean 'lora.r'?" in text
    assert "sweep.trails: unknown key; did you mean 'trials'?" in text
    assert f"{path.name}:" in text or str(path) in text


def test_cli_refuses_configurations_that_will_not_fit_before_starting(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["sweep", str(DEMO), "--grid", "train.batch_size=4,4096", "--set", "budget.gpu=t4"])
    out, err = capsys.readouterr()
    assert code == 2
    assert "1 of 2 configurations fit" in out and "does not fit: batch_size=4096" in out
    assert "refused before starting" in err and "Traceback" not in err
    assert not (tmp_path / "sweeps").exists() and not (tmp_path / "runs").exists()


def test_cli_on_cpu_says_memory_cannot_be_checked_and_user_errors_are_clean(tmp_path, monkeypatch,
                                                                           capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", str(DEMO), "--grid", "lora.rr=4,8"]) == 2
    assert "did you mean 'r'?" in capsys.readouterr().err
    assert main(["sweep", "report", "nothing-here"]) == 2
    assert "no sweep 'nothing-here'" in capsys.readouterr().err
    assert main(["sweeps"]) == 0
    assert "no sweeps under" in capsys.readouterr().out
    from workbench.sweep.fit import check_fit

    from workbench.estimate.gpu import telemetry

    fit = check_fit([load_profile(DEMO)])
    if telemetry().available:  # a GPU machine checks against its own GPU
        assert fit.gpu is not None and fit.unfit == []
    else:
        assert fit.gpu is None and "cannot check memory" in fit.lines(["demo"])[0]


def test_study_samples_in_range_and_records_grid_points_exactly(tmp_path, demo):
    """The Optuna study in the sweep folder: sampled trials get values inside their ranges
    (written back as valid overrides); grid points are enqueued, so the study holds exactly
    the configuration that runs; a fresh process loads the same study from SQLite."""
    from workbench.sweep.engine import SweepRunner, _study, create_sweep

    d = build_definition(demo, ["lora.r=4,16"], ["train.learning_rate=log:1e-5..1e-3",
                                                 "train.grad_accum=int:1..8"], 3, None, None)
    sweep = create_sweep(demo, d, [], tmp_path / "runs", tmp_path / "sweeps", [])
    assert (sweep.path / "study.db").is_file() and sweep.read_trials()[0]["params"] is None
    runner = SweepRunner(sweep, say=lambda s: None)
    study = _study(sweep, runner.definition, create=False)
    for trial in runner.trials:
        runner._ask(study, trial)
        p = trial["params"]
        assert p["lora.r"] in ("4", "16") and 1e-5 <= p["train.learning_rate"] <= 1e-3
        assert 1 <= p["train.grad_accum"] <= 8 and isinstance(p["train.grad_accum"], int)
        profile = demo.with_overrides(trial["overrides"])
        assert profile.train.learning_rate == pytest.approx(p["train.learning_rate"])
    assert len(study.trials) == 3

    grid = build_definition(demo, ["lora.r+lora.alpha=4+8,16+32"], [], None, None, None)
    sweep = create_sweep(demo, grid, [], tmp_path / "runs", tmp_path / "sweeps", [])
    runner = SweepRunner(sweep, say=lambda s: None)
    study = _study(sweep, runner.definition, create=False)
    asked = [runner._ask(study, t) for t in runner.trials]
    assert [a.params for a in asked] == [{"lora.r+lora.alpha": "4+8"}, {"lora.r+lora.alpha": "16+32"}]
    assert runner.trials[1]["overrides"] == ["lora.r=16", "lora.alpha=32"]


def test_trials_carry_the_sweep_to_the_trackers(tmp_path, demo):
    """report_to trackers group a sweep's trials: W&B group, MLflow experiment and tags with
    the trial's parameters, one TensorBoard folder for the whole sweep; one GPU per slot."""
    import json as _json

    from workbench.sweep.engine import _trial_env, create_sweep

    d = build_definition(demo, ["lora.r=4,16"], [], None, None, None)
    sweep = create_sweep(demo, d, [], tmp_path / "runs", tmp_path / "sweeps", [])
    trial = sweep.read_trials()[1]
    env = _trial_env(sweep, trial, gpu=3)
    assert env["WANDB_RUN_GROUP"] == env["MLFLOW_EXPERIMENT_NAME"] == sweep.name
    assert _json.loads(env["MLFLOW_TAGS"])["sweep.lora.r"] == "16"
    assert env["TENSORBOARD_LOGGING_DIR"].startswith(str(sweep.path / "tensorboard"))
    assert env["CUDA_VISIBLE_DEVICES"] == "3"
    assert "CUDA_VISIBLE_DEVICES" not in _trial_env(sweep, trial, gpu=None) or \
        _trial_env(sweep, trial, gpu=None)["CUDA_VISIBLE_DEVICES"] == __import__("os").environ.get(
            "CUDA_VISIBLE_DEVICES")
