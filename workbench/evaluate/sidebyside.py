"""`workbench compare`'s text output: each prompt, then the reference and every system's
answer in a labelled column. Pure text, no I/O.

Answers are often several lines (lists, code, a model that rambles); each of their lines is
indented to the answer column and wrapped at the terminal's width, so a second line never
falls back to column 0 where it would read as the next system's label.
"""

from __future__ import annotations

import textwrap

INDENT = "    "
MIN_TEXT_WIDTH = 20  # below this, wrapping makes answers unreadable: let the terminal wrap


def block(head: str, text: str, width: int, indent: int) -> list[str]:
    """`head` (exactly `indent` characters) then `text`, every line of it in the column
    from `indent` on and at most `width` characters long."""
    room = max(width - indent, MIN_TEXT_WIDTH)
    pad = " " * indent
    lines: list[str] = []
    for para in (text or "").expandtabs(4).splitlines() or [""]:
        body = para.lstrip(" ")
        # A line's own indentation (code, nested lists) is kept, on its wrapped parts too.
        lead = " " * min(len(para) - len(body), room // 2)
        lines += textwrap.wrap(body, room, initial_indent=lead, subsequent_indent=lead) or [""]
    out = [(head if i == 0 else pad) + line for i, line in enumerate(lines)]
    return [line.rstrip() for line in out]


def format_answers(answers: list[dict], names: list[str], width: int = 100) -> list[str]:
    """Lines for [{"prompt", "reference", "answers": {name: text}}], systems in `names` order."""
    label_w = max(len(n) for n in ["reference", *names]) + 2
    indent = len(INDENT) + label_w
    out: list[str] = []
    for i, a in enumerate(answers, 1):
        out.append("")
        head = f"[{i}] "
        # The prompt's own lines stay right of its number, like an answer in its column.
        out += block(head, a["prompt"], width, len(head))
        if a.get("reference") is not None:
            out += block(f"{INDENT}{'reference':<{label_w}}", a["reference"], width, indent)
        for n in names:
            out += block(f"{INDENT}{n:<{label_w}}", a["answers"].get(n, ""), width, indent)
    return out


def format_compare(answers: list[dict], names: list[str], metrics: dict, n_scored: int,
                   timing: dict, width: int = 100) -> str:
    """The whole `workbench compare` output: answers, metrics (when references exist), speed."""
    label_w = max(len(n) for n in names) + 2
    out = format_answers(answers, names, width)
    if metrics:
        out += ["", f"metrics over {n_scored} prompts with a reference (0-100):"]
        out += [f"  {n:<{label_w}}" + "  ".join(f"{k} {v:.1f}" for k, v in metrics[n].items())
                for n in names]
    out += ["", "speed (length-sorted batched calls; base and fine-tuned share theirs):"]
    for n in names:
        t = timing.get(n, {})
        out.append(f"  {n:<{label_w}}{t.get('tokens', 0)} tokens, {t.get('latency_s', 0):.2f} s, "
                   f"{t.get('tokens_per_s', 0):.1f} tok/s")
    return "\n".join(out)
