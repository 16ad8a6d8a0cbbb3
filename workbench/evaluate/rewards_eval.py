"""The evaluation of a reinforcement-learning run (GRPO): did training move the rewards, and
what did it cost in answer length?

On the run's held-out prompts (rendered as training rendered them; a seeded sample of
eval.max_test_rows), the base and the fine-tuned model each answer every prompt

- once greedily (what the model says by default: the side-by-side answers), and
- `samples` times at grpo.temperature (min(grpo.num_generations, 4) by default: the answers
  GRPO itself sees and optimizes, averaged per prompt),

each answer up to grpo.max_completion_len tokens (as training sampled them), and every answer
is scored by the profile's reward functions exactly as training scored them (`RewardSet.score`,
completions in TRL's conversational form). Per prompt: the weighted total and each reward's
value (the mean over the samples for the sampled answers).

Figures (summary): the mean weighted total, each reward's mean and pass rate, base against
fine-tuned, each change (fine-tuned - base) with a paired-bootstrap 95% interval over the
prompts (verdict.py's `paired_bootstrap`, 2,000 resamples, seeded). A change counts only when
its interval excludes 0.

Pass rate: the share of answers at full marks, a reward of at least PASS_AT (1.0). The
built-ins score in [0, 1] with 1 meaning the check passed (partial credit, e.g. 0.5 for JSON
that parses but does not validate, is not a pass); a reward's mean is reported beside it, so
partial credit still shows. A user's reward on another scale makes the pass rate mean "at least
1"; the report notes a reward whose values fall outside [0, 1].

The base is the model GRPO started from: the adapter off, or, for a run that trained on from
model.adapter, that starting adapter (evaluation.py's `_reference_adapter` finds and loads it,
and calls `evaluate_rewards` with it).

The verdict is decided on the greedy answers' weighted total and names the sampled result
beside it, then the answer length in tokens (greedy, fine-tuned against base, with its
interval; preference.py's length check flags a length bias).

Pure Python here apart from `evaluate_rewards` (which drives the engine): report.py imports
this module without loading torch.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

from workbench.evaluate.errors import EvaluateError, check_stop

PASS_AT = 1.0  # a reward at or above this is a pass (full marks on the built-ins)
SHOWN = 8  # prompts shown side by side in report.md (report.json keeps every one)
SYSTEMS = ("base", "fine-tuned")


# ---------------------------------------------------------------------------------------------
# Which runs this is for, and their rows


def is_rewards_run(profile) -> bool:
    """The run's method is evaluated by its rewards (the method registry says so)."""
    method = getattr(getattr(profile, "train", None), "method", "sft") or "sft"
    if method == "sft":
        return False
    try:
        from workbench.train.methods import get_method

        return get_method(method).evaluation == "rewards"
    except (ImportError, ValueError, AttributeError):
        return method == "grpo"


def sample_count(profile) -> int:
    from workbench.train.methods import reward_eval_samples

    return reward_eval_samples(profile)


def load_reward_rows(profile, log: Callable[[str], None] = lambda s: None) -> list[dict]:
    """The held-out prompts of a rewards run, prepared by its method's data room exactly as
    training prepared them (`workbench eval RUN` has no training plan to take them from)."""
    from workbench.data import DataError
    from workbench.train.plan import RunError, load_tokenizer, profile_chat_format

    try:
        from workbench.train.methods import get_method

        tokenizer = load_tokenizer(profile)
        prepared = get_method(profile.train.method).prepare_data(
            profile, tokenizer, profile_chat_format(tokenizer, profile), log)
    except (RunError, DataError, ValueError, ImportError) as exc:
        raise EvaluateError(f"could not prepare the run's prompts: {exc}",
                            hint="the run reads data.train from its profile.toml; check the file "
                                 "is still there") from exc
    return prepared.eval_rows


def profile_rewards(profile):
    """The profile's reward functions, loaded (their files run), or an EvaluateError."""
    from workbench.rewards.functions import RewardError, load_rewards

    try:
        rewards = load_rewards(profile.rewards)
    except RewardError as exc:
        raise EvaluateError(exc.message, exc.hint) from None
    if not rewards.functions:
        raise EvaluateError("the profile names no reward functions",
                            hint='add [rewards] functions = ["format:answer_tags", ...]')
    return rewards


