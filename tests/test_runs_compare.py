"""`workbench runs compare` on run folders of different profiles: what differs, the ranking by
quality per device-hour, the recommendation, a single run, and mistakes. The run folders are
written in the run-directory format (profile.toml, status.json, events.jsonl, report.json),
as the runner writes them; the end-to-end sweep test compares real trained runs."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from workbench.cli import main
from workbench.profile import load_profile, save_profile
from workbench.sweep.compare import compare_runs, format_comparison, svg_plot
from workbench.rundir import RunDir, write_json_atomic

DEMO = Path(__file__).resolve().parent.parent / "profiles" / "demo.toml"


def make_run(runs: Path, name: str, overrides: list[str], *, seconds: float, eval_loss: float,
             metric: tuple[str, float] | None, device: str = "cpu", state: str = "finished") -> RunDir:
    profile = load_profile(DEMO, overrides)
    run = RunDir.create(runs, name)
    save_profile(profile, run.profile_path)
    run.write_status(state=state, pid=None, created_at="2026-11-29T10:00:00+00:00",
                     started_at="2026-11-29T10:00:00+00:00",
                     ended_at=f"2026-11-29T10:{int(seconds // 60):02d}:{int(seconds % 60):02d}+00:00"
                     if state == "finished" else None,
                     eval_loss=eval_loss, device=device, estimated_peak_bytes=700 * 2**20)
    t0 = datetime(2026, 11, 29, 10, 0, 0, tzinfo=timezone.utc).timestamp()
    events = [{"type": "status", "time": t0, "state": "running", "message": "loading model"}]
    for step, loss in ((1, 2.5), (10, 1.5), (20, eval_loss + 0.1)):
        events.append({"type": "log", "time": t0 + seconds * step / 25, "step": step, "loss": loss,
                       "tokens_per_s": 1000.0 + step})
    events.append({"type": "eval", "time": t0 + seconds * 0.9, "step": 20, "epoch": 1.0,
                   "eval_loss": eval_loss})
    if state != "running":
        events.append({"type": "status", "time": t0 + seconds, "state": state, "message": "done"})
    run.events_path.write_text("".join(json.dumps(e) + "\n" for e in events))
    if metric:
        name_, value = metric
        write_json_atomic(run.path / "report.json", {
            "verdict": f"fine-tuned beats base by {value:.0f}",
            "evaluation": {"test": {
                "primary": {"metric": name_},
                "metrics": {"base": {name_: 1.0}, "few-shot": {name_: 5.0}, "fine-tuned": {name_: value}},
                "perplexity": {"fine-tuned": {"answer_ppl": 1.5}}}}})
    return run


def test_different_profiles_say_what_differs_and_still_rank(tmp_path):
    runs = tmp_path / "runs"
    a = make_run(runs, "small", ["name=small", "lora.r=4"], seconds=60, eval_loss=0.6, metric=("exact_match", 88.0))
    b = make_run(runs, "big", ["name=big", "lora.r=64", "lora.alpha=128"], seconds=180, eval_loss=0.5,
                 metric=("exact_match", 90.0))
    c = compare_runs([a, b])
    assert set(c.differing_keys) >= {"name", "lora.r", "lora.alpha"}
    assert c.quality_name == "exact_match" and c.hour_unit == "CPU-hours"
    # Ranked by quality per hour: the small run is 3x cheaper for 98% of the quality.
    assert [r.name for r in c.rows] == [a.name, b.name]
    assert c.rows[0].quality_per_hour == pytest.approx(88.0 / (60 / 3600))
    assert "reaches 98% of the best exact_match at 33% of its cost" in c.recommendation
    text = format_comparison(c)
    assert "what differs: name, lora.r, lora.alpha" in text
    assert "CPU-hours" in text and "best run" in text and "base 1.0, few-shot 5.0, fine-tuned 90.0" in text
    assert svg_plot(c).count("<polyline") == 4  # loss and eval loss of each run


def test_different_models_and_metrics_fall_back_to_eval_loss(tmp_path):
    runs = tmp_path / "runs"
    other_model = tmp_path / "other-model"
    other_model.mkdir()
    a = make_run(runs, "a", [], seconds=60, eval_loss=0.7, metric=("exact_match", 80.0))
    b = make_run(runs, "b", [f"model.name_or_path={other_model}"], seconds=60, eval_loss=0.4,
                 metric=("token_f1", 95.0))
    c = compare_runs([a, b])
    assert "model.name_or_path" in c.differing_keys
    assert c.quality_name == "100/ppl"
    assert any("different task metrics" in n for n in c.notes)
    assert c.rows[0].name == b.name  # lower eval loss, same time
    assert "is the best" in c.recommendation


def test_unfinished_runs_are_listed_not_ranked(tmp_path):
    runs = tmp_path / "runs"
    a = make_run(runs, "a", [], seconds=60, eval_loss=0.7, metric=None)
    b = make_run(runs, "b", ["lora.r=8"], seconds=60, eval_loss=0.4, metric=None, state="failed")
    c = compare_runs([a, b])
    assert [r.quality_per_hour is not None for r in c.rows] == [True, False]
    assert "the only finished run" in c.recommendation


def test_cli_single_run_says_so_and_mistakes_are_clean(tmp_path, capsys):
    runs = tmp_path / "runs"
    a = make_run(runs, "solo", [], seconds=90, eval_loss=0.5, metric=("exact_match", 70.0))
    assert main(["runs", "compare", a.name, "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "only one run" in out and "nothing to compare" in out and a.name in out
    assert main(["runs", "compare", "nope", "--runs-dir", str(runs)]) == 2
    assert "no run 'nope'" in capsys.readouterr().err
    assert main(["runs", "compare", "--runs-dir", str(runs)]) == 2
    assert "needs one or more runs" in capsys.readouterr().err
    assert main(["runs", "compare", a.name, a.name, "--runs-dir", str(runs)]) == 2
    assert "named twice" in capsys.readouterr().err
    # `workbench runs` itself is unchanged.
    assert main(["runs", "--runs-dir", str(runs)]) == 0
    assert a.name in capsys.readouterr().out


def test_cli_json_and_markdown_output(tmp_path, capsys):
    runs = tmp_path / "runs"
    a = make_run(runs, "a", [], seconds=60, eval_loss=0.7, metric=("exact_match", 80.0))
    b = make_run(runs, "b", ["train.learning_rate=2e-3"], seconds=120, eval_loss=0.4,
                 metric=("exact_match", 82.0))
    assert main(["runs", "compare", str(a.path), str(b.path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["differing_keys"] == ["train.learning_rate"]
    assert [r["name"] for r in data["runs"]] == [a.name, b.name]
    assert main(["runs", "compare", str(a.path), str(b.path), "--output", str(tmp_path / "cmp")]) == 0
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "**Recommendation:**" in md and "![loss curves](loss.svg)" in md
    assert (tmp_path / "cmp" / "loss.svg").is_file()


def test_hours_count_the_sessions_not_the_pause_between_them(tmp_path):
    """Stopped after 60 s, resumed a day later for 60 s more: two minutes, not a day."""
    from workbench.sweep.compare import read_row

    run = make_run(tmp_path / "runs", "paused", [], seconds=60, eval_loss=0.5, metric=None)
    t = json.loads(run.events_path.read_text().splitlines()[-1])["time"]
    with open(run.events_path, "a") as fh:
        for dt, ev in ((86400, {"type": "status", "state": "running", "message": "resuming"}),
                       (86430, {"type": "log", "step": 30, "loss": 0.4}),
                       (86460, {"type": "status", "state": "finished", "message": "done"})):
            fh.write(json.dumps({**ev, "time": t + dt}) + "\n")
    assert read_row(run).hours == pytest.approx(120 / 3600)
