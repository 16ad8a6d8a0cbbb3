"""`workbench eval`: the three systems on the test split (perplexity and task metrics), the
prompt suite side by side, and optionally every checkpoint, as one JSON-able dict that
report.py turns into report.md / report.json."""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from typing import Callable

from workbench.evaluate.compare import (BASE, ComparisonEngine, Generations, System,
                                       default_systems)
from workbench.evaluate.errors import EvaluateError, check_stop


@dataclass
class EvalOptions:
    shots: int = 3
    selection: str = "fixed"  # or "bm25"
    metrics: tuple[str, ...] = ()  # reported beside the primary; () = its companions
    metric: str = "auto"  # the primary metric; "auto" chooses it from the references
    max_new_tokens: int = 128
    seed: int = 42
    batch_size: int = 48  # rows a generate call (each prompt is 3 rows)
    max_test_rows: int = 200  # a seeded sample above this; 0 = every row
    checkpoints: bool = False
    time_budget_s: float = 0.0  # 0 = no cap; else rows sampled to fit, from a measured pilot

    @classmethod
    def from_profile(cls, profile, **overrides) -> "EvalOptions":
        e = profile.eval
        opts = cls(shots=e.shots, metrics=tuple(e.metrics), metric=e.metric,
                   max_new_tokens=e.max_new_tokens, seed=profile.train.seed,
                   max_test_rows=e.max_test_rows, time_budget_s=e.time_budget_s)
        for k, v in overrides.items():
            if v is not None:
                setattr(opts, k, v)
        return opts

    def metric_names(self, references) -> tuple[list[str], str]:
        """(the metrics to report, the primary first; why the primary) for these references."""
        from workbench.evaluate.verdict import choose_metric, companions

        primary, why = choose_metric(references, self.metric)
        return list(dict.fromkeys([primary, *(self.metrics or companions(primary))])), why


def split_for_generation(record: dict) -> tuple[list[dict], str]:
    """A test record as (the conversation up to its last answer, that answer)."""
    msgs = record["messages"]
    last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
    if last is None:
        return msgs, ""
    return msgs[:last], msgs[last]["content"]


def _capped(splits, cap: int, seed: int):
    """At most `cap` test rows, a seeded sample in file order, said in the report's notes."""
    import random
    from dataclasses import replace

    if not cap or len(splits.test) <= cap:
        return splits
    keep = sorted(random.Random(seed).sample(range(len(splits.test)), cap))
    note = (f"scored a seeded sample of {cap} of the {len(splits.test)} test rows "
            "(eval.max_test_rows; 0 scores every row)")
    return replace(splits, test=[splits.test[i] for i in keep], notes=[*splits.notes, note])


PILOT_ROWS = 8


def _within_budget(engine, splits, systems, picker, options, gen, log):
    """eval.time_budget_s: time a pilot of a few test rows (perplexity and answers of every
    system), then keep the seeded sample of rows that fits the budget; said in the notes."""
    from dataclasses import replace

    from workbench.evaluate.perplexity import perplexity

    pilot = splits.test[:PILOT_ROWS]
    started = time.perf_counter()
    for s in systems:
        perplexity(engine, pilot, s, picker, cancel=gen.get("cancel"))
    convos = [split_for_generation(r)[0] for r in pilot]
    engine.generate(engine.rows(convos, systems, picker), **gen)
    check_stop(gen.get("cancel"))
    per_row = (time.perf_counter() - started) / max(len(pilot), 1)
    fit = max(len(pilot), int((options.time_budget_s - per_row * len(pilot)) / per_row))
    log(f"  time budget {options.time_budget_s:g} s: {per_row:.2f} s a row measured on "
        f"{len(pilot)} rows, so {min(fit, len(splits.test))} of {len(splits.test)} rows fit")
    if fit >= len(splits.test):
        return splits
    capped = _capped(splits, fit, options.seed)
    note = (f"eval.time_budget_s = {options.time_budget_s:g}: scored a seeded sample of {fit} of "
            f"the {len(splits.test)} test rows ({per_row:.2f} s a row, measured on {len(pilot)})")
    return replace(capped, notes=[*splits.notes, note])