def cap_rows(rows: Sequence[dict], cap: int, seed: int) -> tuple[list[dict], str | None]:
    """At most `cap` prompts, a seeded sample in order, and the note that says so."""
    from workbench.evaluate.preference import cap_rows as seeded_sample

    return seeded_sample(rows, cap, seed, "held-out prompts")


# ---------------------------------------------------------------------------------------------
# The figures (pure)


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def measure(base: Sequence[float], tuned: Sequence[float], seed: int = 0,
            scale: float = 1.0, nd: int = 4) -> dict:
    """Base and fine-tuned means of per-prompt values and the change with its paired-bootstrap
    95% interval (`scale` 100 turns shares into percent)."""
    from workbench.evaluate.verdict import paired_bootstrap

    d = paired_bootstrap("fine-tuned", [scale * x for x in tuned], "base",
                         [scale * x for x in base], "reward", seed=seed)
    return {"base": round(d.b_mean, nd), "fine-tuned": round(d.a_mean, nd),
            "delta": round(d.delta, nd), "ci95": [round(d.low, nd), round(d.high, nd)],
            "decided": d.decided, "rows_to_tell": d.rows_to_tell(),
            "same_everywhere": all(a == b for a, b in zip(base, tuned))}


def _passes(value: float) -> float:
    return 1.0 if value >= PASS_AT else 0.0


def summarize(names: Sequence[str], weights: Sequence[float], greedy: dict, sampled: dict | None,
              seed: int = 0) -> dict:
    """The figures from per-prompt scores.

    greedy: {"base": [[reward j of prompt i]], "fine-tuned": [...]} (one answer a prompt);
    sampled: the same with one more level, [prompt][sample][reward], or None.
    Returns {"rows", "functions", "weights", "pass_at", "greedy": block, "sampled": block or
    None}, a block being {"total": measure, "rewards": {name: {"mean": measure, "pass_rate":
    measure (percent)}}} ("samples": k in the sampled one)."""
    def total(scores):
        return sum(w * s for w, s in zip(weights, scores))

    def block(per_row: dict) -> dict:
        # per_row[system][i] = a list of answers' score lists (one for greedy)
        def per_prompt(system, value):
            return [_mean([value(s) for s in answers]) for answers in per_row[system]]

        out = {"total": measure(per_prompt("base", total), per_prompt("fine-tuned", total),
                                seed)}
        out["rewards"] = {
            name: {"mean": measure(per_prompt("base", lambda s, j=j: s[j]),
                                   per_prompt("fine-tuned", lambda s, j=j: s[j]), seed),
                   "pass_rate": measure(per_prompt("base", lambda s, j=j: _passes(s[j])),
                                        per_prompt("fine-tuned", lambda s, j=j: _passes(s[j])),
                                        seed, scale=100.0, nd=2)}
            for j, name in enumerate(names)}
        return out

    rows = len(greedy["base"])
    out = {"rows": rows, "functions": list(names), "weights": list(weights), "pass_at": PASS_AT,
           "greedy": block({s: [[r] for r in greedy[s]] for s in SYSTEMS}), "sampled": None}
    if sampled:
        out["sampled"] = {"samples": len(sampled["base"][0]) if rows else 0,
                          **block(sampled)}
    out["outside_0_1"] = [name for j, name in enumerate(names)
                          if any(not 0.0 <= r[j] <= 1.0 for system in SYSTEMS
                                 for r in greedy[system])
                          or (sampled and any(not 0.0 <= s[j] <= 1.0 for system in SYSTEMS
                                              for r in sampled[system] for s in r))]
    return out


