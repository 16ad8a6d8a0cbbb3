"""report.md / report.json / loss.svg of a sweep: the comparison of its trials' runs, with each
trial's sweep state (a pruned trial's run reads "pruned" too: RunDir.shown_state) and the
trials that never got a run (failed while planning) listed with their reason."""

from __future__ import annotations

from pathlib import Path

from workbench.sweep.compare import Comparison, compare_runs, markdown, svg_plot
from workbench.sweep.folder import SweepDir
from workbench.rundir import RunDir, write_json_atomic, write_text_atomic


def sweep_comparison(sweep: SweepDir) -> Comparison | None:
    trials = sweep.read_trials()
    with_runs = [t for t in trials if t.get("run") and Path(t["run"], "status.json").is_file()]
    if not with_runs:
        return None
    c = compare_runs([RunDir(Path(t["run"])) for t in with_runs])
    by_path = {str(Path(t["run"])): t for t in with_runs}
    for row in c.rows:
        t = by_path.get(row.path)
        if t and t["state"] in ("pruned", "failed", "pending", "stopped"):
            row.state = t["state"]
            row.note = t.get("reason") or ""
    for t in trials:
        if t["state"] == "failed":
            c.notes.append(f"trial {t['index'] + 1} ({t.get('label')}) failed: {t.get('reason')}")
        elif t["state"] == "pruned":
            c.notes.append(f"trial {t['index'] + 1} ({t.get('label')}) {t.get('reason')}")
    pending = [t for t in trials if t["state"] in ("pending", "running", "stopped")]
    if pending:
        c.notes.append(f"{len(pending)} trial(s) not finished yet: "
                       f"`workbench sweep resume {sweep.name}` continues them")
    return c


def write_sweep_report(sweep: SweepDir) -> Comparison | None:
    c = sweep_comparison(sweep)
    if c is None:
        write_text_atomic(sweep.path / "report.md", f"# Sweep {sweep.name}\n\nNo trial has a run yet.\n")
        return None
    svg = svg_plot(c)
    if svg:
        write_text_atomic(sweep.path / "loss.svg", svg)
    definition = sweep.read_definition()
    head = markdown(c, f"Sweep {sweep.name}", "loss.svg" if svg else None)
    done = sum(t["state"] in ("finished", "failed", "pruned") for t in sweep.read_trials())
    extra = [f"Profile `{definition.get('profile')}`; {done} of {len(sweep.read_trials())} trials "
             f"done; " + "; ".join(definition.get("memory_check") or ["-"]), ""]
    lines = head.split("\n")
    write_text_atomic(sweep.path / "report.md", "\n".join(lines[:2] + extra + lines[2:]))
    write_json_atomic(sweep.path / "report.json", {"sweep": sweep.name, **c.to_dict()})
    return c
