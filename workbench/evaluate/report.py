"""report.md and report.json in the run folder: the answer to "did fine-tuning pay off,
compared with prompting the base model well?", with the evidence. Both files are written
atomically (temporary file, then rename): a reader never sees half a report."""

from __future__ import annotations

import math
from pathlib import Path

from workbench.rundir import RunDir, write_json_atomic, write_text_atomic

SECTIONS = ("Verdict", "Metrics", "Perplexity", "Speed", "Side by side", "Loss curve",
            "Training time and cost", "Memory", "Settings")
PREFERENCE_SECTION = "Preference"  # after the Verdict, in a preference run's report only
REWARDS_SECTION = "Rewards"  # after the Verdict, in a rewards (GRPO) run's report only


def verdict(result: dict) -> str:
    """The verdict line of an evaluation result (evaluation.py computes it with its
    confidence interval; see verdict.py). A preference run's is preference.py's: did the
    model move toward the data's preferences. A rewards run's is rewards_eval.py's: did RL
    move the held-out rewards, and what did it cost in answer length. A raw-text run's is
    text_perplexity.py's: did the perplexity on held-out text fall."""
    text = (result.get("text") or {}).get("verdict")
    if text:
        return text["text"]
    rewards = (result.get("rewards") or {}).get("verdict")
    if rewards:
        return rewards["text"]
    preference = (result.get("preference") or {}).get("verdict")
    if preference:
        return preference["text"]
    judged = (result.get("test") or {}).get("verdict")
    return judged["text"] if judged else "no verdict: nothing to compare"


def _cell(text) -> str:
    return str("" if text is None else text).replace("|", "\\|").replace("\n", " ")


def _fmt_bytes(n) -> str:
    return "n/a" if not n else f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def ascii_chart(points: list[tuple[int, float]], width: int = 60, height: int = 10,
                last_step: int | None = None) -> list[str]:
    """A loss curve drawn with characters: readable in a terminal, a diff and an SSH session.
    `last_step`: the run's last step, where the axis ends even when the loss was last logged
    before it (logging every 10 steps of 272 ends at 270)."""
    if len(points) < 2:
        return []
    steps = [p[0] for p in points]
    vals = [p[1] for p in points if math.isfinite(p[1])]
    lo, hi = min(vals), max(vals)
    span = (hi - lo) or 1.0
    grid = [[" "] * width for _ in range(height)]
    s0, s1 = steps[0], max(steps[-1], last_step or 0) or 1
    for step, v in points:
        if not math.isfinite(v):
            continue
        x = int((step - s0) / ((s1 - s0) or 1) * (width - 1))
        y = int((hi - v) / span * (height - 1))
        grid[y][x] = "*"
    lines = [f"{hi:8.3f} |" + "".join(grid[0])]
    lines += ["         |" + "".join(r) for r in grid[1:-1]]
    lines.append(f"{lo:8.3f} |" + "".join(grid[-1]))
    lines.append("         +" + "-" * width)
    lines.append(f"          step {s0}" + " " * max(1, width - 12 - len(str(s1))) + f"step {s1}")
    return lines


def training_facts(run: RunDir, profile, state: str | None = None) -> dict:
    """`state` overrides status.json's: the runner writes the report just before it marks
    the run finished, and a report that says "running" forever would be wrong."""
    status = run.read_status()
    events, _ = run.read_events()
    losses = [(e["step"], e["loss"]) for e in events if e.get("type") == "log" and e.get("loss") is not None]
    evals = [(e["step"], e["eval_loss"]) for e in events if e.get("type") == "eval"]
    secs = status.get("train_seconds")
    if secs is None and losses:
        # At the end of training the runner has not written train_seconds yet: the time from
        # the run's start to its last logged step is the same figure to a second.
        secs = _since_start(status.get("started_at"), events)
    rate = profile.budget.gpu_hourly_usd
    on_cpu = status.get("device") == "cpu"
    estimated = status.get("estimated_peak_bytes")
    if estimated is None and not on_cpu:
        estimated = _estimate(profile)
    return {
        "state": state or run.effective_state(status),
        "steps": status.get("step"), "total_steps": status.get("total_steps"),
        "train_seconds": secs, "gpu_hourly_usd": rate,
        "cost_usd": round(secs / 3600 * rate, 4) if secs is not None else None,
        "device": status.get("device"),
        "peak_memory": {"estimated_bytes": estimated, "measured_bytes": status.get("peak_gpu_mem_bytes"),
                        "note": "n/a (CPU run)" if on_cpu else ""},
        "loss": losses, "eval_loss": evals,
    }