def lengths(base_tokens: Sequence[int], tuned_tokens: Sequence[int],
            sampled_base: Sequence[Sequence[int]] | None = None,
            sampled_tuned: Sequence[Sequence[int]] | None = None, *, seed: int = 0,
            max_new_tokens: int | None = None, against: str = "base") -> dict:
    """Answer lengths in tokens: preference.py's length check on the greedy answers (with its
    interval, its length-bias flag and the answers cut at `max_new_tokens`), and the sampled
    answers' means per prompt."""
    from workbench.evaluate.preference import length_check

    out = {"greedy": length_check(base_tokens, tuned_tokens, seed=seed,
                                  max_new_tokens=max_new_tokens, against=against)}
    if sampled_base and sampled_tuned:
        out["sampled"] = measure([_mean(r) for r in sampled_base],
                                 [_mean(r) for r in sampled_tuned], seed, nd=2)
        if max_new_tokens:
            out["sampled"]["at_cap"] = {
                "base": sum(1 for r in sampled_base for x in r if x >= max_new_tokens),
                "fine-tuned": sum(1 for r in sampled_tuned for x in r if x >= max_new_tokens),
                "answers": sum(len(r) for r in sampled_base)}
    return out


# ---------------------------------------------------------------------------------------------
# The verdict (pure)


def _r(x: float) -> str:
    """A reward value: two decimals, three below 0.1 (0.004 is not 0.00)."""
    return f"{x:.2f}" if abs(x) >= 0.1 or x == 0 else f"{x:.3f}"


def _s(x: float) -> str:
    return ("+" if x >= 0 else "-") + _r(abs(x))


def _figures(m: dict) -> str:
    lo, hi = m["ci95"]
    return (f"from {_r(m['base'])} to {_r(m['fine-tuned'])} ({_s(m['delta'])}, 95% CI "
            f"{_s(lo)} to {_s(hi)})")


def _arrow(m: dict) -> str:
    lo, hi = m["ci95"]
    return (f"{_r(m['base'])} -> {_r(m['fine-tuned'])} ({_s(m['delta'])}, 95% CI "
            f"{_s(lo)} to {_s(hi)})")


def length_sentence(length: dict | None) -> str:
    """What the change cost (or saved) in answer length: greedy answers, in tokens."""
    g = (length or {}).get("greedy") or {}
    if not g.get("answers"):
        return ""
    base, tuned, delta = g["base_mean_tokens"], g["fine_tuned_mean_tokens"], g["delta_tokens"]
    lo, hi = g["ci95_tokens"]
    whose = "" if g.get("against", "base") == "base" else " than the starting adapter's"
    figures = f"{base:.1f} -> {tuned:.1f} tokens a greedy answer, 95% CI {lo:+.1f} to {hi:+.1f}"
    if lo > 0 or hi < 0:
        how = "longer" if delta > 0 else "shorter"
        text = f"answers got {abs(delta):.1f} tokens {how}{whose} ({figures})"
        if g.get("length_bias"):
            pct = g.get("change_pct")
            text += f", {pct:+.0f}%: a length bias" if pct is not None else ": a length bias"
        return text
    if delta == lo == hi == 0:
        return f"answer length unchanged ({base:.1f} tokens a greedy answer, base and fine-tuned)"
    return f"answer length did not change significantly{whose} ({figures})"


def rewards_verdict(summary: dict, length: dict | None = None, method: str = "GRPO") -> dict:
    """{"text", "direction": "up" | "down" | "none", "decided_on": "greedy"} from `summarize`'s
    figures and `lengths`: decided on the weighted total of the greedy answers (a change counts
    only when its 95% interval excludes 0), the sampled answers' result and the length beside
    it, in plain words with the numbers."""
    n = summary.get("rows", 0)
    if not n:
        return {"text": "No verdict on the rewards: no held-out prompt was answered",
                "direction": "none", "decided_on": "greedy"}
    g = summary["greedy"]["total"]
    where = f"greedy answers to {n} held-out prompt{'s' if n != 1 else ''}"
    if g["decided"]:
        up = g["delta"] > 0
        text = (f"{method} {'raised' if up else 'lowered'} the held-out reward {_figures(g)}; "
                f"{where}")
        direction = "up" if up else "down"
    elif g["same_everywhere"]:
        text = (f"{method} did not move the held-out reward: base and fine-tuned score the same "
                f"on every one of the {where} (mean {_r(g['base'])})")
        direction = "none"
    else:
        text = (f"{method} did not move the held-out reward: {_arrow(g)}, the interval spans "
                f"0; {where}")
        need = g.get("rows_to_tell")
        if need and need > n and g["delta"]:
            text += f"; about {need:,} prompts would tell a change of this size"
        direction = "none"
    s = summary.get("sampled")
    if s and s.get("samples"):
        t = s["total"]
        seen = f"mean of {s['samples']} samples a prompt"
        if t["decided"] != g["decided"] or (t["decided"] and (t["delta"] > 0) != (g["delta"] > 0)):
            way = ("raised" if t["delta"] > 0 else "lowered") if t["decided"] else "did not move"
            text += f"; sampled answers ({seen}) {way} it: {_arrow(t)}"
        else:
            text += f"; sampled answers ({seen}): {_arrow(t)}"
    clause = length_sentence(length)
    if clause:
        text += f"; {clause}"
    return {"text": text, "direction": direction, "decided_on": "greedy"}


