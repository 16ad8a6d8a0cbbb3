"""What the evaluation after training will cost, said before training starts (issue 12).

On a CPU the evaluation of a real model takes minutes (100 rows x 3 systems of SmolLM2-135M:
about two), and a person deciding whether to wait, cap it (`eval.time_budget_s`) or skip it
(`eval.after_training = false`) needs that number before the run, not after.

How it is estimated: the evaluation's own generate calls are planned (`plan_batches`, the rows
it will really answer, few-shot prompts included), then ONE probe call is timed on the model
that will be evaluated: the first zero-shot call's rows, 1 + PROBE_STEPS new tokens (forced, so
an early end-of-turn cannot shorten it), the time of each token taken as it comes. That gives

- a prefill rate (prompt tokens a second, padding included, as `generate` pays for it), which
  prices every call's prompt (rows x its longest prompt) and the perplexity passes (each test
  row's prompt and reference answer, once per system);
- a decoding step's time for a full call, which prices `max_new_tokens` steps per call, scaled
  by the call's rows.

Every call is priced as if some row in it ran to `max_new_tokens` (a batch of 48 usually has one
that does). The probe costs about one call's prefill plus a few steps (seconds for a 135M model
on 2 cores). bench/eval_speed.md checks the estimate against the measured generation, and it
leans SHORT there: 213 s estimated for 310 s measured (0.69x) on SmolLM2-135M, 2 CPU cores.
What it misses: a decoding step of a few-shot call (prompts of ~650 tokens) costs more per row
than the probe's short prompts show, because each step reads the whole KV cache (on the CPU,
SDPA also expands grouped KV heads); the few-shot system took 219 of the 302 s. A second probe
on long prompts, or a KV-cache term per step, is the next step; until then the figure is a
lower bound on the CPU.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from workbench.evaluate.compare import BASE, ComparisonEngine, Row, System, plan_batches

PROBE_STEPS = 4


@dataclass
class EvalCost:
    rows: int  # test rows (each answered once per system)
    systems: int
    generation_s: float
    perplexity_s: float
    prefill_tokens_per_s: float
    step_s: float  # one decoding step of the probe call
    probe_rows: int

    @property
    def total_s(self) -> float:
        return self.generation_s + self.perplexity_s

    def describe(self, device: str) -> str:
        from workbench.fmt import fmt_duration

        where = "this CPU" if device == "cpu" else f"this {device.upper()}" if device else "here"
        return (f"{self.rows} rows x {self.systems} systems, about {fmt_duration(self.total_s)} on "
                f"{where} (generation {fmt_duration(self.generation_s)}, perplexity "
                f"{fmt_duration(self.perplexity_s)}; timed on a {self.probe_rows}-row probe, every "
                "answer priced at eval.max_new_tokens)")


def probe(engine: ComparisonEngine, rows: list[Row], adapter: str, steps: int = PROBE_STEPS
          ) -> tuple[float, float]:
    """(prefill seconds, seconds a decoding step) of one generate call on `rows`."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    tok = engine.tokenizer
    side = tok.padding_side
    tok.padding_side = "left"
    try:
        enc = tok([engine.chat_text(r.messages) for r in rows], return_tensors="pt", padding=True,
                  add_special_tokens=False)
    finally:
        tok.padding_side = side
    enc = {k: v.to(engine.device) for k, v in enc.items()}
    stamps: list[float] = []

    class Clock(StoppingCriteria):  # called once per generated token, right after its step
        def __call__(self, input_ids, scores, **kw):
            if engine.device == "cuda":
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())
            return torch.zeros((input_ids.shape[0],), dtype=torch.bool, device=input_ids.device)

    n = steps + 1
    with torch.inference_mode(), engine.using(adapter):
        started = time.perf_counter()
        engine.model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                              pad_token_id=tok.pad_token_id, temperature=None, top_p=None,
                              top_k=None, stopping_criteria=StoppingCriteriaList([Clock()]))
    return stamps[0] - started, (stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1)


