"""`workbench data inspect FILE --format prompts`: what a GRPO run would sample from. The rows
read, skipped and dropped (each named), the reference columns the rewards can read (how many
rows have each, and an example), and with a tokenizer the prompt lengths against
grpo.max_prompt_len, as training renders them."""

from __future__ import annotations

from statistics import median

from workbench.data.load import LoadReport
from workbench.data.readers import row_label


def inspect_prompts(records: list[dict], load_report: LoadReport, tokenizer=None, fmt=None,
                    max_prompt_len: int | None = None) -> dict:
    from workbench.data.prompts import _check, reference_columns, render_prompts

    kept, dropped = _check(records)
    columns = reference_columns(kept)
    examples = {}
    for r in kept:
        for k, v in r["columns"].items():
            if v is not None and k not in examples:
                examples[k] = v
    report = {
        "rows_read": load_report.rows_read, "prompts": len(kept),
        "skipped": [{"file": f, "row": r, "why": why} for f, r, why in load_report.skipped],
        "dropped": [{"file": f, "row": r, "why": why} for f, r, why in dropped],
        "columns": {k: {"rows": n, "example": examples.get(k)} for k, n in columns.items()},
        "multi_turn": sum(sum(m["role"] == "user" for m in r["prompt"]) > 1 for r in kept),
        "with_system": sum(r["prompt"][0]["role"] == "system" for r in kept),
    }
    if tokenizer is not None and fmt is not None and kept:
        limit = max_prompt_len or 10**9
        rendered, too_long = render_prompts(tokenizer, fmt, kept, limit)
        lengths = sorted(len(r["prompt_ids"]) for r in rendered)
        if too_long:  # measured again without the limit, for the statistics
            all_rows, _ = render_prompts(tokenizer, fmt, kept, 10**9)
            lengths = sorted(len(r["prompt_ids"]) for r in all_rows)
        report["tokens"] = {"min": lengths[0], "median": median(lengths),
                            "p95": lengths[min(len(lengths) - 1, int(0.95 * len(lengths)))],
                            "max": lengths[-1], "max_prompt_len": max_prompt_len,
                            "over": len(too_long), "over_rows": too_long[:20]}
    return report


def format_prompt_report(report: dict, path: str) -> str:
    lines = [f"{path}: prompt data (GRPO), {report['prompts']} prompts from "
             f"{report['rows_read']} rows"]
    for key, what in (("skipped", "bad rows skipped"), ("dropped", "prompts dropped")):
        if report[key]:
            lines.append(f"  {len(report[key])} {what}: " + "; ".join(
                f"{row_label(x['file'], x['row'])}: {x['why']}" for x in report[key][:5])
                + (" ..." if len(report[key]) > 5 else ""))
    lines.append(f"  {report['with_system']} with a system turn, {report['multi_turn']} with "
                 "more than one user turn")
    if report["columns"]:
        lines.append("  reference columns (what rewards can read):")
        for name, c in report["columns"].items():
            example = repr(c["example"])
            example = example if len(example) <= 60 else example[:59] + "…"
            lines.append(f"    {name:<16} {c['rows']:>6} of {report['prompts']} rows   e.g. {example}")
    else:
        lines.append("  no reference columns: only rewards that read the completion alone "
                     "(format, regex, length, JSON) can score these prompts")
    t = report.get("tokens")
    if t:
        lines.append(f"  prompt tokens: min {t['min']}, median {t['median']:g}, p95 {t['p95']}, "
                     f"max {t['max']}")
        if t["max_prompt_len"]:
            lines.append(f"  {t['over']} prompts longer than max_prompt_len = {t['max_prompt_len']}"
                         + (" (dropped by training: " + ", ".join(t["over_rows"][:5])
                            + (" ..." if t["over"] > 5 else "") + ")" if t["over"] else ""))
    else:
        lines.append("  prompt lengths: give --model to count tokens as training renders them")
    return "\n".join(lines)