def systems_and_picker(options: EvalOptions, tuned: str, splits, prompts: list[dict] | None = None):
    """The systems compared (few-shot left out when options.shots is 0) and the few-shot
    examples' picker: from the train split only, never one whose prompt is a test or suite
    prompt. `evaluate` and the cost estimate (cost.py) both use it, so they plan the same rows."""
    from workbench.evaluate.fewshot import FewShotPicker, prompt_of

    systems = default_systems(options.shots, tuned)
    if options.shots == 0:
        systems = [s for s in systems if s.name != "few-shot"]
    test_prompts = [prompt_of(r) for r in splits.test] + [p["prompt"] for p in prompts or []]
    picker = FewShotPicker(splits.train, options.shots, seed=options.seed,
                           selection=options.selection, exclude_prompts=test_prompts)
    return systems, picker


def evaluate(engine: ComparisonEngine, profile, splits, prompts: list[dict] | None,
             options: EvalOptions, log: Callable[[str], None] = lambda s: None,
             cancel=None, progress: Callable[[str, int, int], None] | None = None) -> dict:
    """`progress(stage, done, total)` hears each stage start (done 0) and every row scored
    or answered in it (see progress.py)."""
    from workbench.evaluate.fewshot import prompt_of
    from workbench.evaluate.metrics import score_all
    from workbench.evaluate.verdict import judge, row_scores
    from workbench.evaluate.perplexity import perplexity
    from workbench.evaluate.suite import suite_summary

    tuned = _tuned_adapter(engine)
    systems, picker = systems_and_picker(options, tuned, splits, prompts)
    gen = dict(max_new_tokens=options.max_new_tokens, seed=options.seed,
               batch_size=options.batch_size, cancel=cancel)
    out: dict = {"systems": [asdict(s) for s in systems], "options": asdict(options),
                 "fewshot": {"selection": options.selection, "k": picker.k, "pool": len(picker.pool),
                             "excluded_overlapping_test": picker.excluded}}

    splits = _capped(splits, options.max_test_rows, options.seed)
    say = progress or (lambda stage, done, total: None)
    if options.time_budget_s:
        splits = _within_budget(engine, splits, systems, picker, options, gen, log)

    # `cancel` (an Event, or a run's should_stop) is asked between perplexity batches and
    # after every generated token: a stop ends the evaluation within seconds (`Stopped`).
    def ppl_of(stage: str, system: System) -> dict:
        say(stage, 0, len(splits.test))
        return perplexity(engine, splits.test, system, picker, cancel=cancel,
                          on_batch=lambda done, total: say(stage, done, total)).to_dict()

    def answers(stage: str, rows) -> Generations:
        say(stage, 0, len(rows))
        out = engine.generate(rows, on_row_done=lambda ev: say(stage, ev.done, ev.total), **gen)
        check_stop(cancel)  # the rows cut short are no answers to score
        return out

    # ---- test split ------------------------------------------------------------------------
    log(f"test split: {len(splits.test)} rows from {splits.source}")
    ppl = {}
    for s in systems:
        started = time.perf_counter()
        ppl[s.name] = ppl_of(f"perplexity {s.name}", s)
        log(f"  perplexity {s.name}: answer {ppl[s.name]['answer_ppl']:.3f}, all "
            f"{ppl[s.name]['all_ppl']:.3f} ({time.perf_counter() - started:.1f}s)")
    convos, refs = zip(*(split_for_generation(r) for r in splits.test))
    log(f"  generating {len(convos)} x {len(systems)} answers in batched calls")
    gens = answers("test answers", engine.rows(list(convos), systems, picker))
    names, why = options.metric_names(refs)
    primary = names[0]
    predictions = {s.name: [gens.text(s.name, i) for i in range(len(refs))] for s in systems}
    metrics = {s.name: score_all(names, predictions[s.name], list(refs)) for s in systems}
    log(f"  primary metric: {primary} ({why}; eval.metric chooses another)")
    for name, m in metrics.items():
        log(f"  {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in m.items()))
    judged = judge({s.name: row_scores(primary, predictions[s.name], refs) for s in systems},
                   primary, seed=options.seed)
    log(f"  verdict: {judged['text']}")
    out["test"] = {
        "source": splits.source, "rows": len(splits.test), "notes": splits.notes,
        "perplexity": ppl, "metrics": metrics, "primary": {"metric": primary, "why": why},
        "verdict": judged,
        "timing": {k: v.to_dict() for k, v in gens.timing.items()}, "wall_s": round(gens.wall_s, 2),
        "examples": [{"prompt": prompt_of({"messages": list(c)}), "reference": r,
                      "answers": {s.name: gens.text(s.name, i) for s in systems}}
                     for i, (c, r) in enumerate(zip(convos, refs))],
    }

    # ---- prompt suite ----------------------------------------------------------------------
    if prompts:
        log(f"prompt suite: {len(prompts)} prompts")
        sg = answers("prompt suite answers",
                     engine.rows([p["prompt"] for p in prompts], systems, picker))
        rows = [{"prompt": p["prompt"], "reference": p["reference"],
                 "answers": {s.name: sg.text(s.name, i) for s in systems}}
                for i, p in enumerate(prompts)]
        out["suite"] = {"rows": rows, "summary": suite_summary(rows, [s.name for s in systems]),
                        "timing": {k: v.to_dict() for k, v in sg.timing.items()}}

    # ---- checkpoints: how the answer perplexity moved ---------------------------------------
    steps = [a for a in engine.adapters if a.startswith("step-")]
    if steps:
        out["checkpoints"] = []
        for name in sorted(steps, key=lambda a: int(a.split("-")[1])):
            p = ppl_of(f"perplexity {name}", System(name, name))
            out["checkpoints"].append({"step": int(name.split("-")[1]), **p})
            log(f"  {name}: answer perplexity {p['answer_ppl']:.3f}")
    check_stop(cancel)
    return out


def evaluate_run(run, *, prompts_file: str | None = None, engine: ComparisonEngine | None = None,
                 profile=None, log: Callable[[str], None] = lambda s: None, cancel=None,
                 write: bool = True, device: str = "auto",
                 progress: Callable[[dict], None] | None = None,
                 on_event: Callable[[dict], None] | None = None, final_state: str | None = None,
                 preference_rows: list[dict] | None = None,
                 preference_train_rows: list[dict] | None = None,
                 reward_rows: list[dict] | None = None,
                 text_rows: list[dict] | None = None, **overrides) -> dict:
    """The whole `workbench eval`: load (or reuse) the engine, evaluate, write report.md,
    report.json and prompt_suite.json into the run folder. Everything that can fail on bad
    input (adapter, prompts, test split) is checked before the model is loaded.

    A preference run (train.method "dpo", "orpo", "kto", "simpo") is evaluated on its held-out
    preference rows (`evaluate_preference`): `preference_rows` / `preference_train_rows` as the
    training plan holds them, else prepared again by the method's data room as it trained.
    A rewards run (train.method "grpo") is evaluated on its held-out prompts by its reward
    functions (rewards_eval.py): `reward_rows` as the training plan holds them, else prepared
    again the same way; its answers run to grpo.max_completion_len unless max_new_tokens is
    given.
    A raw-text run (continued pretraining, data/raw_text.py) is evaluated by perplexity on its
    held-out text, base against fine-tuned (text_perplexity.py): `text_rows` are the held-out
    blocks as the training plan holds them, else packed again as training packed them.

    Progress: `progress(fields)` hears every report (stage, done, total, eta_s); with `write`,
    a few a stage are also appended to the run's events.jsonl as `eval_progress` events and
    handed to `on_event`. `final_state` is the state the report states when the caller is
    about to end the run in it (the runner evaluates just before it marks the run finished)."""
    from workbench.evaluate import report
    from workbench.evaluate.compare import run_adapters
    from workbench.evaluate.progress import EvalProgress
    from workbench.evaluate.suite import load_prompts
    from workbench.evaluate.testset import load_splits
    from workbench.profile import ProfileError, load_profile
    from workbench.rundir import write_json_atomic

    if profile is None:
        try:
            profile = load_profile(run.profile_path)
        except ProfileError as exc:
            raise EvaluateError(f"could not read the run's profile: {exc}") from exc
    options = EvalOptions.from_profile(profile, **overrides)
    from workbench.evaluate.preference import is_preference_run, load_preference_rows
    from workbench.evaluate.rewards_eval import is_rewards_run, load_reward_rows
    from workbench.evaluate.text_perplexity import is_text_run

    rewards = is_rewards_run(profile)
    text = is_text_run(profile)
    # A rewards or raw-text run is scored by its final adapter only: no checkpoints, no
    # prompt suite.
    adapters = None if engine is not None else run_adapters(
        run, checkpoints=options.checkpoints and not rewards and not text)
    suite_path = prompts_file or profile.eval.prompts
    prompts = load_prompts(suite_path) if suite_path and not rewards and not text else None
    preference = not rewards and not text and is_preference_run(profile)
    if preference and preference_rows is None:
        preference_rows, preference_train_rows = load_preference_rows(profile, log)
    if rewards and reward_rows is None:
        reward_rows = load_reward_rows(profile, log)
    splits = None if preference or rewards or text else load_splits(profile)
    if engine is None:
        log(f"loading {profile.model.name_or_path} with adapter(s) {', '.join(adapters)}")
        engine = ComparisonEngine.from_run(run, profile, adapters=adapters, device=device)
        check_stop(cancel)  # asked while the model loaded

    def record(fields: dict) -> None:
        event = run.append_event("eval_progress", **fields)
        if on_event is not None:
            on_event(event)

    tracker = EvalProgress(on_update=progress, on_periodic=record if write else None)
    if rewards:
        result = _evaluate_rewards(engine, profile, reward_rows, options,
                                   max_new_tokens=overrides.get("max_new_tokens"), log=log,
                                   cancel=cancel, progress=tracker)
    elif text:
        result = _evaluate_text(engine, profile, text_rows, options, log=log, cancel=cancel,
                                progress=tracker)
    elif preference:
        result = evaluate_preference(engine, profile, preference_rows, preference_train_rows or [],
                                     prompts, options, log=log, cancel=cancel, progress=tracker)
    else:
        result = evaluate(engine, profile, splits, prompts, options, log=log, cancel=cancel,
                          progress=tracker)
    if write:
        if "suite" in result:
            write_json_atomic(run.path / "prompt_suite.json", {**result["suite"]["summary"],
                                                                "rows": result["suite"]["rows"]})
        report.write(run, profile, result, state=final_state)
    return result


def evaluate_after_training(model, plan, run, log: Callable[[str], None] = lambda s: None,
                            on_event: Callable[[dict], None] | None = None,
                            final_state: str = "finished", cancel=None) -> dict:
    """The end of every training run: the in-memory PEFT model (adapter "default") is the
    fine-tuned system, the same weights with the adapter off are the base. The run is still
    `running` while this runs; the report states `final_state`, what the runner marks it next.
    `cancel` is the run's should_stop: a stop ends the evaluation within seconds (`Stopped`)."""
    from workbench.evaluate.preference import is_preference_run
    from workbench.evaluate.rewards_eval import is_rewards_run
    from workbench.evaluate.text_perplexity import is_text_run
    from workbench.train.plan import profile_chat_format

    tokenizer = plan.tokenizer
    with inference_ready(model):
        engine = ComparisonEngine(model, tokenizer, plan.device, plan.profile.data.system_prompt,
                                  profile_chat_format(tokenizer, plan.profile))
        engine.tuned_adapter = "default" if "default" in engine.adapters else engine.adapters[0]
        rows = {}
        if is_rewards_run(plan.profile):  # plan.eval_rows are held-out prompts
            rows = dict(reward_rows=plan.eval_rows)
        elif is_text_run(plan.profile):  # plan.eval_rows are the held-out blocks of raw text
            rows = dict(text_rows=plan.eval_rows)
        elif is_preference_run(plan.profile):  # plan.eval_rows are held-out preference rows
            rows = dict(preference_rows=plan.eval_rows, preference_train_rows=plan.train_rows)
        return evaluate_run(run, engine=engine, profile=plan.profile, log=log, on_event=on_event,
                            final_state=final_state, cancel=cancel, **rows)


def _tuned_adapter(engine: ComparisonEngine) -> str:
    """The fine-tuned system's adapter: the one the engine names, else "tuned", else its first."""
    return getattr(engine, "tuned_adapter", None) or (
        "tuned" if "tuned" in engine.adapters else (engine.adapters or [BASE])[0])


# ---- raw-text runs (continued pretraining) -------------------------------------------------------


def _evaluate_text(engine: ComparisonEngine, profile, rows: list[dict] | None,
                   options: EvalOptions, log: Callable[[str], None] = lambda s: None,
                   cancel=None, progress=None) -> dict:
    """Perplexity on the held-out text, base against fine-tuned (text_perplexity.py); the
    rows packed again as training packed them when the caller has none."""
    from workbench.evaluate.text_perplexity import evaluate_text, load_text_rows

    documents = None
    if rows is None:
        rows, documents = load_text_rows(profile, engine.tokenizer, log)
    summary = evaluate_text(engine, rows, options, tuned=_tuned_adapter(engine),
                            documents=documents, log=log, cancel=cancel, progress=progress)
    return {"options": asdict(options), "text": summary}


# ---- rewards (GRPO) runs ------------------------------------------------------------------------


def _evaluate_rewards(engine: ComparisonEngine, profile, rows: list[dict], options: EvalOptions,
                      **kwargs) -> dict:
    """A rewards run's evaluation (rewards_eval.py) against the model RL started from: the
    adapter off, or the starting adapter of a run that trained on from model.adapter
    (`_reference_adapter`), loaded here and removed afterwards."""
    from workbench.evaluate.rewards_eval import evaluate_rewards

    tuned = _tuned_adapter(engine)
    reference, base_is, loaded, notes = _reference_adapter(engine, profile)
    try:
        return evaluate_rewards(engine, profile, rows, options, base=(reference, base_is, notes),
                                **kwargs)
    finally:
        if loaded:  # the model as it came: only its own adapters, the fine-tuned one active
            engine.model.set_adapter(tuned)
            engine.model.delete_adapter(reference)


# ---- preference runs ---------------------------------------------------------------------------


def evaluate_preference(engine: ComparisonEngine, profile, rows: list[dict], train_rows: list[dict],
                        prompts: list[dict] | None, options: EvalOptions,
                        log: Callable[[str], None] = lambda s: None, cancel=None,
                        progress: Callable[[str, int, int], None] | None = None) -> dict:
    """A preference run's evaluation: held-out preference accuracy base vs fine-tuned (or, for
    unpaired KTO rows, the log-likelihood changes of desirable vs undesirable answers) on a
    seeded sample of eval.max_test_rows rows (preference.py), then `evaluate` unchanged on the
    rows' prompts with the chosen answers as references (few-shot examples from the train rows),
    whose base and fine-tuned answer lengths make the length-bias check. eval.time_budget_s:
    scoring the rows is a few forward passes each, and always runs; the generations get what
    is left of the budget (at least a pilot's rows). The result is `evaluate`'s dict plus
    "preference" (report.py's Preference section; its verdict is the run's verdict).

    The base is the model preference tuning started from: the adapter off, or, for a run that
    trained on from model.adapter (SFT, then DPO), that starting adapter (`_reference_adapter`);
    the length check then compares the fine-tuned answers with the starting adapter's."""
    from workbench.evaluate import preference as pref

    tuned = _tuned_adapter(engine)
    rows, note = pref.cap_rows(rows, options.max_test_rows, options.seed)
    if not rows:
        raise EvaluateError("the run has no held-out preference rows to evaluate on",
                            hint="keep data.validation_split above 0, or give data.validation")
    started = time.perf_counter()
    reference, base_is, loaded, ref_notes = _reference_adapter(engine, profile)
    try:
        log(f"preference: {len(rows)} held-out rows, base ({base_is}) vs fine-tuned ({tuned})")
        summary = pref.preference_evaluation(engine.model, rows, adapter=tuned,
                                             reference=reference, device=engine.device,
                                             progress=progress, cancel=cancel, seed=options.seed)
        spent = time.perf_counter() - started
        summary["notes"] = ([note] if note else []) + ref_notes + summary["notes"]
        out, length = _preference_generations(engine, profile, rows, train_rows, prompts, options,
                                              spent, reference, summary, log, cancel, progress)
    finally:
        if loaded:  # the model as it came: only its own adapters, the fine-tuned one active
            engine.model.set_adapter(tuned)
            engine.model.delete_adapter(reference)
    verdict = pref.preference_verdict(summary, length)
    out["preference"] = {"method": pref.training_method(profile), "rows_scored": len(rows),
                         "source": "held-out preference rows of the run", "base": base_is,
                         **summary, "length": length, "verdict": verdict}
    log(f"  preference verdict: {verdict['text']}")
    return out


def _preference_generations(engine, profile, rows, train_rows, prompts, options, spent, reference,
                            summary, log, cancel, progress):
    """`evaluate` on the rows' prompts, and the length check it makes possible: fine-tuned
    against the base's answers, or against the starting adapter's (`reference`, answered in
    one more pass) when the run trained on from one. Returns (evaluate's dict, length check)."""
    from dataclasses import replace

    from workbench.evaluate import preference as pref
    from workbench.evaluate.fewshot import prompt_of
    from workbench.evaluate.testset import Splits


    for key in ("accuracy", "accuracy_normalized"):
        if summary["paired"]:
            a = summary["paired"][key]
            log(f"  {key.replace('_', ' ')}: base {a['base']:.1f}%, fine-tuned "
                f"{a['fine-tuned']:.1f}% ({spent:.1f}s)")

    records, notes = pref.generation_records(rows)
    pool, _ = pref.generation_records(train_rows)
    gen_options = replace(options, shots=options.shots if pool else 0)
    if options.time_budget_s:
        gen_options.time_budget_s = max(options.time_budget_s - spent, 1e-3)
    if not pool and options.shots:
        summary["notes"].append("no few-shot system: the train rows carry no prompt / answer "
                                "messages to show as examples")
    if not records:
        summary["notes"] += notes + ["no prompt to generate answers for: no length check"]
        return {"options": asdict(options)}, None
    splits = Splits(train=pool, test=records, notes=notes,
                    source="the held-out preference rows' prompts, their chosen answers as "
                           "references")
    out = evaluate(engine, profile, splits, prompts, gen_options, log=log, cancel=cancel,
                   progress=progress)
    out["options"] = asdict(options)
    examples = out["test"]["examples"]
    base_texts = [e["answers"]["base"] for e in examples]
    if reference is not None:
        # The rows evaluate answered (a time budget may have sampled them), by their prompt.
        by_prompt: dict[str, dict] = {}
        for r in records:
            by_prompt.setdefault(prompt_of(r), r)
        convos = [split_for_generation(by_prompt[e["prompt"]])[0] for e in examples]
        stage = "start answers"
        say = progress or (lambda stage, done, total: None)
        say(stage, 0, len(convos))
        gens = engine.generate(engine.rows(convos, [System("start", reference)]),
                               max_new_tokens=options.max_new_tokens, seed=options.seed,
                               batch_size=options.batch_size, cancel=cancel,
                               on_row_done=lambda ev: say(stage, ev.done, ev.total))
        check_stop(cancel)
        base_texts = [gens.text("start", i) for i in range(len(examples))]
        for e, text in zip(examples, base_texts):
            e["answers"]["start"] = text
    tuned_texts = [e["answers"]["fine-tuned"] for e in examples]
    length = pref.length_check(_token_counts(engine, base_texts), _token_counts(engine, tuned_texts),
                               seed=options.seed, max_new_tokens=options.max_new_tokens,
                               against="base" if reference is None else "start")
    return out, length


def _reference_adapter(engine, profile) -> tuple[str | None, str, bool, list[str]]:
    """What the preference comparison's base is: (the adapter to score it with, None for the
    adapter off; how the report names it; whether it was loaded here and is to be removed;
    notes). A run that trained on from an earlier adapter (model.adapter: SFT, then DPO) is
    compared with that starting model, not the bare base: trl's frozen copy of it ("ref") when
    the training model holds one, else the adapter loaded again from model.adapter."""
    start = getattr(profile.model, "adapter", "")
    if not start:
        return None, "the adapter off", False, []
    if "ref" in engine.adapters:
        return "ref", f"the starting adapter (model.adapter = {start})", False, []
    from workbench.train.plan import RunError, resolve_start_adapter

    try:
        folder = resolve_start_adapter(profile)
        engine.model.load_adapter(folder, adapter_name="start")
    except (RunError, OSError, ValueError, RuntimeError, KeyError) as exc:
        return None, "the adapter off", False, [
            f"the run trained on from model.adapter = {start}, which could not be loaded again "
            f"({str(exc).splitlines()[0]}): the base is the model without any adapter, so the "
            "change includes that adapter's own training"]
    return "start", f"the starting adapter (model.adapter = {start})", True, []


def _token_counts(engine, texts: list[str]) -> list[int]:
    """Answers' lengths in tokens."""
    if not texts:
        return []
    return [len(ids) for ids in engine.tokenizer(texts, add_special_tokens=False)["input_ids"]]


@contextlib.contextmanager
def inference_ready(model):
    """The training model made ready to generate (eval mode: no dropout; the KV cache on, which
    training turns off for gradient checkpointing), and put back as it was afterwards."""
    was_training = model.training
    use_cache = model.config.use_cache
    model.eval()
    model.config.use_cache = True
    try:
        yield model
    finally:
        model.config.use_cache = use_cache
        model.train(was_training)
