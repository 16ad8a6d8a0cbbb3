"""Prompt suites: a saved set of prompts, with optional reference answers, per profile
(`eval.prompts`), answered by every system at the end of training and by `workbench compare`.

Two formats, chosen by the file's extension:

    # prompts.toml                           # prompts.jsonl
    [[prompt]]                               {"prompt": "...", "reference": "..."}
    text = "Translate to French: the cat"
    reference = "le chat"
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from workbench.evaluate.errors import EvaluateError

_HINT_JSONL = 'one JSON object a line: {"prompt": "...", "reference": "..."} (reference optional)'
_HINT_TOML = '[[prompt]] tables with text = "..." and optionally reference = "..."'


def load_prompts(path: str | Path) -> list[dict]:
    """[{"prompt", "reference" (None when absent), "file", "row"}]; errors name file:line."""
    path = Path(path)
    if not path.is_file():
        raise EvaluateError(f"{path}: prompt file not found",
                            hint="set eval.prompts in the profile, or pass --prompts FILE")
    if path.suffix.lower() == ".toml":
        prompts = _load_toml(path)
    else:
        prompts = _load_jsonl(path)
    if not prompts:
        raise EvaluateError(f"{path}: no prompts in the file",
                            hint=_HINT_TOML if path.suffix.lower() == ".toml" else _HINT_JSONL)
    return prompts


def _load_jsonl(path: Path) -> list[dict]:
    prompts = []
    with open(path, encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise EvaluateError(f"{path}:{lineno}: invalid JSON: {exc}", hint=_HINT_JSONL) from exc
            if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str):
                raise EvaluateError(f"{path}:{lineno}: expected an object with a string \"prompt\"",
                                    hint=_HINT_JSONL)
            ref = obj.get("reference")
            if ref is not None and not isinstance(ref, str):
                raise EvaluateError(f"{path}:{lineno}: \"reference\" must be a string", hint=_HINT_JSONL)
            prompts.append({"prompt": obj["prompt"], "reference": ref, "file": str(path), "row": lineno})
    return prompts


def _load_toml(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8-sig")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise EvaluateError(f"{path}: invalid TOML: {exc}", hint=_HINT_TOML) from exc
    tables = data.get("prompt", [])
    if not isinstance(tables, list):
        raise EvaluateError(f"{path}: `prompt` must be an array of tables ([[prompt]])", hint=_HINT_TOML)
    # Line numbers for messages: the n-th "[[prompt]]" header.
    headers = [i for i, line in enumerate(text.splitlines(), 1) if line.strip().startswith("[[prompt]]")]
    prompts = []
    for n, t in enumerate(tables):
        where = f"{path}:{headers[n]}" if n < len(headers) else f"{path} (prompt {n + 1})"
        body = t.get("text", t.get("prompt")) if isinstance(t, dict) else None
        if not isinstance(body, str):
            raise EvaluateError(f"{where}: this [[prompt]] has no string `text`", hint=_HINT_TOML)
        ref = t.get("reference")
        if ref is not None and not isinstance(ref, str):
            raise EvaluateError(f"{where}: `reference` must be a string", hint=_HINT_TOML)
        prompts.append({"prompt": body, "reference": ref, "file": str(path),
                        "row": headers[n] if n < len(headers) else n + 1})
    return prompts


def suite_summary(rows: list[dict], systems: list[str]) -> dict:
    """Exact-match counts per system over the prompts with a reference (the keys of the
    first prompt_suite.json stay: scored, base_correct, fine_tuned_correct)."""
    from workbench.evaluate.metrics import exact_match

    scored = [r for r in rows if r.get("reference") is not None]
    out: dict = {"scored": len(scored), "prompts": len(rows), "correct": {}}
    for s in systems:
        out["correct"][s] = sum(1 for r in scored if exact_match(r["answers"][s], r["reference"]) == 100.0)
    out["base_correct"] = out["correct"].get("base", 0)
    out["few_shot_correct"] = out["correct"].get("few-shot", 0)
    out["fine_tuned_correct"] = out["correct"].get("fine-tuned", 0)
    return out


def summary_line(summary: dict) -> str:
    if not summary["scored"]:
        return f"prompt suite: {summary['prompts']} prompts answered (no references to score)"
    n = summary["scored"]
    return (f"prompt suite exact match: base {summary['base_correct']}/{n}, few-shot "
            f"{summary['few_shot_correct']}/{n}, fine-tuned {summary['fine_tuned_correct']}/{n}")
