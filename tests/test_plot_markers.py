"""Issue 26: the runs-comparison plot written to a pipe (no colour) tells runs apart by their
markers, and a wide terminal shows whole legend labels."""

from __future__ import annotations

import re

from workbench.sweep.compare import Comparison, RunRow, terminal_plot


def _marker(legend_line: str) -> str:
    """The marker a legend line starts with, after the y axis: "2.00┤ ++ label" -> "+"."""
    return re.match(r"^[^┤│]*[┤│]\s*(\S)", legend_line).group(1)


def _comparison() -> Comparison:
    rows = []
    for n, lr in enumerate(("0.0001", "0.0002", "0.0005")):
        row = RunRow(f"run-{n}", f"/runs/run-{n}", "finished",
                     differs={"train.learning_rate": lr, "lora.r": 16 * (n + 1),
                              "train.lr_scheduler_type": "cosine_with_min_lr",
                              "data.validation_split": 0.05})
        row.loss_curve = [(s, 2.0 - s / 100 * (n + 1) / 3) for s in range(0, 101, 10)]
        row.eval_curve = [(50, 1.6 - n / 10), (100, 1.4 - n / 10)]
        rows.append(row)
    return Comparison(rows, ["train.learning_rate", "lora.r"], "eval loss", "CPU-hours", "-")


def test_plot_in_a_pipe_gives_each_run_its_own_marker():
    text = terminal_plot(_comparison(), width=100, color=False)
    legend = [line for line in text.splitlines() if " loss" in line and "learning_rate" in line]
    markers = {_marker(line) for line in legend}
    assert len(legend) == 3 and len(markers) == 3, legend
    evals = [line for line in text.splitlines() if " eval" in line and "learning_rate" in line]
    assert len({_marker(line) for line in evals}) == 3, evals


def test_legend_labels_are_whole_at_160_columns():
    c = _comparison()
    text = terminal_plot(c, width=160, color=False)
    for row in c.rows:
        assert f"{row.label} loss" in text, row.label