def reward_lines(summary: dict) -> list[str]:
    """One sentence a reward whose pass rate or mean moved (greedy answers), for the report."""
    out = []
    for name, r in summary["greedy"]["rewards"].items():
        p, m = r["pass_rate"], r["mean"]
        if p["decided"]:
            lo, hi = p["ci95"]
            out.append(f"{name}: pass rate {p['base']:.0f}% -> {p['fine-tuned']:.0f}% "
                       f"({p['delta']:+.0f} pts, 95% CI {lo:+.0f} to {hi:+.0f})")
        elif m["decided"]:
            out.append(f"{name}: mean {_arrow(m)}")
    return out


# ---------------------------------------------------------------------------------------------
# Running it


PILOT_PROMPTS = 8  # eval.time_budget_s: prompts timed before the rest is sized to fit


def evaluate_rewards(engine, profile, rows: list[dict], options, *,
                     base: tuple[str | None, str, list[str]] = (None, "the adapter off", []),
                     max_new_tokens: int | None = None, samples: int | None = None,
                     log: Callable[[str], None] = lambda s: None, cancel=None,
                     progress: Callable[[str, int, int], None] | None = None) -> dict:
    """A rewards run's evaluation on its held-out prompt rows ({prompt, columns, source}, as
    the method's data room renders them). `options`: evaluation.py's EvalOptions (seed,
    max_test_rows, batch_size, time_budget_s). Answers run to `max_new_tokens` (default
    grpo.max_completion_len, as training sampled them); `samples` sampled answers a prompt at
    grpo.temperature (default `sample_count`). Returns {"options", "rewards": {...}}: the
    figures, the length check, every prompt's answers and the verdict (report.py's Rewards
    section; its verdict is the run's). eval.time_budget_s: a pilot of a few prompts is timed
    and the seeded sample of prompts that fits is kept.

    `base`: (the adapter the base answers with, None for the adapter off; how the report names
    it; notes), as evaluation.py's `_reference_adapter` finds it: the starting adapter of a run
    that trained on from model.adapter. The caller loads and removes that adapter."""
    from dataclasses import asdict

    from workbench.evaluate.compare import BASE, System

    g = profile.grpo
    rewards = profile_rewards(profile)
    rows, note = cap_rows(rows, options.max_test_rows, options.seed)
    if not rows:
        raise EvaluateError("the run has no held-out prompts to evaluate on",
                            hint="keep data.validation_split above 0, or give data.validation")
    max_new = max_new_tokens or g.max_completion_len
    k = samples or sample_count(profile)
    tuned = getattr(engine, "tuned_adapter", None) or (
        "tuned" if "tuned" in engine.adapters else (engine.adapters or [BASE])[0])
    say = progress or (lambda stage, done, total: None)
    gen = dict(max_new_tokens=max_new, seed=options.seed, batch_size=options.batch_size,
               cancel=cancel)
    notes = [note] if note else []
    if getattr(profile.eval, "prompts", ""):
        notes.append(f"the prompt suite (eval.prompts = {profile.eval.prompts}) is not answered "
                     "in a rewards evaluation: its prompts carry no reward columns")
    if any(r["columns"].get("tools") for r in rows):
        notes.append("prompts with a tools column are answered without the tools in the chat "
                     "template (training rendered them with the tools)")

    reference, base_is, ref_notes = base
    notes += ref_notes
    systems = [System("base", reference or BASE), System("fine-tuned", tuned)]
    started = time.perf_counter()
    if options.time_budget_s and len(rows) > PILOT_PROMPTS:
        rows, budget_note = _within_budget(engine, rows, systems, k, options, gen, log)
        if budget_note:
            notes.append(budget_note)
    prompts = [r["prompt"] for r in rows]
    log(f"rewards: {len(rows)} held-out prompts, base ({base_is}) vs fine-tuned ({tuned}); "
        f"greedy and {k} samples a prompt at temperature {g.temperature:g}, up to {max_new} "
        "tokens")

    def answers(stage: str, convos, **kw):
        gen_rows = engine.rows(convos, systems)
        say(stage, 0, len(gen_rows))
        out = engine.generate(gen_rows, on_row_done=lambda ev: say(stage, ev.done, ev.total),
                              **gen, **kw)
        check_stop(cancel)
        return out

    greedy = answers("rewards greedy answers", prompts)
    sampled = answers("rewards sampled answers", [p for p in prompts for _ in range(k)],
                      do_sample=True, temperature=g.temperature)
    seconds = time.perf_counter() - started

    by = {(a.system, a.prompt_index): a for a in greedy.answers}
    by_sample: dict[tuple[str, int], list] = {}
    for a in sorted(sampled.answers, key=lambda a: a.prompt_index):
        by_sample.setdefault((a.system, a.prompt_index // k), []).append(a)
    n = len(rows)
    g_answers = {s: [by[(s, i)] for i in range(n)] for s in SYSTEMS}
    s_answers = {s: [by_sample[(s, i)] for i in range(n)] for s in SYSTEMS}
    g_scores = {s: _score(rewards, rows, [[a] for a in g_answers[s]]) for s in SYSTEMS}
    s_scores = {s: _score(rewards, rows, s_answers[s]) for s in SYSTEMS}
    greedy_scores = {s: [r[0] for r in g_scores[s]] for s in SYSTEMS}

    summary = summarize(rewards.names, rewards.weights, greedy_scores, s_scores,
                        seed=options.seed)
    against = "base" if reference is None else "start"
    length = lengths([len(a.token_ids) for a in g_answers["base"]],
                     [len(a.token_ids) for a in g_answers["fine-tuned"]],
                     [[len(a.token_ids) for a in r] for r in s_answers["base"]],
                     [[len(a.token_ids) for a in r] for r in s_answers["fine-tuned"]],
                     seed=options.seed, max_new_tokens=max_new, against=against)
    for name in summary["outside_0_1"]:
        notes.append(f"{name} scored outside [0, 1]: its pass rate counts answers scoring "
                     f"{PASS_AT:g} or more, which may not be what passing means for it")
    method = _method_title(profile)
    verdict = rewards_verdict(summary, length, method)
    column = getattr(profile.rewards, "answer_column", "answer")
    examples = []
    for i, row in enumerate(rows):
        examples.append({
            "prompt": row["prompt"][-1]["content"], "source": row.get("source"),
            "reference": row["columns"].get(column),
            "answers": {s: {"text": g_answers[s][i].text,
                            "tokens": len(g_answers[s][i].token_ids),
                            "rewards": [round(v, 4) for v in greedy_scores[s][i]],
                            "total": round(rewards.total(greedy_scores[s][i]), 4),
                            "sampled_total": round(_mean([rewards.total(x)
                                                          for x in s_scores[s][i]]), 4)}
                        for s in SYSTEMS}})
    result = {"method": profile.train.method, "title": method, "rows_scored": n,
              "source": "held-out prompts of the run", "base": base_is,
              "temperature": g.temperature, "max_new_tokens": max_new, **summary,
              "length": length, "notes": notes, "seconds": round(seconds, 1),
              "timing": {"greedy": {k_: v.to_dict() for k_, v in greedy.timing.items()},
                         "sampled": {k_: v.to_dict() for k_, v in sampled.timing.items()}},
              "examples": examples, "verdict": verdict, "lines": reward_lines(summary)}
    log(f"  rewards verdict: {verdict['text']} ({seconds:.1f}s)")
    return {"options": asdict(options), "rewards": result}


def _method_title(profile) -> str:
    try:
        from workbench.train.methods import get_method

        return get_method(profile.train.method).title
    except (ImportError, ValueError, AttributeError):
        return "RL"


def _score(rewards, rows: list[dict], answers: list[list]) -> list[list[list[float]]]:
    """Every answer scored by every reward, as training scores them: [prompt][answer][reward].
    One batched call a reward over all answers; the rows' reference columns side by side."""
    from workbench.rewards.functions import RewardError

    flat = [(row, a) for row, mine in zip(rows, answers) for a in mine]
    if not flat:
        return [[] for _ in rows]
    names = dict.fromkeys(c for row, _ in flat for c in row["columns"])
    try:
        scores = rewards.score(
            [row["prompt"] for row, _ in flat],
            [[{"role": "assistant", "content": a.text}] for _, a in flat],
            {c: [row["columns"].get(c) for row, _ in flat] for c in names},
            [_where(row) for row, _ in flat],
            completion_ids=[list(a.token_ids) for _, a in flat])
    except RewardError as exc:
        raise EvaluateError(exc.message, exc.hint) from None
    out, at = [], 0
    for mine in answers:
        out.append(scores[at:at + len(mine)])
        at += len(mine)
    return out


def _where(row: dict) -> str:
    src = row.get("source")
    if isinstance(src, dict):
        return f"{src.get('file')}:{src.get('row')}"
    return str(src or "a held-out prompt")


def _within_budget(engine, rows, systems, k, options, gen, log):
    """eval.time_budget_s: the greedy answers of a pilot of a few prompts timed; a prompt
    costs about (1 + samples) times that (its greedy answer and its samples); the seeded
    sample of prompts that fits the rest of the budget is kept. Returns (rows, note)."""
    pilot = [r["prompt"] for r in rows[:PILOT_PROMPTS]]
    started = time.perf_counter()
    engine.generate(engine.rows(pilot, systems), **gen)
    spent = time.perf_counter() - started
    per_prompt = spent / len(pilot) * (1 + k)
    fit = max(PILOT_PROMPTS, int((options.time_budget_s - spent) / per_prompt)) if per_prompt else len(rows)
    log(f"  time budget {options.time_budget_s:g} s: {per_prompt:.2f} s a prompt estimated from "
        f"{len(pilot)} prompts, so {min(fit, len(rows))} of {len(rows)} prompts fit")
    if fit >= len(rows):
        return rows, None
    kept, _ = cap_rows(rows, fit, options.seed)
    return kept, (f"eval.time_budget_s = {options.time_budget_s:g}: scored a seeded sample of "
                  f"{fit} of the {len(rows)} held-out prompts ({per_prompt:.2f} s a prompt, "
                  f"estimated from {len(pilot)})")


# ---------------------------------------------------------------------------------------------
# report.md


def _cell(text) -> str:
    return str("" if text is None else text).replace("|", "\\|").replace("\n", " ")


def _ci(m: dict, fmt: str) -> str:
    lo, hi = m["ci95"]
    return f"{lo:{fmt}}..{hi:{fmt}}"


def report_lines(rw: dict, shown: int = SHOWN) -> list[str]:
    """The "## Rewards" section of report.md (without its heading): the verdict, the table
    base vs fine-tuned (greedy and sampled, with intervals), the lengths, the notes and a few
    prompts' answers side by side."""
    L = [f"verdict: {rw['verdict']['text']}", ""]
    weights = ", ".join(f"{n} x{w:g}" for n, w in zip(rw["functions"], rw["weights"]))
    s = rw.get("sampled") or {}
    k = s.get("samples", 0)
    L.append(f"{rw['rows_scored']} {rw.get('source') or 'held-out prompts'}, rendered as trained: "
             f"base = {rw.get('base') or 'the adapter off'}, fine-tuned = the adapter on; "
             f"rewards {weights} (the weighted total is what {rw.get('title', 'GRPO')} "
             f"maximizes); each model answered greedily once and {k} times sampled at "
             f"temperature {rw.get('temperature', 1.0):g}, up to {rw.get('max_new_tokens')} "
             "tokens")
    L += [""] + [f"- note: {n}" for n in rw.get("notes", [])]
    if rw.get("notes"):
        L.append("")
    sampled_head = f"sampled (mean of {k}): " if k else ""
    L += [f"| measure | greedy: base | fine-tuned | change | 95% CI | {sampled_head}base | "
          "fine-tuned | change | 95% CI |", "|---|---|---|---|---|---|---|---|---|"]

    def cells(m: dict | None, fmt: str, unit: str = "") -> str:
        if not m:
            return " | | | "
        return (f"{m['base']:{fmt}}{unit} | {m['fine-tuned']:{fmt}}{unit} | "
                f"{m['delta']:+{fmt}}{' pts' if unit else ''} | {_ci(m, '+' + fmt)}")

    L.append(f"| weighted total | {cells(rw['greedy']['total'], '.3f')} | "
             f"{cells(s.get('total'), '.3f')} |")
    for name in rw["functions"]:
        gr, sr = rw["greedy"]["rewards"][name], (s.get("rewards") or {}).get(name, {})
        L.append(f"| {_cell(name)}: mean | {cells(gr['mean'], '.3f')} | "
                 f"{cells(sr.get('mean'), '.3f')} |")
        L.append(f"| {_cell(name)}: pass rate | {cells(gr['pass_rate'], '.0f', '%')} | "
                 f"{cells(sr.get('pass_rate'), '.0f', '%')} |")
    length = rw.get("length") or {}
    lg, ls = length.get("greedy") or {}, length.get("sampled")
    if lg.get("answers"):
        greedy_len = {"base": lg["base_mean_tokens"], "fine-tuned": lg["fine_tuned_mean_tokens"],
                      "delta": lg["delta_tokens"], "ci95": lg["ci95_tokens"]}
        L.append(f"| answer length (tokens) | {cells(greedy_len, '.1f')} | {cells(ls, '.1f')} |")
    L += ["", f"- pass rate: the share of answers scoring at least {rw.get('pass_at', PASS_AT):g} "
              "(full marks: the built-in rewards score 0-1, 1 = the check passed; partial credit "
              "shows in the mean); sampled: the share of all samples",
          "- paired bootstrap over the prompts (2,000 resamples, seeded): a change counts only "
          "when the 95% interval excludes 0; the verdict is decided on the greedy weighted total"]
    L += [f"- moved: {line}" for line in rw.get("lines", [])]
    if lg.get("answers"):
        from workbench.evaluate.preference import AGAINST

        flag = "**length bias**" if lg["length_bias"] else "no length bias"
        whose = AGAINST.get(lg.get("against", "base"), "the base's")
        L.append(f"- length check (greedy answers): {flag} against {whose}: "
                 f"{length_sentence(length)}; {lg['rule']}")
        cut = lg.get("at_cap") or {}
        scut = (ls or {}).get("at_cap") or {}
        if any(v for key, v in cut.items() if key != "max_new_tokens") or any(
                scut.get(x) for x in SYSTEMS):
            parts = [f"greedy {key} {v}" for key, v in cut.items() if key != "max_new_tokens"]
            if scut:
                parts += [f"sampled {x} {scut[x]} of {scut['answers']}" for x in SYSTEMS]
            L.append(f"- answers cut at {rw.get('max_new_tokens')} tokens (grpo.max_completion_len; "
                     "they would have gone on): " + ", ".join(parts))
    examples = rw.get("examples") or []
    if examples:
        which = (f"all {len(examples)} prompts" if len(examples) <= shown
                 else f"the first {shown} of the {len(examples)} prompts")
        L += ["", f"side by side: {which}, greedy answers with their weighted total (report.json "
                  "holds every prompt, each reward's value and the sampled mean)", "",
              "| prompt | reference | base | fine-tuned |", "|---|---|---|---|"]
        for e in examples[:shown]:
            a = e["answers"]
            L.append(f"| {_cell(e['prompt'])} | {_cell(e.get('reference'))} | "
                     + " | ".join(f"{_cell(a[x]['text']) or '(empty)'} ({a[x]['total']:.2f})"
                                  for x in SYSTEMS) + " |")
    L.append("")
    return L


__all__ = ["PASS_AT", "is_rewards_run", "load_reward_rows", "summarize", "lengths",
           "rewards_verdict", "evaluate_rewards", "report_lines"]
