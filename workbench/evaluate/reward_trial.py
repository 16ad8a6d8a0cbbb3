"""`workbench rewards test PROFILE`: the rewards tried on the model as it is now, before any
GPU hour is spent.

A handful of training prompts, `grpo.num_generations` completions each, sampled as training
will sample them (the same rendered prompt, temperature and length cap) from the model the run
starts from (the base, or model.adapter), scored by every reward function; then
rewards/diagnose.py says what GRPO's first steps would see and whether they can learn anything.
"""

from __future__ import annotations

import random
import time
from typing import Callable

from workbench.evaluate.compare import BASE, ComparisonEngine, System
from workbench.evaluate.errors import EvaluateError


def load_trial_engine(profile, device: str = "auto",
                      say: Callable[[str], None] = lambda s: None) -> ComparisonEngine:
    """The model GRPO starts from: the base, with model.adapter attached when the profile
    names one."""
    from pathlib import Path

    from workbench.evaluate.compare import attach_adapters, load_base_model, resolve_device
    from workbench.train.plan import (RunError, load_tokenizer, profile_chat_format,
                                      resolve_start_adapter)

    device = resolve_device(device)
    try:
        tokenizer = load_tokenizer(profile)
        start = resolve_start_adapter(profile)
    except RunError as exc:
        raise EvaluateError(exc.message, exc.hint) from None
    say(f"loading {profile.model.name_or_path} onto {device}")
    model = load_base_model(profile, device)
    if start:
        say(f"attaching the starting adapter {start}")
        model = attach_adapters(model, {"start": Path(start)}, profile)
    engine = ComparisonEngine(model, tokenizer, device, "", profile_chat_format(tokenizer, profile))
    engine.tuned_adapter = "start" if start else BASE
    return engine


def trial_prompts(profile, n: int, log: Callable[[str], None] = lambda s: None) -> list[dict]:
    """A seeded sample of `n` training prompts, rendered as training renders them."""
    from workbench.data import DataError
    from workbench.data.prompts import load_prompt_training_data

    try:
        data = load_prompt_training_data(profile, log)
    except DataError as exc:
        raise EvaluateError(str(exc)) from None
    rows = data.train
    if len(rows) > n:
        rows = random.Random(profile.train.seed).sample(rows, n)
    if not rows:
        raise EvaluateError(f"no training prompts in {profile.data.train}",
                            hint=f"`workbench data inspect {profile.data.train}` shows why")
    return rows