def _since_start(started_at: str | None, events: list[dict]) -> float | None:
    from datetime import datetime

    last = [e["time"] for e in events if e.get("type") == "log" and e.get("time")]
    if not started_at or not last:
        return None
    try:
        return round(last[-1] - datetime.fromisoformat(started_at).timestamp(), 1)
    except ValueError:
        return None


def _estimate(profile) -> int | None:
    try:
        from workbench.estimate.config import load_model_config
        from workbench.estimate.memory import EstimateSettings, estimate

        config, _ = load_model_config(profile.model.name_or_path, profile.model.revision)
        return estimate(config, EstimateSettings.from_profile(profile)).peak_bytes
    except Exception:  # an estimate is advice; a model it does not know leaves "n/a"
        return None


def build(run: RunDir, profile, result: dict, state: str | None = None) -> tuple[str, dict]:
    facts = training_facts(run, profile, state)
    test = result.get("test", {})
    metrics = test.get("metrics", {})
    metric_names = list(next(iter(metrics.values()), {}))
    data = {"run": run.name, "profile": profile.name, "verdict": verdict(result),
            "evaluation": result, "training": facts}
    L = [f"# Run report: {run.name}", "",
         f"profile `{profile.name}`, model `{profile.model.name_or_path}`, "
         f"{profile.lora.method} r={profile.lora.r}; state {facts['state']}, "
         f"step {facts['steps']}/{facts['total_steps']}", ""]
    L += ["## Verdict", "", f"**{data['verdict']}**", ""]
    judged, primary = test.get("verdict") or {}, test.get("primary") or {}
    preference = result.get("preference")
    rewards = result.get("rewards")
    text = result.get("text")
    if text:
        L += ["- decided on perplexity on held-out text (documents never trained on, packed as "
              "training packs them), fine-tuned (adapter on) against base (adapter off); paired "
              "bootstrap over the blocks: it fell only when the 95% interval of the change lies "
              "below 0; see Perplexity", ""]
    elif rewards:
        L += _rewards_verdict_lines(rewards)
        L += [f"## {REWARDS_SECTION}", ""] + _rewards_lines(rewards)
    elif preference:
        L += _preference_verdict_lines(preference, judged, primary)
        L += [f"## {PREFERENCE_SECTION}", ""] + _preference_lines(preference)
    else:
        if primary:
            L.append(f"- decided on {primary['metric']}: {primary['why']} (`eval.metric` chooses "
                     "another); answer-token perplexity is in the Perplexity section")
        L += [f"- {line}" for line in judged.get("lines", [])[1:]]
        if primary:
            L += ["- paired bootstrap over the test rows (2,000 resamples): a system beats another "
                  "only when the 95% interval excludes zero", ""]

    L += ["## Metrics", ""]
    if metrics:
        L.append(f"test split: {test['rows']} rows from {test['source']}; 0-100, higher is better; "
                 f"few-shot k={result['fewshot']['k']} ({result['fewshot']['selection']}, train split only)")
        L += [""] + [f"- note: {n}" for n in test.get("notes", [])] + [""]
        systems = list(metrics)
        head = "| metric | " + " | ".join(systems) + " | fine-tuned vs base | fine-tuned vs few-shot |"
        L += [head, "|" + "---|" * (len(systems) + 3)]
        for m in metric_names:
            vals = {s: metrics[s].get(m) for s in systems}
            d_base = _delta(vals.get("fine-tuned"), vals.get("base"))
            d_few = _delta(vals.get("fine-tuned"), vals.get("few-shot"))
            L.append(f"| {m} | " + " | ".join(f"{vals[s]:.1f}" for s in systems) + f" | {d_base} | {d_few} |")
    elif text:
        L.append("no test-split metrics: a raw-text (continued pretraining) run is scored by "
                 "perplexity on held-out text (see Perplexity)")
    elif rewards:
        L.append(f"no test-split metrics: a {rewards.get('title', 'rewards')} run is scored by its "
                 f"reward functions on held-out prompts (see {REWARDS_SECTION})")
    else:
        L.append("no test-split metrics in this report")
    L.append("")

    ppl = test.get("perplexity", {})
    if ppl or not rewards:  # a rewards (GRPO) run scores no perplexity: no empty section
        L += ["## Perplexity", ""]
    if text:
        from workbench.evaluate.text_perplexity import report_lines

        L += report_lines(text)
    elif ppl:
        L += ["token-weighted over the test split; lower is better", "",
              "| system | answer tokens ppl | all tokens ppl | answer tokens | all tokens |",
              "|---|---|---|---|---|"]
        L += [f"| {s} | {p['answer_ppl']:.3f} | {p['all_ppl']:.3f} | {p['answer_tokens']} | {p['all_tokens']} |"
              for s, p in ppl.items()]
        if result.get("checkpoints"):
            L += ["", "by checkpoint (fine-tuned adapter at each step):", "",
                  "| step | answer ppl | all ppl |", "|---|---|---|"]
            L += [f"| {c['step']} | {c['answer_ppl']:.3f} | {c['all_ppl']:.3f} |" for c in result["checkpoints"]]
    L.append("")

    L += ["## Speed", ""]
    if text:  # nothing generated: the perplexity passes are the whole evaluation
        L += ["nothing generated: a raw-text run is scored by perplexity alone", ""]
    else:
        L += ["rows sorted by prompt length into batched generate calls, few-shot rows in calls "
              "of their own, base and fine-tuned rows sharing calls (per-row adapter selection); "
              "a system's latency is summed over its calls, each until its last row in it "
              "stopped", "", "| system | tokens | latency s | tokens/s |", "|---|---|---|---|"]
    timing = dict(test.get("timing", {}))
    if rewards and not timing:  # a rewards run's answers: greedy, then the samples
        timing = {f"{s} ({how})": t for how, by in (rewards.get("timing") or {}).items()
                  for s, t in by.items()}
    for s, t in timing.items():
        L.append(f"| {s} | {t['tokens']} | {t['latency_s']:.2f} | {t['tokens_per_s']:.1f} |")
    L.append("")

    L += ["## Side by side", ""]
    suite = result.get("suite")
    rows = suite["rows"] if suite else test.get("examples", [])[:20]
    if suite:
        from workbench.evaluate.suite import summary_line

        L += [f"prompt suite ({profile.eval.prompts}): " + summary_line(suite["summary"]), ""]
    elif rows:
        L += [f"first {len(rows)} test rows", ""]
    elif rewards:
        L.append(f"the held-out prompts' answers are in {REWARDS_SECTION}, with their rewards")
    elif text:
        L.append("no answers to compare: raw text has no prompts (see Perplexity)")
    names = list(rows[0]["answers"]) if rows else []
    if rows:
        L += ["| prompt | reference | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 2)]
        L += [f"| {_cell(r['prompt'])} | {_cell(r['reference'])} | "
              + " | ".join(_cell(r["answers"][n]) for n in names) + " |" for r in rows]
    L.append("")

    L += ["## Loss curve", ""]
    if facts["loss"]:
        last = facts["steps"] if isinstance(facts["steps"], int) else None
        L += ["training loss by step:", "", "```"] + ascii_chart(facts["loss"], last_step=last)
        L += ["```", ""]
        L += ["| step | loss | eval loss |", "|---|---|---|"]
        evals = dict(facts["eval_loss"])
        losses = dict(facts["loss"])
        shown = facts["loss"][:: max(1, len(facts["loss"]) // 12)]
        # About 12 rows of loss, the last logged one, and every evaluation (the final one at the
        # last step included, where no training loss is logged).
        steps = sorted({s for s, _ in shown} | {facts["loss"][-1][0]} | set(evals))
        for step in steps:
            loss, ev = losses.get(step), evals.get(step)
            L.append(f"| {step} | {'' if loss is None else f'{loss:.4f}'} | "
                     f"{'' if ev is None else f'{ev:.4f}'} |")
    else:
        L.append("no training loss logged")
    L.append("")

    L += ["## Training time and cost", ""]
    secs = facts["train_seconds"]
    L.append(f"- training time: {'n/a' if secs is None else f'{secs:.1f} s ({secs / 3600:.3f} h)'}")
    cost = "n/a" if facts["cost_usd"] is None else f"${facts['cost_usd']:.2f}"
    L.append(f"- cost: {cost} "
             f"(train_seconds x budget.gpu_hourly_usd = {facts['gpu_hourly_usd']})")
    L.append("")

    mem = facts["peak_memory"]
    L += ["## Memory", ""]
    if mem["note"]:
        L.append(f"- peak GPU memory, estimated vs measured: {mem['note']}")
    else:
        L.append(f"- estimated peak: {_fmt_bytes(mem['estimated_bytes'])} (`workbench estimate`)")
        L.append(f"- measured peak (torch reserved): {_fmt_bytes(mem['measured_bytes'])}")
    L.append("")

    L += ["## Settings", "", "the run's resolved profile (profile.toml):", "", "```toml",
          profile.to_toml().rstrip(), "```", ""]
    return "\n".join(L), data


def _preference_verdict_lines(preference: dict, judged: dict, primary: dict) -> list[str]:
    base = preference.get("base") or "the adapter off"
    if preference.get("paired"):
        how = ("- decided on held-out preference accuracy: the share of pairs in which the model "
               "finds the chosen answer more likely than the rejected one (summed log-likelihood "
               "of the answer tokens given the prompt), fine-tuned (adapter on) against base "
               f"({base}); paired bootstrap over the pairs (2,000 resamples): a change counts "
               "only when the 95% interval excludes 0")
    else:
        how = ("- decided on the change (fine-tuned - base) in the mean per-token log-likelihood "
               "of desirable against undesirable answers; bootstrap over the rows: a change "
               "counts only when the 95% interval excludes 0")
    L = [how]
    for line in judged.get("lines") or ([judged["text"]] if judged.get("text") else []):
        L.append(f"- answers generated to the held-out prompts, scored against the chosen answers "
                 f"({primary.get('metric', 'the primary metric')}; see Metrics): {line}")
    return L + [""]


def _preference_lines(preference: dict) -> list[str]:
    from workbench.evaluate.preference import report_lines

    return report_lines(preference)


def _rewards_verdict_lines(rewards: dict) -> list[str]:
    base = rewards.get("base") or "the adapter off"
    L = [f"- decided on the weighted total of the rewards (what {rewards.get('title', 'GRPO')} "
         f"maximizes) over the greedy answers to the held-out prompts, fine-tuned (adapter on) "
         f"against base ({base}); paired bootstrap over the prompts (2,000 resamples): a change "
         "counts only when the 95% interval excludes 0"]
    L += [f"- {line}" for line in rewards.get("lines", [])]
    return L + [""]


def _rewards_lines(rewards: dict) -> list[str]:
    from workbench.evaluate.rewards_eval import report_lines

    return report_lines(rewards)


def _delta(a, b) -> str:
    if a is None or b is None:
        return "n/a"
    return f"{a - b:+.1f}"


def write(run: RunDir, profile, result: dict, state: str | None = None) -> tuple[Path, Path]:
    """Build both reports first, then write them: an error while building leaves the old
    ones as they were. `state`: the run's final state when status.json does not say it yet."""
    md, data = build(run, profile, result, state)
    write_json_atomic(run.path / "report.json", data)
    write_text_atomic(run.path / "report.md", md)
    return run.path / "report.md", run.path / "report.json"
