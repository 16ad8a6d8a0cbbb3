"""What makes a preference record unable to teach anything (the checks `check_pairs` drops
for, and `render_preference_dataset` refuses). Apart from preference_checks.py so the renderer
can use it without importing the inspection, which renders."""

from __future__ import annotations

CHECKS: dict[str, str] = {
    "prompt_mismatch": "sides reply to different prompts",
    "empty_answer": "empty answer",
    "identical": "chosen equals rejected",
    "empty_prompt": "empty prompt",
}


def pair_problem(record: dict) -> tuple[str, str] | None:
    """(check, why) for the first problem of a preference record, or None when it can train."""
    if record.get("prompt_mismatch"):
        return "prompt_mismatch", record.get("prompt_mismatch_why") or "chosen and rejected reply to different prompts"
    sides = ["chosen", "rejected"] if "chosen" in record else ["completion"]
    empty = [s for s in sides if not _answer_text(record.get(s) or []).strip()]
    if empty:
        if len(empty) == 2:
            return "empty_answer", "both answers are empty; the pair teaches nothing"
        return "empty_answer", f"the {empty[0]} answer is empty (no text); fix the row or leave it out"
    if "chosen" in record and _answer_key(record["chosen"]) == _answer_key(record["rejected"]):
        exact = _answer_text(record["chosen"]) == _answer_text(record["rejected"])
        return "identical", ("chosen and rejected are the same answer" + ("" if exact else " (they differ only in spacing)")
                             + "; a pair without a difference teaches no preference")
    if not any(m.get("content", "").strip() for m in record.get("prompt") or [] if m.get("role") != "system"):
        return "empty_prompt", "the prompt is empty: there is no question for the answers to reply to"
    return None


def _answer_text(messages: list[dict]) -> str:
    parts = []
    for m in messages:
        parts.append(m.get("reasoning_content") or "")
        parts.append(m.get("content") or "")
    return "\n".join(p for p in parts if p)


def _answer_key(messages: list[dict]) -> list[tuple[str, str]]:
    return [(m.get("role", ""), " ".join(((m.get("reasoning_content") or "") + " " + (m.get("content") or "")).split()))
            for m in messages]