def try_rewards(profile, *, engine: ComparisonEngine | None = None, prompts: int | None = None,
                samples: int | None = None, device: str = "auto",
                log: Callable[[str], None] = lambda s: None,
                progress: Callable[[int, int], None] | None = None, cancel=None) -> dict:
    """The reward test's result (JSON-able): the groups (each prompt's completions with every
    reward and the weighted total), the diagnosis and its verdict. `progress(done, total)`
    hears each completion as it stops."""
    from workbench.data.prompts import render_prompts
    from workbench.rewards.diagnose import Group, diagnose
    from workbench.evaluate.rewards_eval import profile_rewards
    from workbench.rewards.functions import RewardError
    from workbench.train.plan import profile_chat_format

    g = profile.grpo
    rewards = profile_rewards(profile)
    records = trial_prompts(profile, prompts or profile.rewards.test_prompts, log)
    if engine is None:
        engine = load_trial_engine(profile, device, log)
    rendered, too_long = render_prompts(engine.tokenizer, profile_chat_format(engine.tokenizer, profile),
                                        records, g.max_prompt_len)
    if not rendered:
        raise EvaluateError(f"every sampled prompt is longer than grpo.max_prompt_len = "
                            f"{g.max_prompt_len} tokens ({', '.join(too_long[:3])})",
                            hint="raise grpo.max_prompt_len")
    k = samples or g.num_generations
    convos = [r["prompt"] for r in rendered for _ in range(k)]
    log(f"sampling {k} completions for each of {len(rendered)} prompts (temperature "
        f"{g.temperature:g}, up to {g.max_completion_len} tokens)")
    started = time.perf_counter()
    gens = engine.generate(
        engine.rows(convos, [System("policy", engine.tuned_adapter)]),
        max_new_tokens=g.max_completion_len, seed=profile.train.seed, do_sample=True,
        temperature=g.temperature, cancel=cancel,
        on_row_done=(lambda ev: progress(ev.done, ev.total)) if progress else None)
    if cancel is not None and cancel.is_set():
        raise EvaluateError("the reward test was cancelled")
    seconds = time.perf_counter() - started
    answers = sorted(gens.answers, key=lambda a: a.prompt_index)
    groups = []
    for p, row in enumerate(rendered):
        mine = answers[p * k:(p + 1) * k]
        texts = [a.text for a in mine]
        completions = [[{"role": "assistant", "content": t}] for t in texts]
        columns = {c: [row["columns"].get(c)] * len(texts)
                   for c in row["columns"]}
        try:
            scores = rewards.score([row["prompt"]] * len(texts), completions, columns,
                                   [row["source"]] * len(texts),
                                   completion_ids=[list(a.token_ids) for a in mine])
        except RewardError as exc:
            raise EvaluateError(exc.message, exc.hint) from None
        truncated = [_cut(a, g.max_completion_len, engine.stop_ids) for a in mine]
        groups.append(Group(row["prompt"][-1]["content"], texts, scores,
                            [rewards.total(s) for s in scores], truncated, row["source"]))
    result = diagnose(groups, rewards.names, g.max_completion_len)
    result.update(
        functions=rewards.names, weights=rewards.weights, samples=k,
        temperature=g.temperature, max_completion_len=g.max_completion_len,
        model=profile.model.name_or_path + (" + model.adapter" if engine.tuned_adapter != BASE else ""),
        seconds=round(seconds, 1), dropped_too_long=too_long,
        groups=[{"prompt": gr.prompt, "row": gr.row, "completions": [
            {"text": t, "rewards": s, "total": round(tot, 4), "truncated": cut}
            for t, s, tot, cut in zip(gr.completions, gr.scores, gr.totals, gr.truncated)]}
            for gr in groups])
    return result


def _cut(answer, max_new_tokens: int, stop_ids: set[int]) -> bool:
    """Stopped by the length cap rather than by an end-of-turn token."""
    ids = list(answer.token_ids)
    return len(ids) >= max_new_tokens and not (ids and ids[-1] in stop_ids)


def format_trial(result: dict, width: int = 100) -> str:
    """The reward test as the terminal shows it: a table per prompt, the flags, what the first
    steps would see, the verdict."""
    names = result["functions"]
    short = [n if len(n) <= 14 else n[:13] + "…" for n in names]
    lines = [f"rewards test: {len(result['groups'])} prompts x {result['samples']} completions "
             f"from {result['model']} (temperature {result['temperature']:g}, up to "
             f"{result['max_completion_len']} tokens; {result['seconds']:g} s)",
             "weights: " + ", ".join(f"{n} x{w:g}" for n, w in zip(names, result["weights"])), ""]
    widths = [max(8, len(n)) for n in short]
    text_w = max(24, width - sum(w + 1 for w in widths) - 9 - 4)
    for gr in result["groups"]:
        where = gr["row"].rsplit("/", 1)[-1]  # the file's name and row; the path is in --json
        lines.append(f"prompt ({where}): {_one_line(gr['prompt'], width - len(where) - 12)}")
        lines.append(f"  {'completion':<{text_w}} "
                     + " ".join(f"{s:>{w}}" for s, w in zip(short, widths)) + f" {'total':>8}")
        for c in gr["completions"]:
            text = _one_line(c["text"], text_w - 1) + ("…" if c["truncated"] else "")
            lines.append(f"  {text:<{text_w}} "
                         + " ".join(f"{v:>{w}.3g}" for v, w in zip(c["rewards"], widths))
                         + f" {c['total']:>8.3g}")
        lines.append("")
    for f in result["flags"]:
        lines.append(f"! {f['message']}")
    first = result["first_steps"]
    if first:
        lines.append(f"first steps would see: mean reward {first['mean_reward']:g} "
                     f"(std {first['reward_std']:g}), {first['groups_with_signal']} of "
                     f"{first['groups']} groups with signal ({first['fraction_with_signal']:.0%})")
    lines.append(f"verdict: {result['verdict']['text']}")
    return "\n".join(lines)


def _one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: max(width - 1, 1)] + "…"
