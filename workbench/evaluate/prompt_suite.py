"""A saved set of prompts answered by the base model and by the fine-tuned model, greedy,
through the chat template. The first slice of the comparison engine: it gives every run
a plain answer to "did training change the answers, and for the better?".

Prompt file: JSONL, one object a line: {"prompt": str, "reference": str (optional)}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from workbench.train.rundir import write_json_atomic, write_text_atomic


class PromptSuiteError(Exception):
    pass


def load_prompts(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise PromptSuiteError(f"{path}: prompt file not found (set eval.prompts in the profile)")
    prompts = []
    with open(path, encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise PromptSuiteError(f"{path}:{lineno}: invalid JSON: {exc}") from exc
            if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
                raise PromptSuiteError(
                    f"{path}:{lineno}: expected an object with a string \"prompt\" "
                    "(and optionally \"reference\")")
            prompts.append({"prompt": obj["prompt"], "reference": obj.get("reference")})
    if not prompts:
        raise PromptSuiteError(f"{path}: no prompts in the file")
    return prompts


def normalize(text: str) -> str:
    return " ".join(text.strip().split()).rstrip(".").lower()


@dataclass
class SuiteResult:
    rows: list[dict] = field(default_factory=list)

    def correct(self, system: str) -> int:
        return sum(1 for r in self.rows
                   if r["reference"] is not None and normalize(r[system]) == normalize(r["reference"]))

    @property
    def scored(self) -> int:
        return sum(1 for r in self.rows if r["reference"] is not None)

    def summary(self) -> str:
        if not self.scored:
            return f"prompt suite: {len(self.rows)} prompts answered (no references to score)"
        base, tuned = self.correct("base"), self.correct("fine_tuned")
        return (f"prompt suite exact match: base {base}/{self.scored}, "
                f"fine-tuned {tuned}/{self.scored}")

    def to_dict(self) -> dict:
        return {"scored": self.scored, "base_correct": self.correct("base"),
                "fine_tuned_correct": self.correct("fine_tuned"), "rows": self.rows}


def generate_answers(model, tokenizer, prompts: list[str], system_prompt: str = "",
                     max_new_tokens: int = 64, batch_size: int = 16) -> list[str]:
    import torch

    eos = [tokenizer.eos_token_id]
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id and im_end not in eos:
        eos.append(im_end)
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # decoder-only models continue from the right edge
    answers = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start:start + batch_size]
            texts = []
            for prompt in batch:
                messages = ([{"role": "system", "content": system_prompt}] if system_prompt else [])
                messages.append({"role": "user", "content": prompt})
                texts.append(tokenizer.apply_chat_template(messages, tokenize=False,
                                                           add_generation_prompt=True))
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(model.device) for k, v in enc.items()}
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
            new = out[:, enc["input_ids"].shape[1]:]
            answers += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = padding_side
    return answers


def run_prompt_suite(model, tokenizer, profile, run_path: Path) -> SuiteResult:
    """`model` is a PEFT model: the base answers come from the same weights with the
    adapter switched off, so both systems share one copy in memory."""
    prompts = load_prompts(profile.eval.prompts)
    texts = [p["prompt"] for p in prompts]
    kw = dict(system_prompt=profile.data.system_prompt,
              max_new_tokens=min(profile.eval.max_new_tokens, 256))
    was_training = model.training
    model.eval()
    use_cache = model.config.use_cache
    model.config.use_cache = True
    try:
        tuned = generate_answers(model, tokenizer, texts, **kw)
        with model.disable_adapter():
            base = generate_answers(model, tokenizer, texts, **kw)
    finally:
        model.config.use_cache = use_cache
        model.train(was_training)
    result = SuiteResult([{"prompt": p["prompt"], "reference": p["reference"], "base": b,
                           "fine_tuned": f} for p, b, f in zip(prompts, base, tuned)])
    write_json_atomic(run_path / "prompt_suite.json", result.to_dict())
    write_text_atomic(run_path / "report.md", _report(result, profile))
    return result


def _cell(text) -> str:
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")


def _report(result: SuiteResult, profile) -> str:
    lines = [f"# Run report: {profile.name}", "", result.summary(), "",
             "| prompt | reference | base | fine-tuned |", "|---|---|---|---|"]
    for r in result.rows:
        lines.append(f"| {_cell(r['prompt'])} | {_cell(r['reference'])} | {_cell(r['base'])} | "
                     f"{_cell(r['fine_tuned'])} |")
    return "\n".join(lines) + "\n"
