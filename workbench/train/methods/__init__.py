"""Ways to train, one module each, behind one registry.

A method declares everything that differs between kinds of training:
- the records it trains on and how they render (`prepare_data`: which tokens are trained),
- its TRL trainer and that trainer's config fields (`build_trainer`),
- the signals the monitor plots besides the loss (`charts`),
- which evaluation answers its question (`evaluation`: "generation" for SFT's side-by-side
  metrics, "preference" for held-out preference accuracy; workbench/evaluate/ runs it),
- its memory terms, which live in workbench/estimate/memory.py under the method's name
  (the estimator is pure Python below train/, so it cannot import these modules).

Everything else (profiles, the run directory, stop / resume, detach, distributed launch,
sweeps, faults, export) is shared and knows nothing of any one method.

Adding a method: write `workbench/train/methods/NAME.py` with `prepare_data(method, profile,
tokenizer, fmt, log) -> PreparedData` and `build_trainer(method, model, plan, run, callbacks)`,
add one `Method(...)` entry to METHODS below and its name to `profile.TRAIN_METHODS`, add its
memory terms to the estimator, and test it like tests/test_train_methods.py does (a tiny-model
run that finishes, resumes and records its signals).

This module imports nothing heavy: the app reads the registry (titles, charts) at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import import_module
from typing import Any, Callable


@dataclass(frozen=True)
class Chart:
    """One monitor plot: a title and the logged signal names drawn on it."""

    title: str
    signals: tuple[str, ...]


@dataclass
class PreparedData:
    """A method's training data, rendered exactly as it trains, and what a person should know."""

    train_rows: list[dict]
    eval_rows: list[dict]
    dataset_hash: str
    manifest_hash: str | None = None
    notes: list[str] = field(default_factory=list)
    held_out: int = 0  # records held out for the evaluation after training
    sources: list[dict] = field(default_factory=list)  # a mixture's sources, as the run records them


@dataclass(frozen=True)
class Method:
    name: str
    title: str
    summary: str
    module: str  # the module (under workbench.train.methods) with prepare_data / build_trainer
    data: str  # what the data must hold, said for people
    evaluation: str  # "generation" | "preference" | "rewards"
    charts: tuple[Chart, ...] = ()  # a "*" in a signal name matches: "rewards/*/mean"
    settings: tuple[str, ...] = ()  # the profile keys this method reads besides [train]

    @property
    def signals(self) -> tuple[str, ...]:
        return tuple(s for chart in self.charts for s in chart.signals)

    def _impl(self):
        return import_module(f"workbench.train.methods.{self.module}")

    def prepare_data(self, profile, tokenizer, fmt, log: Callable[[str], None]) -> PreparedData:
        return self._impl().prepare_data(self, profile, tokenizer, fmt, log)

    def build_trainer(self, model, plan, run, callbacks: list) -> Any:
        return self._impl().build_trainer(self, model, plan, run, callbacks)


_PAIR_CHARTS = (
    Chart("rewards", ("rewards/chosen", "rewards/rejected")),
    Chart("reward margin", ("rewards/margins",)),
    Chart("preference accuracy", ("rewards/accuracies",)),
)
_PREFERENCE_KEYS = ("preference.beta",)

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("sft", "Supervised fine-tuning", "learn to answer like the data's answers",
           "sft", "conversations (Alpaca, ShareGPT, messages, prompt/completion, text)",
           "generation"),
    Method("dpo", "DPO", "prefer the chosen answer over the rejected one, against a frozen "
           "reference (the model training starts from)", "preference",
           "pairs: a prompt, a chosen and a rejected answer", "preference", _PAIR_CHARTS,
           _PREFERENCE_KEYS + ("preference.loss", "preference.label_smoothing",
                               "preference.precompute_ref")),
    Method("orpo", "ORPO", "supervised loss on the chosen answer plus an odds-ratio penalty on "
           "the rejected one; no reference model", "preference",
           "pairs: a prompt, a chosen and a rejected answer", "preference",
           _PAIR_CHARTS + (Chart("log odds ratio", ("log_odds_ratio",)),), _PREFERENCE_KEYS),
    Method("kto", "KTO", "raise desirable and lower undesirable answers, one answer at a time "
           "(pairs are split into one of each)", "preference",
           "unpaired answers labelled desirable or not, or pairs", "preference",
           (Chart("rewards", ("rewards/chosen", "rewards/rejected")),
            Chart("KL to the reference", ("kl",))),
           _PREFERENCE_KEYS + ("preference.desirable_weight", "preference.undesirable_weight",
                               "preference.precompute_ref")),
    Method("simpo", "SimPO", "length-normalized reward margin with a target gap gamma; no "
           "reference model (TRL's CPO with its SimPO loss)", "preference",
           "pairs: a prompt, a chosen and a rejected answer", "preference", _PAIR_CHARTS,
           _PREFERENCE_KEYS + ("preference.gamma",)),
)}


_GRPO_KEYS = ("grpo.num_generations", "grpo.max_completion_len", "grpo.temperature", "grpo.beta",
              "grpo.loss", "grpo.generation", "rewards.functions", "rewards.weights")
METHODS["grpo"] = Method(
    "grpo", "GRPO", "sample a group of answers per prompt, score them with your reward "
    "functions, and move towards the answers that beat their group", "grpo",
    "prompts, with the reference columns your rewards read (an answer, tests, a schema)",
    "rewards",
    (Chart("reward", ("reward", "reward_std")),
     Chart("reward per function", ("rewards/*/mean",)),
     Chart("groups with no signal", ("frac_reward_zero_std",)),
     Chart("completion length", ("completions/mean_length",)),
     Chart("cut at max length", ("completions/clipped_ratio",)),
     Chart("KL to the start", ("kl",))),
    _GRPO_KEYS)


def signal_match(pattern: str, name: str) -> str | None:
    """What the "*" of a chart's signal pattern stands for in the logged `name` ("rewards/*/mean"
    and "rewards/answer:exact/mean" -> "answer:exact"); None when it does not match. A signal
    without "*" matches only itself (and stands for ""). The recorder and the app both use it."""
    if "*" not in pattern:
        return "" if pattern == name else None
    head, _, tail = pattern.partition("*")
    if len(name) <= len(head) + len(tail) or not name.startswith(head) or not name.endswith(tail):
        return None
    return name[len(head):len(name) - len(tail)]


REWARD_EVAL_SAMPLES = 4  # a GRPO evaluation's sampled answers a held-out prompt, at most


def reward_eval_samples(profile) -> int:
    """Sampled answers a held-out prompt in a GRPO run's evaluation (evaluate/rewards_eval.py;
    the plan says it beforehand): the group size, at most REWARD_EVAL_SAMPLES."""
    return max(1, min(profile.grpo.num_generations, REWARD_EVAL_SAMPLES))


def drop_fresh_reference_copy(trainer, plan):
    """trl's DPO, KTO and GRPO (beta > 0) trainers copy any adapter they are handed into a
    frozen "ref". A fresh adapter (B = 0) is the base itself, so the reference is the adapter
    switched off, as trl does for a peft_config: no second adapter in memory, no LoRA path in
    the reference forward. An adapter the run started from (model.adapter) keeps its copy."""
    peft_config = getattr(trainer.model, "peft_config", {})
    if not plan.start_adapter and "ref" in peft_config:
        trainer.model.delete_adapter("ref")
        trainer.model.set_adapter("default")
    return trainer


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown training method {name!r}; known: {', '.join(METHODS)}") from None
