"""The end-of-run evaluation tells the truth (issue 12): the report names the metric it decided
on and why, the verdict carries its confidence interval, a time budget samples rows and says
so, and the held-out rows stay held out when training evaluates nothing along the way."""

from __future__ import annotations

import json

import pytest

from test_export_support import make_run


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    from workbench.evaluate.compare import ComparisonEngine
    from workbench.evaluate.evaluation import evaluate_run
    from workbench.profile import load_profile

    run = make_run(tmp_path_factory.mktemp("runs"))
    profile = load_profile(run.profile_path)
    engine = ComparisonEngine.from_run(run, profile, device="cpu")
    logged = []
    result = evaluate_run(run, engine=engine, profile=profile, max_test_rows=40, max_new_tokens=4,
                          shots=1, time_budget_s=0.001, log=logged.append)
    return run, result, logged


def test_report_names_the_metric_and_the_interval(evaluated):
    run, result, logged = evaluated
    test = result["test"]
    # the demo's references are translations of 3-6 words: short answers
    assert test["primary"]["metric"] == "token_f1" and "short answers" in test["primary"]["why"]
    assert set(next(iter(test["metrics"].values()))) == {"exact_match", "token_f1"}
    md = (run.path / "report.md").read_text()
    assert "decided on token_f1: the references are short answers" in md
    assert "95% CI" in md and "paired bootstrap" in md
    data = json.loads((run.path / "report.json").read_text())
    comparisons = data["evaluation"]["test"]["verdict"]["comparisons"]
    assert [c["b"] for c in comparisons] == ["few-shot", "base"]
    assert all(c["ci95"][0] <= c["delta"] <= c["ci95"][1] for c in comparisons)
    assert any(line.startswith("  primary metric: token_f1") for line in logged)


def test_time_budget_samples_rows_and_says_so(evaluated):
    run, result, logged = evaluated
    test = result["test"]
    assert test["rows"] == 8  # the pilot's rows: nothing more fits in 1 ms
    assert any("eval.time_budget_s = 0.001: scored a seeded sample of 8" in n for n in test["notes"])
    assert any("time budget" in line for line in logged)


def test_held_out_rows_stay_held_out_without_evaluation_during_training(needs_tiny_model):
    from workbench.profile import load_profile
    from workbench.train.plan import plan_run

    profile = load_profile("demo", ["train.eval_steps=0"])
    plan = plan_run(profile)
    assert plan.eval_rows and not plan.evaluates  # held out, not evaluated during training
    assert len(plan.train_rows) + len(plan.eval_rows) == 600
    assert any(n.startswith("evaluation after training: ") and "held-out rows x 3 systems" in n
               for n in plan.notes)
    off = plan_run(load_profile("demo", ["eval.after_training=false"]))
    assert "evaluation after training: skipped (eval.after_training = false)" in off.notes
