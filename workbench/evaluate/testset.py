"""Which records a run is evaluated on, and which it may borrow few-shot examples from.

The test split, in order of preference:
1. `test.jsonl` of the saved dataset folder the run trained from (`workbench data clean`);
2. the validation records, split exactly as training split them (`plan.load_training_data`):
   the run never trained on them, but they did steer eval loss / early stopping, so the
   report says so;
3. the profile's prompt suite, for the prompts that carry a reference answer.
The train split (few-shot source) is always the train records training used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from workbench.evaluate.errors import EvaluateError


@dataclass
class Splits:
    train: list[dict]
    test: list[dict]
    source: str  # where the test split came from, for the report
    notes: list[str] = field(default_factory=list)


def suite_records(prompts: list[dict], system_prompt: str = "") -> list[dict]:
    """Prompt-suite rows with a reference, as conversations."""
    out = []
    for i, p in enumerate(prompts):
        if p.get("reference") is None:
            continue
        msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
        msgs += [{"role": "user", "content": p["prompt"]},
                 {"role": "assistant", "content": p["reference"]}]
        out.append({"messages": msgs, "source": {"file": p.get("file"), "row": p.get("row", i + 1)}})
    return out


def load_splits(profile, test_file: str | Path | None = None) -> Splits:
    """The run's train and test records as conversations. A preference run's are its held-out
    pairs' prompts with their chosen answers (and its training pairs for few-shot examples),
    prepared as training prepared them; `test_file` is then an ordinary conversation file."""
    from workbench.evaluate.preference import is_preference_run

    if is_preference_run(profile) and not test_file:
        return _preference_splits(profile)
    from workbench.data import DataError, load_records
    from workbench.data.save import is_saved_dataset
    from workbench.train.plan import load_training_data

    d = profile.data
    from workbench.train.streaming import held_out_records, streams

    try:  # a streamed run: its held-out rows kept, never the whole data (train/streaming.py)
        data = held_out_records(profile) if streams(profile) else load_training_data(profile)
    except DataError as exc:
        raise EvaluateError(f"could not load the run's training data: {exc}",
                            hint="the run reads data.train from its profile.toml; check the "
                                 "file is still there") from exc
    kw = dict(format=d.format, system_prompt=d.system_prompt, columns=d.columns or None,
              encoding=d.encoding or None)
    notes = list(data.notes)
    if test_file:
        test, source = _load(load_records, Path(test_file), kw), str(test_file)
    elif is_saved_dataset(d.train) and (Path(d.train) / "test.jsonl").is_file():
        path = Path(d.train) / "test.jsonl"
        test, source = _load(load_records, path, kw), str(path)
    elif data.validation:
        test, source = data.validation, "validation split"
        notes.append("test split: the run's validation records (never trained on, but they "
                     "guided eval loss); a saved dataset folder with test.jsonl gives a clean test set")
    elif profile.eval.prompts:
        from workbench.evaluate.suite import load_prompts

        test = suite_records(load_prompts(profile.eval.prompts), d.system_prompt)
        source = f"{profile.eval.prompts} (prompts with a reference)"
    else:
        test, source = [], "none"
    if not test:
        raise EvaluateError(
            f"the test split is empty (looked at: {source})",
            hint="train from a folder saved by `workbench data clean` (it writes test.jsonl), keep "
                 "data.validation_split above 0, or give eval.prompts with reference answers")
    return Splits(train=data.train, test=test, source=source, notes=notes)


def _preference_splits(profile) -> Splits:
    from workbench.evaluate.preference import generation_records, load_preference_rows

    held_out, train_rows = load_preference_rows(profile)
    test, notes = generation_records(held_out)
    train, _ = generation_records(train_rows)
    if not test:
        raise EvaluateError("the run has no held-out preference pairs to answer",
                            hint="keep data.validation_split above 0 or give data.validation")
    return Splits(train=train, test=test, source="the held-out preference pairs' prompts "
                  "(their chosen answers as references)", notes=notes)


def _load(load_records, path: Path, kw: dict) -> list[dict]:
    from workbench.data import DataError

    try:
        return load_records(path, **kw)
    except DataError as exc:
        raise EvaluateError(f"could not read the test split {path}: {exc}") from exc
