"""Issue 26, report.md: the loss chart's axis runs to the run's last step, the step table holds
every evaluation (the final one included), and the verdict's pointer to perplexity does not read
as a comparison."""

from __future__ import annotations

from workbench.evaluate import report
from workbench.profile import load_profile
from workbench.rundir import RunDir


def _run(tmp_path) -> RunDir:
    """A finished run's folder as the runner leaves it: loss every 10 steps up to 270, evals
    every 50 steps, and the final evaluation at the last step (272)."""
    run = RunDir.create(tmp_path, "demo")
    run.write_status(state="finished", step=272, total_steps=272, device="cpu", train_seconds=60.0)
    for step in range(10, 271, 10):
        run.append_event("log", step=step, loss=2.0 - step / 300)
    for step in (50, 100, 150, 200, 250, 272):
        run.append_event("eval", step=step, eval_loss=1.5 - step / 1000)
    return run


def test_report_loss_chart_and_table_reach_the_last_step(tmp_path):
    run = _run(tmp_path)
    text, _ = report.build(run, load_profile("demo"), {"test": {}})
    curve = text[text.index("## Loss curve"):text.index("## Training time")]
    assert "step 272" in curve.split("```")[1]  # the chart's axis ends at the run's last step
    table = [line for line in curve.splitlines() if line.startswith("| ") and "step" not in line]
    steps = [int(line.split("|")[1]) for line in table]
    assert steps == sorted(steps) and steps[-1] == 272
    assert "| 272 |  | 1.2280 |" in curve  # the final evaluation, with no training loss logged there
    for step in (50, 100, 150, 200, 250):  # every evaluation has its row
        assert any(line.startswith(f"| {step} |") and line.rstrip(" |").endswith(f"{1.5 - step / 1000:.4f}")
                   for line in table), step


def test_report_points_to_perplexity_without_comparing(tmp_path):
    result = {"test": {"primary": {"metric": "token_f1", "why": "the references are short answers"},
                       "verdict": {"text": "fine-tuned beats few-shot", "lines": ["x"]}}}
    text, _ = report.build(_run(tmp_path), load_profile("demo"), result)
    verdict = text[text.index("## Verdict"):text.index("## Metrics")]
    assert "decided on token_f1" in verdict
    assert "is below" not in verdict  # read as "perplexity is below (something)"
    assert "Perplexity section" in verdict