def estimate(engine: ComparisonEngine, test: list[dict], systems: list[System], picker,
             max_new_tokens: int, batch_size: int) -> EvalCost:
    """The cost of answering `test` with every system and scoring its perplexity, from one
    timed probe call (see the module's docstring)."""
    from workbench.evaluate.evaluation import split_for_generation

    convos, references = zip(*(split_for_generation(r) for r in test)) if test else ((), ())
    rows = engine.rows(list(convos), systems, picker)
    lengths = engine.prompt_lengths(rows)
    calls = plan_batches(rows, lengths, batch_size)
    zero_shot = [c for c in calls if rows[c[0]].system.shots == 0] or calls
    probe_call = max(zero_shot, key=len)
    tuned = next((s.adapter for s in systems if s.adapter != BASE), BASE)
    prefill_s, step_s = probe(engine, [rows[i] for i in probe_call], tuned)
    probe_tokens = len(probe_call) * max(lengths[i] for i in probe_call)
    rate = probe_tokens / max(prefill_s, 1e-9)
    step_per_row = step_s / len(probe_call)

    answer_tokens = [len(ids) for ids in
                     engine.tokenizer(list(references), add_special_tokens=False)["input_ids"]]
    generation, scoring = price(calls, lengths, [answer_tokens[r.prompt_index] for r in rows],
                                rate, step_per_row, max_new_tokens)
    return EvalCost(rows=len(test), systems=len(systems), generation_s=generation,
                    perplexity_s=scoring, prefill_tokens_per_s=rate, step_s=step_s,
                    probe_rows=len(probe_call))


def price(calls: list[list[int]], prompt_tokens: list[int], answer_tokens: list[int],
          tokens_per_s: float, step_s_per_row: float, max_new_tokens: int) -> tuple[float, float]:
    """(generation seconds, perplexity seconds). A call pays its prompt as rows x its longest
    prompt (left padding is computed too) and `max_new_tokens` decoding steps of its rows; the
    perplexity pass reads each row's prompt and reference answer once."""
    generation = sum(len(c) * max(prompt_tokens[i] for i in c) / tokens_per_s
                     + max_new_tokens * step_s_per_row * len(c) for c in calls)
    scoring = sum(p + a for p, a in zip(prompt_tokens, answer_tokens)) / tokens_per_s
    return generation, scoring


def estimate_before_training(model, plan) -> EvalCost:
    """The cost of the evaluation `evaluate_after_training` will run on `model` (the PEFT model
    about to be trained: same shapes, so the same speed), its rows chosen as it will choose them."""
    from workbench.evaluate.evaluation import (EvalOptions, _capped, inference_ready,
                                               systems_and_picker)
    from workbench.evaluate.suite import load_prompts
    from workbench.evaluate.testset import load_splits
    from workbench.train.plan import profile_chat_format

    profile = plan.profile
    options = EvalOptions.from_profile(profile)
    splits = _capped(load_splits(profile), options.max_test_rows, options.seed)
    tuned = "default" if "default" in (getattr(model, "peft_config", None) or {}) else BASE
    suite = load_prompts(profile.eval.prompts) if profile.eval.prompts else None
    systems, picker = systems_and_picker(options, tuned, splits, suite)
    with inference_ready(model):
        engine = ComparisonEngine(model, plan.tokenizer, plan.device,
                                  profile.data.system_prompt, profile_chat_format(plan.tokenizer, profile))
        cost = estimate(engine, splits.test, systems, picker, options.max_new_tokens,
                        options.batch_size)
    if options.time_budget_s and cost.total_s > options.time_budget_s:
        # The evaluation will sample rows to fit the budget; say what it will really take.
        share = options.time_budget_s / cost.total_s
        cost.rows = max(1, math.floor(cost.rows * share))
        cost.generation_s *= share
        cost.perplexity_s *= share
    return cost


def announce_before_training(model, plan, run, on_event) -> None:
    """Say in the run's events (the console and the app show them) and status.json what the
    evaluation after training will cost. Advice only: a failure is logged, never fatal."""
    if not plan.profile.eval.after_training:
        return
    try:
        cost = estimate_before_training(model, plan)
    except Exception as exc:  # noqa: BLE001 - the evaluation itself reports real problems later
        with open(run.log_path, "a", encoding="utf-8") as fh:
            fh.write(f"evaluation cost estimate unavailable: {type(exc).__name__}: {exc}\n")
        return
    run.write_status(eval_estimate_s=round(cost.total_s, 1))
    on_event(run.append_event("status", state="running",
                              message="evaluation after training: " + cost.describe(plan.device)))
