"""What the evaluation after training will cost, said before training starts (issue 12).

On a CPU the evaluation of a real model takes minutes (100 rows x 3 systems of SmolLM2-135M:
about two), and a person deciding whether to wait, cap it (`eval.time_budget_s`) or skip it
(`eval.after_training = false`) needs that number before the run, not after.

How it is estimated: the evaluation's own generate calls are planned (`plan_batches`, the rows
it will really answer, few-shot prompts included), then probe calls are timed on the model that
will be evaluated, each with 1 + PROBE_STEPS new tokens (forced, so an early end-of-turn cannot
shorten it), the time of each token taken as it comes:

- the largest zero-shot call: a prefill rate (prompt tokens a second, padding included, as
  `generate` pays for it), which prices every call's prompt (rows x its longest prompt) and the
  perplexity passes (each test row's prompt and reference answer, once per system), and a
  decoding step's time per row at a short context;
- the few-shot call with the longest prompts, when there is one: a decoding step's time per row
  at a long context. Each step reads the whole KV cache (on the CPU, SDPA also expands grouped
  KV heads), so a step of a ~650-token few-shot row costs much more than one of a ~45-token
  question: with one probe only, the estimate was 0.69x the measured generation on SmolLM2-135M
  (bench/eval_speed.md). The two probes give a step's time per row as a line in the context
  length (`StepCost`), and each call's steps are priced at its mean context (its longest prompt
  plus half of `max_new_tokens`).

Every call is priced as if some row in it ran to `max_new_tokens` (a batch of 48 usually has one
that does). The probes cost one zero-shot and one few-shot call's prefill plus a few steps each
(seconds for a 135M model on 2 cores); bench/eval_speed.md checks the estimate against the
measured generation: 0.93x and 1.10x on two runs (SmolLM2-135M, 100 Alpaca rows x 3 systems,
2 CPU cores); the probes' own timing noise is the spread.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from workbench.evaluate.compare import BASE, ComparisonEngine, Row, System, plan_batches

PROBE_STEPS = 4


@dataclass(frozen=True)
class StepCost:
    """Seconds of one decoding step per row, as a line in the context length (tokens in the KV
    cache): `fixed` (the layers' matmuls of one token) + `per_context_token` (reading the cache)."""
    fixed: float
    per_context_token: float = 0.0

    def at(self, context: float) -> float:
        return self.fixed + self.per_context_token * context

    @classmethod
    def through(cls, short: tuple[float, float], long: tuple[float, float] | None) -> "StepCost":
        """From (context, seconds per row) measured at a short and, if any, a long context."""
        (c1, s1) = short
        if long is None or long[0] <= c1:
            return cls(s1)
        per_token = max(0.0, (long[1] - s1) / (long[0] - c1))
        return cls(max(0.0, s1 - per_token * c1), per_token)


@dataclass
class EvalCost:
    rows: int  # test rows (each answered once per system)
    systems: int
    generation_s: float
    perplexity_s: float
    prefill_tokens_per_s: float
    step: StepCost  # one decoding step per row, by context length
    probe_rows: int
    samples: int = 0  # a rewards (GRPO) evaluation: sampled answers per prompt besides greedy

    @property
    def total_s(self) -> float:
        return self.generation_s + self.perplexity_s

    def describe(self, device: str) -> str:
        from workbench.fmt import fmt_duration

        where = "this CPU" if device == "cpu" else f"this {device.upper()}" if device else "here"
        if self.samples:
            return (f"{self.rows} held-out prompts x {self.systems} systems x "
                    f"{1 + self.samples} answers (greedy and {self.samples} sampled), about "
                    f"{fmt_duration(self.total_s)} on {where} (timed on a {self.probe_rows}-row "
                    "probe, every answer priced at grpo.max_completion_len)")
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
    tuned = next((s.adapter for s in systems if s.adapter != BASE), BASE)

    def timed(call: list[int]) -> tuple[float, float, int]:
        """(prefill seconds, decoding seconds per row, context of the probe's steps)."""
        prefill_s, step_s = probe(engine, [rows[i] for i in call], tuned)
        return prefill_s, step_s / len(call), max(lengths[i] for i in call) + PROBE_STEPS // 2

    probe_call = max(zero_shot, key=len)
    prefill_s, short_step, short_context = timed(probe_call)
    rate = len(probe_call) * max(lengths[i] for i in probe_call) / max(prefill_s, 1e-9)
    long_probe = None
    few_shot = [c for c in calls if rows[c[0]].system.shots > 0]
    if few_shot:
        _, long_step, long_context = timed(max(few_shot, key=lambda c: max(lengths[i] for i in c)))
        long_probe = (long_context, long_step)
    step = StepCost.through((short_context, short_step), long_probe)

    answer_tokens = [len(ids) for ids in
                     engine.tokenizer(list(references), add_special_tokens=False)["input_ids"]]
    generation, scoring = price(calls, lengths, [answer_tokens[r.prompt_index] for r in rows],
                                rate, step, max_new_tokens)
    return EvalCost(rows=len(test), systems=len(systems), generation_s=generation,
                    perplexity_s=scoring, prefill_tokens_per_s=rate, step=step,
                    probe_rows=len(probe_call))


def price(calls: list[list[int]], prompt_tokens: list[int], answer_tokens: list[int],
          tokens_per_s: float, step: StepCost, max_new_tokens: int) -> tuple[float, float]:
    """(generation seconds, perplexity seconds). A call pays its prompt as rows x its longest
    prompt (left padding is computed too) and `max_new_tokens` decoding steps of its rows, each
    at the call's mean context (longest prompt + half the new tokens); the perplexity pass reads
    each row's prompt and reference answer once."""
    generation = 0.0
    for c in calls:
        longest = max(prompt_tokens[i] for i in c)
        generation += (len(c) * longest / tokens_per_s
                       + max_new_tokens * len(c) * step.at(longest + max_new_tokens / 2))
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
    from workbench.evaluate.rewards_eval import is_rewards_run

    if is_rewards_run(profile):
        return _rewards_cost(model, plan, options)
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


def _rewards_cost(model, plan, options) -> EvalCost:
    """A GRPO run's evaluation (rewards_eval.py): base and fine-tuned answer each held-out
    prompt greedily and `sample_count` times sampled, up to grpo.max_completion_len tokens, and
    nothing is scored by perplexity. Priced like the other evaluations' generation, from a probe."""
    from workbench.evaluate.evaluation import inference_ready
    from workbench.evaluate.rewards_eval import cap_rows, sample_count
    from workbench.train.plan import profile_chat_format

    profile = plan.profile
    rows, _ = cap_rows(plan.eval_rows, options.max_test_rows, options.seed)
    tuned = "default" if "default" in (getattr(model, "peft_config", None) or {}) else BASE
    # As test records: the prompt and an empty answer (no perplexity is scored).
    records = [{"messages": list(r["prompt"]) + [{"role": "assistant", "content": ""}]}
               for r in rows]
    with inference_ready(model):
        engine = ComparisonEngine(model, plan.tokenizer, plan.device, "",
                                  profile_chat_format(plan.tokenizer, profile))
        cost = estimate(engine, records, [System("base"), System("fine-tuned", tuned)], None,
                        profile.grpo.max_completion_len, options.batch_size)
    k = sample_count(profile)
    cost.generation_s *= 1 + k
    cost.perplexity_s, cost.samples = 0.0, k
    if options.time_budget_s and cost.total_s > options.time_budget_s:
        cost.rows = max(1, math.floor(cost.rows * options.time_budget_s / cost.total_s))
        cost.generation_s = options.time_budget_s
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
