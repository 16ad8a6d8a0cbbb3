"""TRL's GRPOTrainer, handed the data room's prompt token ids and recording what it samples.

Heavy imports at top level: only grpo.build_trainer imports this, lazily.
"""

from __future__ import annotations

import json
import math

from datasets import Dataset
from trl import GRPOTrainer

from workbench.rewards.builtin import text_of
from workbench.rewards.functions import TRL_EXTRAS, RewardError, RewardSet, call
from workbench.train.plan import RunError
from workbench.train.trainer import with_run_dir

# Hidden dataset columns: the rendered prompt, the row's place in its file and the reference
# columns as JSON (Arrow would turn a column of differently shaped dicts, such as JSON schemas,
# into one struct padded with nulls).
PROMPT_IDS, ROW, COLUMNS = "_wb_prompt_ids", "_wb_row", "_wb_columns"
SAMPLES_SHOWN = 8  # completions in each "samples" event (the monitor's latest-completions panel)


def to_dataset(rows: list[dict]) -> Dataset:
    # The ids as one JSON string, not a list column: accelerate walks a list column element by
    # element on every batch it moves to the device (27 ms a step at 2048-token prompts).
    return Dataset.from_list([{"prompt": r["prompt"], PROMPT_IDS: json.dumps(r["prompt_ids"]),
                               ROW: r["source"], COLUMNS: json.dumps(r["columns"], default=str)}
                              for r in rows])


class _PretokenizedGRPOTrainer(GRPOTrainer):
    """Prompts are sampled from exactly as the run's chat format rendered them: the trainer
    would otherwise apply the tokenizer's own template (no system-turn folding, no template
    override, a second BOS on some models)."""

    _prompt_ids = None

    def _generate_and_score_completions(self, inputs):
        self._prompt_ids = [json.loads(x[PROMPT_IDS]) for x in inputs]
        try:
            return super()._generate_and_score_completions(inputs)
        finally:
            self._prompt_ids = None

    def _tokenize_prompts(self, prompts):
        if self._prompt_ids is None or len(self._prompt_ids) != len(prompts):
            return super()._tokenize_prompts(prompts)
        return self._prompt_ids, None, {}

    def log(self, logs, start_time=None):
        training = self.model.training
        super().log(logs, start_time)
        if training and "loss" in logs and self.accelerator.is_main_process:
            self._record_samples()

    def _record_samples(self) -> None:
        """The latest sampled completions with each reward: the monitor's samples panel."""
        prompts, completions = list(self._logs["prompt"]), list(self._logs["completion"])
        if not completions:
            return
        rewards = {name: list(values) for name, values in self._logs["rewards"].items()}
        advantages = list(self._logs["advantages"])
        first = max(0, len(completions) - SAMPLES_SHOWN)
        weights = list(self.reward_weights.tolist()) if hasattr(self, "reward_weights") else None
        samples = []
        for i in range(first, len(completions)):
            scores = {name: _finite(values[i]) for name, values in rewards.items()
                      if i < len(values)}
            total = (sum(w * s for w, s in zip(weights, scores.values()))
                     if weights and len(weights) == len(scores)
                     and None not in scores.values() else None)
            prompt = prompts[i]
            samples.append({
                "prompt": prompt[-1]["content"] if isinstance(prompt, list) and prompt else str(prompt),
                "completion": text_of(completions[i]), "rewards": scores,
                "total": None if total is None else round(total, 4),
                "advantage": _finite(advantages[i]) if i < len(advantages) else None})
        self.run.append_event("samples", step=self.state.global_step, samples=samples)


def _finite(x) -> float | None:
    return round(float(x), 4) if x is not None and math.isfinite(float(x)) else None


WorkbenchGRPOTrainer = with_run_dir(_PretokenizedGRPOTrainer)


def trl_reward_functions(rewards: RewardSet) -> list:
    """The profile's rewards as TRL calls them: the hidden columns decoded into the row's
    reference columns, every result checked, a misbehaving reward a RunError that names its
    file, function, row and completion (the run then fails with that, not a traceback)."""
    out = []
    for f in rewards.functions:
        def reward(prompts, completions, completion_ids=None, _f=f, **kwargs):
            rows = list(kwargs.pop(ROW))
            kwargs.pop(PROMPT_IDS, None)
            decoded = [json.loads(c) for c in kwargs.pop(COLUMNS)]
            names = dict.fromkeys(k for c in decoded for k in c)
            columns = {k: [c.get(k) for c in decoded] for k in names}
            extras = {k: v for k, v in kwargs.items() if k in TRL_EXTRAS}
            try:
                return call(_f, prompts, completions, columns, rows, completion_ids, extras)
            except RewardError as exc:
                raise RunError(exc.message, hint=exc.hint, kind="reward") from None

        reward.__name__ = f.name
        out.append(reward)
    return out
