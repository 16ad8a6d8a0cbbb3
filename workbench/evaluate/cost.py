"""What the evaluation after training will cost, said before training starts (issue 12).

On a CPU the evaluation of a real model takes minutes (100 rows x 3 systems of SmolLM2-135M:
about two), and a person deciding whether to wait, cap it (`eval.time_budget_s`) or skip it
(`eval.after_training = false`) needs that number before the run, not after.

How it is estimated: the evaluation's own generate calls are planned (`plan_batches`, the rows
it will really answer, few-shot prompts included), then a few small probe calls are timed on the
model that will be evaluated, each with 1 + PROBE_STEPS new tokens (forced, so an early
end-of-turn cannot shorten it), the time of each token taken as it comes. A call's cost has a
part paid once per call whatever its rows (reading the weights, Python, kernel launches: about
0.1 s a decoding step for SmolLM2-135M on 2 cores) and a part paid per row, so rows are not
priced by dividing one call's time by its rows:

- two zero-shot probes, the longest prompts of the largest zero-shot call: 2 rows and
  `probe_size` rows (about PROBE_TOKENS prompt tokens), padded to the same length. Their
  difference gives the prefill rate (prompt tokens a second, padding included, as `generate`
  pays for it) and a decoding step's time per row at a short context; what is left is the
  per-call part (`CallCost`). The rate prices every call's prompt (rows x its longest prompt)
  and the perplexity passes (each test row's prompt and reference answer, once per system);
- the few-shot call with the longest prompts, when there is one, on `probe_size` of its rows:
  a decoding step's time per row at a long context. Each step reads the whole KV cache (on the
  CPU, SDPA also expands grouped KV heads), so a step of a ~650-token few-shot row costs much
  more than one of a ~45-token question. The probes give a step's time per row as a line in the
  context length (`StepCost`), and each call's steps are priced at its mean context (its
  longest prompt plus half of `max_new_tokens`).

Every call is priced as if some row in it ran to `max_new_tokens` (a batch of 48 usually has one
that does). Before, the probes were whole calls (48 rows, the few-shot one 48 x ~650 tokens):
about 145 s on SmolLM2-135M on 2 cores, before training began (issue 25). Now they take about
16 s there (0.5 s on the demo), and the run times them after its first optimizer step
(workbench/pipeline/timing.py), stating the cost long before it is paid.
bench/eval_cost_check.md compares the stated cost with whole evaluations: 1.28x on the demo,
0.69x on SmolLM2-135M (24 Alpaca rows x 3 systems, 32 new tokens); the whole-call probes had
0.93x and 1.10x on the generation of 100 rows (bench/eval_speed.md, another shape). Known
gap: the prefill rate comes from the short zero-shot probes, and the few-shot prompts
(~650 tokens, attention growing with the length) prefill slower per token.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from workbench.evaluate.compare import BASE, ComparisonEngine, Row, System, plan_batches
# The run was asked to stop while a probe was generating: the estimate is dropped. One stop
# exception for every generation of the evaluate room (errors.py).
from workbench.evaluate.errors import Stopped  # noqa: F401 - re-exported

PROBE_STEPS = 8  # decoding steps timed a probe: small probes' steps are cheap, more of them steadier
PROBE_TOKENS = 1024  # prompt tokens of a probe, about: rows = PROBE_TOKENS // its longest prompt
PROBE_MIN_ROWS = 4  # ... but at least this many (or the whole call), so a row's share shows


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


@dataclass(frozen=True)
class CallCost:
    """What a generate call pays whatever its rows: seconds of its prefill and of each decoding
    step (the weights read once, Python, kernel launches)."""
    prefill_s: float = 0.0
    step_s: float = 0.0


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
    call: CallCost = CallCost()  # paid once per generate call
    probe_s: float = 0.0  # what the probes took
    text: bool = False  # a raw-text run's: perplexity on held-out blocks only, nothing generated

    @property
    def total_s(self) -> float:
        return self.generation_s + self.perplexity_s

    def describe(self, device: str) -> str:
        from workbench.fmt import fmt_duration

        where = "this CPU" if device == "cpu" else f"this {device.upper()}" if device else "here"
        if self.text:
            return (f"perplexity of {self.rows} held-out blocks of text x {self.systems} "
                    f"systems, about {fmt_duration(self.total_s)} on {where} (timed on a "
                    f"{self.probe_rows}-block probe)")
        if self.samples:
            return (f"{self.rows} held-out prompts x {self.systems} systems x "
                    f"{1 + self.samples} answers (greedy and {self.samples} sampled), about "
                    f"{fmt_duration(self.total_s)} on {where} (timed on a {self.probe_rows}-row "
                    "probe, every answer priced at grpo.max_completion_len)")
        return (f"{self.rows} rows x {self.systems} systems, about {fmt_duration(self.total_s)} on "
                f"{where} (generation {fmt_duration(self.generation_s)}, perplexity "
                f"{fmt_duration(self.perplexity_s)}; timed on a {self.probe_rows}-row probe, every "
                "answer priced at eval.max_new_tokens)")


def probe(engine: ComparisonEngine, rows: list[Row], adapter: str, steps: int = PROBE_STEPS,
          should_stop=None) -> tuple[float, float]:
    """(prefill seconds, seconds a decoding step) of one generate call on `rows`. Under
    no_grad rather than inference_mode: it runs between training steps, and a tensor a module
    caches under inference_mode could not be saved for training's backward afterwards.
    `should_stop()` true after a token ends the call at once (`Stopped`)."""
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
            if should_stop is not None and should_stop():
                raise Stopped()
            return torch.zeros((input_ids.shape[0],), dtype=torch.bool, device=input_ids.device)

    n = steps + 1
    with torch.no_grad(), engine.using(adapter):
        started = time.perf_counter()
        engine.model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                              pad_token_id=tok.pad_token_id, temperature=None, top_p=None,
                              top_k=None, stopping_criteria=StoppingCriteriaList([Clock()]))
    return stamps[0] - started, (stamps[-1] - stamps[0]) / max(len(stamps) - 1, 1)


def probe_size(call: list[int], lengths: list[int]) -> int:
    """Rows of a probe on `call` (longest prompts first): about PROBE_TOKENS prompt tokens."""
    longest = max(lengths[i] for i in call)
    return min(len(call), max(PROBE_MIN_ROWS, PROBE_TOKENS // max(longest, 1)))


def estimate(engine: ComparisonEngine, test: list[dict], systems: list[System], picker,
             max_new_tokens: int, batch_size: int, should_stop=None) -> EvalCost:
    """The cost of answering `test` with every system and scoring its perplexity, from a few
    small timed probe calls (see the module's docstring)."""
    from workbench.evaluate.evaluation import split_for_generation

    started = time.perf_counter()
    convos, references = zip(*(split_for_generation(r) for r in test)) if test else ((), ())
    rows = engine.rows(list(convos), systems, picker)
    lengths = engine.prompt_lengths(rows)
    calls = plan_batches(rows, lengths, batch_size)
    zero_shot = [c for c in calls if rows[c[0]].system.shots == 0] or calls
    tuned = next((s.adapter for s in systems if s.adapter != BASE), BASE)

    def timed(call: list[int]) -> tuple[float, float, int]:
        """(prefill seconds, decoding step seconds, padded prompt tokens) of a probe on `call`."""
        prefill_s, step_s = probe(engine, [rows[i] for i in call], tuned,
                                  should_stop=should_stop)
        return prefill_s, step_s, max(lengths[i] for i in call)

    # calls run longest prompt first: a probe's first rows share the call's padded length
    biggest = max(zero_shot, key=len)
    size = probe_size(biggest, lengths)
    prefill_s, step_s, width = timed(biggest[:size])
    short_context = width + PROBE_STEPS // 2
    if size > 2:  # what one more row adds, from a 2-row probe of the same width
        small_prefill, small_step, _ = timed(biggest[:2])
        per_row_step = max(0.0, (step_s - small_step) / (size - 2))
        per_row_prefill = max(1e-9, (prefill_s - small_prefill) / (size - 2))
        call = CallCost(prefill_s=max(0.0, small_prefill - 2 * per_row_prefill),
                        step_s=max(0.0, small_step - 2 * per_row_step))
        if per_row_step == 0.0:  # the difference drowned in timing noise: no split then
            per_row_step, call = step_s / size, CallCost()
    else:
        per_row_step, per_row_prefill, call = step_s / size, prefill_s / size, CallCost()
    rate = width / per_row_prefill
    long_probe = None
    few_shot = [c for c in calls if rows[c[0]].system.shots > 0]
    if few_shot:
        longest = max(few_shot, key=lambda c: max(lengths[i] for i in c))
        n = probe_size(longest, lengths)
        _, long_step, long_width = timed(longest[:n])
        long_probe = (long_width + PROBE_STEPS // 2, max(0.0, long_step - call.step_s) / n)
    step = StepCost.through((short_context, per_row_step), long_probe)

    answer_tokens = [len(ids) for ids in
                     engine.tokenizer(list(references), add_special_tokens=False)["input_ids"]]
    generation, scoring = price(calls, lengths, [answer_tokens[r.prompt_index] for r in rows],
                                rate, step, max_new_tokens, call=call)
    return EvalCost(rows=len(test), systems=len(systems), generation_s=generation,
                    perplexity_s=scoring, prefill_tokens_per_s=rate, step=step,
                    probe_rows=size, call=call, probe_s=time.perf_counter() - started)


def price(calls: list[list[int]], prompt_tokens: list[int], answer_tokens: list[int],
          tokens_per_s: float, step: StepCost, max_new_tokens: int,
          call: CallCost = CallCost()) -> tuple[float, float]:
    """(generation seconds, perplexity seconds). A call pays its prompt as rows x its longest
    prompt (left padding is computed too) and `max_new_tokens` decoding steps of its rows, each
    at the call's mean context (longest prompt + half the new tokens), plus its per-call part
    (`call`); the perplexity pass reads each row's prompt and reference answer once."""
    generation = 0.0
    for c in calls:
        longest = max(prompt_tokens[i] for i in c)
        generation += (call.prefill_s + len(c) * longest / tokens_per_s
                       + max_new_tokens * (call.step_s
                                           + len(c) * step.at(longest + max_new_tokens / 2)))
    scoring = sum(p + a for p, a in zip(prompt_tokens, answer_tokens)) / tokens_per_s
    return generation, scoring


def estimate_evaluation(model, plan, should_stop=None) -> EvalCost:
    """The cost of the evaluation `evaluate_after_training` will run on `model` (the PEFT model
    in training: same shapes, so the same speed), its rows chosen as it will choose them.
    `should_stop()` true ends the probes at their next token (`Stopped`)."""
    from workbench.evaluate.evaluation import (EvalOptions, _capped, inference_ready,
                                               systems_and_picker)
    from workbench.evaluate.suite import load_prompts
    from workbench.evaluate.testset import load_splits
    from workbench.train.plan import profile_chat_format

    profile = plan.profile
    options = EvalOptions.from_profile(profile)
    from workbench.evaluate.rewards_eval import is_rewards_run

    if is_rewards_run(profile):
        return _rewards_cost(model, plan, options, should_stop)
    from workbench.evaluate.text_perplexity import is_text_run

    if is_text_run(profile):
        return _text_cost(model, plan, options, should_stop)
    splits = _capped(load_splits(profile), options.max_test_rows, options.seed)
    tuned = "default" if "default" in (getattr(model, "peft_config", None) or {}) else BASE
    suite = load_prompts(profile.eval.prompts) if profile.eval.prompts else None
    systems, picker = systems_and_picker(options, tuned, splits, suite)
    with inference_ready(model):
        engine = ComparisonEngine(model, plan.tokenizer, plan.device,
                                  profile.data.system_prompt, profile_chat_format(plan.tokenizer, profile))
        cost = estimate(engine, splits.test, systems, picker, options.max_new_tokens,
                        options.batch_size, should_stop)
    if options.time_budget_s and cost.total_s > options.time_budget_s:
        # The evaluation will sample rows to fit the budget; say what it will really take.
        share = options.time_budget_s / cost.total_s
        cost.rows = max(1, math.floor(cost.rows * share))
        cost.generation_s *= share
        cost.perplexity_s *= share
    return cost


def _rewards_cost(model, plan, options, should_stop=None) -> EvalCost:
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
                        profile.grpo.max_completion_len, options.batch_size, should_stop)
    k = sample_count(profile)
    cost.generation_s *= 1 + k
    cost.perplexity_s, cost.samples = 0.0, k
    if options.time_budget_s and cost.total_s > options.time_budget_s:
        cost.rows = max(1, math.floor(cost.rows * options.time_budget_s / cost.total_s))
        cost.generation_s = options.time_budget_s
    return cost


def _text_cost(model, plan, options, should_stop=None) -> EvalCost:
    """A raw-text run's evaluation (text_perplexity.py): one forward pass over each held-out
    block per system, nothing generated. Timed on a probe of a few blocks with the adapter on
    (the base pass, adapter off, costs the same)."""
    from workbench.evaluate.evaluation import inference_ready
    from workbench.evaluate.text_perplexity import BATCH_SIZE, block_losses

    blocks = [r["input_ids"] for r in plan.eval_rows]
    rows = min(len(blocks), options.max_test_rows) if options.max_test_rows else len(blocks)
    probe = blocks[:min(rows, BATCH_SIZE)]
    tuned = "default" if "default" in (getattr(model, "peft_config", None) or {}) else BASE
    started = time.perf_counter()
    if probe:
        with inference_ready(model):
            engine = ComparisonEngine(model, plan.tokenizer, plan.device)
            block_losses(engine, probe, tuned, cancel=should_stop)
    spent = time.perf_counter() - started
    per_block = spent / max(len(probe), 1)
    tokens = sum(len(b) for b in probe)
    return EvalCost(rows=rows, systems=2, generation_s=0.0, perplexity_s=per_block * rows * 2,
                    prefill_tokens_per_s=tokens / spent if spent else 0.0, step=StepCost(0.0),
                    probe_rows=len(probe), probe_s=spent, text=True)


TIMING_MESSAGE = "timing the evaluation after training"


def announce(model, plan, run, on_event, should_stop=None) -> EvalCost | None:
    """Time the probes and say in the run's events (the console and the app show them) and
    status.json what the evaluation after training will cost; "timing the evaluation after
    training" while the probes run. Advice only: a failure is logged, never fatal; a stop
    requested meanwhile drops it (None)."""
    if not plan.profile.eval.after_training:
        return None
    on_event(run.append_event("status", state="running", message=TIMING_MESSAGE))
    try:
        cost = estimate_evaluation(model, plan, should_stop)
    except Stopped:
        on_event(run.append_event("status", state="running", message=(
            "evaluation after training: not timed, the run was asked to stop")))
        return None
    except Exception as exc:  # noqa: BLE001 - the evaluation itself reports real problems later
        with open(run.log_path, "a", encoding="utf-8") as fh:
            fh.write(f"evaluation cost estimate unavailable: {type(exc).__name__}: {exc}\n")
        on_event(run.append_event("status", state="running", message=(
            f"evaluation after training: not timed ({type(exc).__name__}; see {run.log_path})")))
        return None
    run.write_status(eval_estimate_s=round(cost.total_s, 3))  # a tiny model's is < 0.1 s
    on_event(run.append_event("status", state="running",
                              message="evaluation after training: " + cost.describe(plan.device)))
    return cost
