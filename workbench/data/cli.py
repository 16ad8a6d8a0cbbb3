"""`workbench data ...`: inspect, clean, split and show datasets from the command line.

Hooking it into `workbench/cli.py` takes two lines:

    # in build_parser(), after `sub = parser.add_subparsers(...)`:
    from workbench.data.cli import add_data_commands, cmd_data
    add_data_commands(sub)
    # next to the other commands:
    COMMANDS["data"] = cmd_data

`cmd_data(args)` runs the chosen action and returns the exit code: 0 when it worked, 2 with an
`error: ...` line on stderr (never a traceback) when the input, a flag or the profile is wrong.
`data_main(argv)` does the same for a bare argv (tests, `python -m workbench.data.cli`).

Results go to stdout (a report, or JSON with --json); progress goes to stderr, and only when
stderr is a terminal, so pipes and logs stay clean.
"""

from __future__ import annotations

import argparse
import inspect as pyinspect
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from workbench.data.errors import DataError

EXIT_OK, EXIT_USAGE = 0, 2


def add_data_commands(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `data` and its actions on the top-level subparsers; returns the `data` parser."""
    data = subparsers.add_parser("data", help="inspect, clean, split and show datasets")
    actions = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    p = actions.add_parser("inspect", help="report on a dataset: schema, lengths, duplicates, problems")
    p.add_argument("path", nargs="?", help="a data file (JSON, JSON Lines, CSV, Parquet); "
                   "default: the profile's data.train")
    p.add_argument("--profile", help="read the file as training does: its data.train, "
                   "data.columns and data.format")
    p.add_argument("--columns", metavar="NAME=COLUMN,...",
                   help="map your columns to the format's names, e.g. "
                        "--columns instruction=question,output=answer (as data.columns)")
    _model_args(p)
    p.add_argument("--near-dup-threshold", type=float, default=0.85, metavar="X")
    p.add_argument("--sample", type=_rows_count, metavar="N",
                   help="inspect only the first N rows (a quick look at a large or streamed "
                        "dataset; the report says it covers a sample)")
    _load_args(p)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--max-prompt-len", type=int, metavar="N",
                   help="prompt data (--format prompts): count prompts longer than N tokens")
    _chat_args(p)
    p.set_defaults(data_func=cmd_inspect)

    p = actions.add_parser("clean", help="load, clean, split and save a dataset folder")
    p.add_argument("path", nargs="?", help="a data file (default: the profile's data.train)")
    p.add_argument("-o", "--output", required=True, type=Path, help="the folder to write")
    p.add_argument("--profile", help="read [clean] and [data] settings from this profile")
    p.add_argument("--steps", help="comma-separated operations, applied in this order "
                   "(drop_empty, drop_short, normalize_whitespace, dedup_exact, dedup_near, "
                   "length_filter, fill_placeholders, drop_secrets)")
    p.add_argument("--min-answer-chars", type=int, metavar="N")
    p.add_argument("--near-dup-threshold", type=float, metavar="X")
    p.add_argument("--max-tokens", type=int, metavar="N", help="for length_filter (needs --model)")
    p.add_argument("--model", metavar="M", help="tokenizer for length_filter (a local folder or hub id)")
    p.add_argument("--fill", action="append", default=[], metavar="NAME=VALUE",
                   help="value for a placeholder as `data inspect` lists it: {{NAME}}, [Your Name], "
                        "<NAME> (--fill \"Your Name=Ada\"; repeatable, or name=a,author=b)")
    p.add_argument("--drop-unfilled", action="store_true", help="drop rows whose placeholders have no value")
    p.add_argument("--drop-pii", action="store_true", help="drop_secrets also drops rows with personal data")
    _split_args(p, fractions_flag="--split")
    _load_args(p)
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")
    p.set_defaults(data_func=cmd_clean)

    p = actions.add_parser("split", help="split a dataset without cleaning it, and check for leakage")
    p.add_argument("path", help="a data file")
    p.add_argument("-o", "--output", required=True, type=Path, help="the folder to write")
    _split_args(p, fractions_flag="--fractions")
    _load_args(p)
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--json", action="store_true")
    p.set_defaults(data_func=cmd_split)

    p = actions.add_parser("show", help="render one row through the chat template, trained tokens marked")
    p.add_argument("path", help="a data file")
    p.add_argument("--row", type=int, required=True, metavar="N",
                   help="the row as messages number it, from 1: the line for JSON Lines and CSV "
                        "(file.jsonl:36), the row for a JSON array (file.json row 36)")
    p.add_argument("--model", required=True, metavar="M", help="whose tokenizer and chat template to use")
    p.add_argument("--train-on", choices=("assistant", "all"), default="assistant")
    p.add_argument("--max-seq-len", type=int, metavar="N")
    _chat_args(p)
    _load_args(p)
    p.set_defaults(data_func=cmd_show)
    return data


def cmd_data(args: argparse.Namespace) -> int:
    """Run the parsed `data` action; people's mistakes become `error: ...` and exit code 2."""
    from workbench.profile import ProfileError

    try:
        return args.data_func(args)
    except (DataError, ProfileError) as exc:
        _error(str(exc))
    except OSError as exc:  # unreadable file, full disk, permission: still the person's to fix
        _error(f"{exc.strerror or exc}: {exc.filename}" if getattr(exc, "filename", None) else str(exc))
    return EXIT_USAGE


def data_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="workbench")
    add_data_commands(parser.add_subparsers(dest="command", required=True))
    return cmd_data(parser.parse_args(argv))


# ---------------------------------------------------------------------------------------------
# Actions


def cmd_inspect(args: argparse.Namespace) -> int:
    from workbench.data.inspect import format_report, inspect_dataset

    started = time.perf_counter()  # the report's own time leaves out loading the tokenizer
    if getattr(args, "profile", None) and not args.path:
        from workbench.profile import load_profile

        profile = load_profile(args.profile)
        if profile.data.sources:
            return _inspect_mixture(args, profile)
    args.path, columns, args.format = _inspect_source(args)
    if _is_preference(args):
        return _inspect_preferences(args)
    if args.format == "prompts":
        return _inspect_prompts(args)
    if _is_raw_text(args, columns):
        return _inspect_text(args, columns)
    tokenizer = _load_tokenizer(args.model, args.chat_template) if args.model else None
    kwargs = _supported(inspect_dataset, {
        "tokenizer": tokenizer,
        "chat": _chat_format(args, tokenizer) if tokenizer is not None else None,
        "max_seq_len": args.max_seq_len,
        "near_dup_threshold": args.near_dup_threshold,
        "sample_rows": args.sample,
        "format": args.format,
        "columns": columns or None,
        "on_bad_line": "skip" if args.skip_bad_rows else "error",
        "progress": _Progress("inspect"),
    })
    report = inspect_dataset(args.path, **kwargs)
    if args.json:
        data = report.to_json()  # a dict in inspect.py today; accept a ready string too
        print(data if isinstance(data, str) else json.dumps(data, indent=2, ensure_ascii=False, default=str))
    else:
        since_start = _process_seconds()
        print(format_report(report, total_s=since_start if since_start is not None
                            else time.perf_counter() - started))
    return EXIT_OK


def _inspect_mixture(args: argparse.Namespace, profile) -> int:
    """A profile with [[data.sources]]: each source's rows, tokens, share before and after the
    [clean] steps and what each filter took, and duplicates across sources (mixture_inspect.py)."""
    from workbench.data.mixture_inspect import format_mixture_report, inspect_mixture

    if args.columns or args.format != "auto":
        raise DataError("--columns and --format describe one file; a mixture's sources each "
                        "have their own", hint="set `columns` / `format` in the profile's "
                        "[[data.sources]] tables")
    tokenizer = _load_tokenizer(args.model, args.chat_template) if args.model else None
    report = inspect_mixture(
        profile, tokenizer=tokenizer,
        chat=_chat_format(args, tokenizer) if tokenizer is not None else None,
        max_seq_len=args.max_seq_len, near_dup_threshold=args.near_dup_threshold,
        on_bad_line="skip" if args.skip_bad_rows else None,
        log=_say_on_terminal)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False, default=str))
    else:
        print(format_mixture_report(report))
    return EXIT_OK


def _say_on_terminal(line: str) -> None:
    """Progress lines on stderr, only when it is a terminal (pipes and logs stay clean)."""
    if sys.stderr.isatty():
        print(line, file=sys.stderr)


def _is_raw_text(args: argparse.Namespace, columns: dict[str, str]) -> bool:
    from workbench.data.raw_text import is_text_source

    return is_text_source(args.path, args.format, columns or None)


def _inspect_text(args: argparse.Namespace, columns: dict[str, str]) -> int:
    """Raw text (continued pretraining): documents, tokens and blocks (data/raw_text.py)."""
    from workbench.data.raw_text import format_text_report, inspect_text

    tokenizer = _load_tokenizer(args.model, args.chat_template) if args.model else None
    block = args.max_seq_len
    if block is None and getattr(args, "profile", None):  # the blocks training would cut
        from workbench.profile import load_profile

        block = load_profile(args.profile).train.max_seq_len
    report = inspect_text(args.path, tokenizer, block, columns=columns or None,
                          on_bad_line="skip" if args.skip_bad_rows else "error")
    if args.json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    else:
        print(format_text_report(report))
    return EXIT_OK


def _process_seconds() -> float | None:
    """Seconds since this process started (Linux /proc), so the time a report gives is the
    command's own, imports included; None where it cannot be read."""
    import os

    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def _inspect_source(args: argparse.Namespace) -> tuple[str, dict[str, str], str]:
    """(path, data.columns, format) for `data inspect`: the flags, else the profile's [data]."""
    data = None
    if getattr(args, "profile", None):
        from workbench.profile import load_profile

        data = load_profile(args.profile).data
    path = args.path or getattr(data, "train", None)
    if not path:
        raise DataError("no data file given", hint="pass PATH, or --profile with data.train set")
    columns = dict(getattr(data, "columns", {}) or {})
    columns.update(_parse_columns(getattr(args, "columns", None) or ""))
    fmt = args.format if args.format != "auto" or data is None else getattr(data, "format", "auto")
    return str(path), columns, fmt


def _parse_columns(text: str) -> dict[str, str]:
    """`instruction=question,output=answer` -> {"instruction": "question", "output": "answer"}."""
    columns: dict[str, str] = {}
    for part in _csv(text):
        name, sep, column = part.partition("=")
        if not sep or not name.strip() or not column.strip():
            raise DataError(f"--columns expects NAME=COLUMN, got {part!r}",
                            hint="e.g. --columns instruction=question,output=answer")
        columns[name.strip()] = column.strip()
    return columns


def cmd_clean(args: argparse.Namespace) -> int:
    from workbench.data.clean import CleanConfig, clean_records
    from workbench.data.split import split_records

    settings = _clean_settings(args)
    path = settings["path"]
    from workbench.data.preference import PREFERENCE_FORMATS

    if settings["format"] in PREFERENCE_FORMATS or (settings["format"] == "auto" and _is_preference_path(path)):
        raise DataError(
            "is preference data (chosen / rejected answers, or answers with a true/false label); "
            "`data clean` cleans SFT conversations",
            file=path,
            hint="`workbench data inspect` reports its problems (identical or empty answers, length "
            "bias); `workbench data split` splits it keeping each prompt's rows together")
    records, load_report = _load(path, settings["format"], settings["on_bad_line"],
                                 settings["system_prompt"], settings["columns"])
    tokenizer = _load_tokenizer(settings["model"], settings["chat_template"]) if settings["needs_tokenizer"] else None
    config = CleanConfig(
        steps=settings["steps"],
        min_answer_chars=settings["min_answer_chars"],
        near_dup_threshold=settings["near_dup_threshold"],
        max_tokens=settings["max_tokens"],
        placeholders=settings["placeholders"],
        drop_unfilled=args.drop_unfilled,
        drop_pii=settings["drop_pii"],
    )
    kept, clean_report = clean_records(records, config, tokenizer=tokenizer, progress=_Progress("clean"))
    if not kept:
        raise DataError("no rows left after cleaning; nothing to save",
                        hint="see the clean report above for why rows were removed", file=path)
    result = split_records(kept, settings["fractions"], seed=settings["seed"],
                           near_dup_threshold=settings["near_dup_threshold"], progress=_Progress("split"))
    out = _save(args, result, path, load_report, settings, clean_report, tokenizer_ref=settings["model"] if tokenizer else None)

    return _print_saved(args, out, load_report, result, clean_report)


def cmd_split(args: argparse.Namespace) -> int:
    from workbench.data.split import split_records

    if _is_preference(args):
        return _split_preferences(args)
    records, load_report = _load(args.path, args.format, "skip" if args.skip_bad_rows else "error")
    if not records:
        raise DataError("no rows to split", file=args.path)
    seed = 42 if args.seed is None else args.seed
    threshold = 0.85 if args.near_dup_threshold is None else args.near_dup_threshold
    result = split_records(records, args.fractions or (0.8, 0.1, 0.1), seed=seed,
                           near_dup_threshold=threshold, progress=_Progress("split"))
    settings = {"seed": seed, "near_dup_threshold": threshold, "format": args.format}
    out = _save(args, result, args.path, load_report, settings, clean_report=None, tokenizer_ref=None)
    return _print_saved(args, out, load_report, result, None)


def _print_saved(args, out, load_report, result, clean_report) -> int:
    """What `clean` and `split` print once the folder is saved: JSON, or reports for people."""
    from workbench.data.clean import format_clean_report
    from workbench.data.split import format_leakage

    if args.json:
        payload = {"output": str(out), "load": _load_dict(load_report)}
        if clean_report is not None:
            payload["clean"] = clean_report.to_dict()
        payload["split"] = result.report
        print(json.dumps(payload, indent=2, ensure_ascii=False))
        return EXIT_OK
    print(_format_load(load_report))
    if clean_report is not None:
        print(format_clean_report(clean_report))
    print(_format_split(result.report))
    print(format_leakage(result.report["leakage"]))
    print(f"saved: {out}")
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    from workbench.data.load import LoadReport, iter_records
    from workbench.data.render import check_template, format_rendered, render_rows

    if _is_preference(args):
        return _show_preference(args)
    report = LoadReport()
    record = None
    wanted = _source_row(args.path, args.row)
    for candidate in iter_records(args.path, format=args.format,
                                  on_bad_line="skip" if args.skip_bad_rows else "error", report=report):
        if candidate["source"]["row"] == wanted:
            record = candidate
            break
    if record is None:
        rows = sorted({r for _, r, _ in report.skipped if r == wanted})
        why = " (it was skipped as a bad row)" if rows else ""
        raise DataError(f"no row {args.row}{why}", file=args.path, hint=ROW_HINT)
    tokenizer = _load_tokenizer(args.model, args.chat_template)
    fmt = _chat_format(args, tokenizer)
    for problem in check_template(tokenizer, fmt):
        print(f"warning: {problem}", file=sys.stderr)
    try:
        rows = render_rows(tokenizer, record["messages"], args.train_on, args.max_seq_len,
                           tools=record.get("tools"), fmt=fmt)
    except DataError as exc:
        raise type(exc)(f"row {args.row}: {exc.message}", file=args.path, hint=exc.hint) from None
    for note in fmt.notes:
        print(f"note: {note}", file=sys.stderr)
    if len(rows) > 1:
        print(f"{args.path} row {args.row}: {len(rows)} training rows, one per answer, each "
              f"trained on its last answer only ({rows[0].why})")
    for n, rendered in enumerate(rows, 1):
        trained = sum(rendered.assistant_masks)
        which = f" training row {n}/{len(rows)}:" if len(rows) > 1 else ""
        print(f"{args.path} row {args.row}:{which} {len(rendered.input_ids)} tokens, {trained} "
              "trained (marked «...»)")
        if rendered.truncated:
            print(f"truncated to max_seq_len={args.max_seq_len}: {rendered.answer_tokens_lost} "
                  "answer tokens cut")
        if rendered.reasoning_untrained:
            print("the chat template leaves this answer's reasoning out: it is not trained")
        print()
        print(format_rendered(tokenizer, rendered))
        print()
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# Preference data (DPO / ORPO / SimPO / KTO): detected from the first row, or named by --format.


def _is_preference(args: argparse.Namespace) -> bool:
    from workbench.data.preference import PREFERENCE_FORMATS

    if args.format in PREFERENCE_FORMATS:
        return True
    return args.format == "auto" and _is_preference_path(args.path)


def _is_preference_path(path) -> bool:
    from workbench.data.preference import is_preference_data

    from workbench.data.readers import looks_like_hub_id

    try:
        return is_preference_data(path)
    except DataError:
        if looks_like_hub_id(str(path)) and not Path(path).exists():
            raise  # the hub cannot be read, whatever the data holds: said once, here
        return False  # the SFT path reports what is wrong with the file, as it always has


def _load_preferences(args: argparse.Namespace, on_bad_line: str):
    from workbench.data.load import LoadReport
    from workbench.data.preference import iter_preference_records

    report = LoadReport()
    records = []
    progress = _Progress("load")
    for record in iter_preference_records(args.path, format=args.format, on_bad_line=on_bad_line, report=report):
        records.append(record)
        if len(records) % 1000 == 0:
            progress(len(records), None)
    progress.done()
    return records, report


def _inspect_preferences(args: argparse.Namespace) -> int:
    from workbench.data.preference_checks import format_preference_report, inspect_preferences

    # Like SFT inspect: a report lists bad rows rather than stopping at the first.
    records, load_report = _load_preferences(args, "skip")
    tokenizer = _load_tokenizer(args.model, args.chat_template) if args.model else None
    fmt = _chat_format(args, tokenizer) if tokenizer is not None else None
    report = inspect_preferences(records, tokenizer, args.max_seq_len, fmt=fmt, load_report=load_report,
                                 inputs=[str(args.path)])
    if args.json:
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False, default=str))
    else:
        print(format_preference_report(report))
    return EXIT_OK


def _inspect_prompts(args: argparse.Namespace) -> int:
    from workbench.data.load import LoadReport
    from workbench.data.prompts import iter_prompt_records
    from workbench.data.prompts_inspect import format_prompt_report, inspect_prompts

    load_report = LoadReport()
    records = list(iter_prompt_records(args.path, on_bad_line="skip", report=load_report))
    tokenizer = _load_tokenizer(args.model, args.chat_template) if args.model else None
    fmt = _chat_format(args, tokenizer) if tokenizer is not None else None
    report = inspect_prompts(records, load_report, tokenizer, fmt, args.max_prompt_len)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False, default=str))
    else:
        print(format_prompt_report(report, str(args.path)))
    return EXIT_OK


def _show_preference(args: argparse.Namespace) -> int:
    from workbench.data.preference_checks import pair_problem
    from workbench.data.preference_render import PairDropped, format_pair, render_pair, render_unpaired
    from workbench.data.render import check_template

    if args.train_on != "assistant":
        raise DataError("preference data trains on the answers only; --train-on applies to SFT data",
                        file=args.path, hint="leave out --train-on")
    records, report = _load_preferences(args, "skip" if args.skip_bad_rows else "error")
    wanted = _source_row(args.path, args.row)
    record = next((r for r in records if r["source"]["row"] == wanted), None)
    if record is None:
        skipped = any(r == wanted for _, r, _ in report.skipped)
        raise DataError(f"no row {args.row}" + (" (it was skipped as a bad row)" if skipped else ""),
                        file=args.path, hint=ROW_HINT)
    tokenizer = _load_tokenizer(args.model, args.chat_template)
    fmt = _chat_format(args, tokenizer)
    for problem in check_template(tokenizer, fmt):
        print(f"warning: {problem}", file=sys.stderr)
    paired = "chosen" in record
    render = render_pair if paired else render_unpaired
    dropped = None
    try:
        try:
            rendered = render(tokenizer, record, args.max_seq_len, fmt)
        except PairDropped as exc:
            if args.max_seq_len is None:
                raise
            dropped = exc.message  # show the row as it renders, and say why it cannot train
            rendered = render(tokenizer, record, None, fmt)
    except PairDropped as exc:
        raise DataError(f"row {args.row} cannot train and is dropped: {exc.message}", file=args.path,
                        hint=exc.hint) from None
    except DataError as exc:
        raise type(exc)(f"row {args.row}: {exc.message}", file=args.path, hint=exc.hint) from None
    for note in fmt.notes:
        print(f"note: {note}", file=sys.stderr)
    kind = ", ".join(sorted(set(report.formats.values())))
    if paired:
        print(f"{args.path} row {args.row}: a preference pair ({kind}); prompt {len(rendered.prompt_ids)} "
              f"tokens; chosen {len(rendered.chosen_ids)} and rejected {len(rendered.rejected_ids)} "
              "tokens trained (marked «...»)")
    else:
        print(f"{args.path} row {args.row}: an unpaired answer ({kind}), label "
              f"{str(rendered.label).lower()}; prompt {len(rendered.prompt_ids)} tokens; "
              f"{len(rendered.completion_ids)} tokens trained (marked «...»)")
    problem = pair_problem(record)
    for why in (problem[1] if problem else None, dropped):
        if why:
            print(f"this row is dropped before training: {why}")
    if rendered.truncated:
        print(f"truncated to max_seq_len={args.max_seq_len}: {rendered.answer_tokens_lost} answer tokens cut")
    print()
    print(format_pair(tokenizer, rendered))
    print()
    return EXIT_OK


def _split_preferences(args: argparse.Namespace) -> int:
    from workbench.data.preference_checks import split_preference_records
    from workbench.data.save import describe_sources, save_splits

    records, load_report = _load_preferences(args, "skip" if args.skip_bad_rows else "error")
    if not records:
        raise DataError("no rows to split", file=args.path)
    seed = 42 if args.seed is None else args.seed
    result = split_preference_records(records, args.fractions or (0.8, 0.1, 0.1), seed=seed)
    extra = {
        "sources": describe_sources([args.path], load_report.formats),
        "format": args.format,
        "detected_formats": dict(load_report.formats),
        "kind": "preference",
        "load": _load_dict(load_report),
        "operations": [],
        "seed": seed,
        "fractions_requested": list(result.report["fractions"]),
        "split": {k: v for k, v in result.report.items() if k not in ("seed", "fractions")},
        "tokenizer": None,
    }
    out = save_splits(args.output, result.as_dict(), extra, overwrite=args.overwrite)
    if args.json:
        print(json.dumps({"output": str(out), "load": _load_dict(load_report), "split": result.report},
                         indent=2, ensure_ascii=False))
        return EXIT_OK
    print(_format_load(load_report))
    sizes = ", ".join(f"{name} {size} ({result.report['actual_fractions'][name]:.1%})"
                      for name, size in result.report["sizes"].items())
    print(f"split (seed {seed}): {sizes}")
    print(f"  {result.report['prompt_groups']} prompts; every row of a prompt is in one split "
          f"({result.report['prompts_shared']} prompts shared between splits)")
    print(f"saved: {out}")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------
# Settings: flags win over the profile, the profile over defaults.


def _clean_settings(args: argparse.Namespace) -> dict[str, Any]:
    from workbench.data.clean import validate_steps
    from workbench.data.split import parse_fractions

    profile = None
    if args.profile:
        from workbench.profile import load_profile

        profile = load_profile(args.profile)
    section = getattr(profile, "clean", None)
    data = getattr(profile, "data", None)

    def pick(flag: Any, key: str, default: Any, where: Any = section) -> Any:
        if flag is not None:
            return flag
        return getattr(where, key, default) if where is not None else default

    path = args.path or getattr(data, "train", None)
    if not path and getattr(data, "sources", None):
        raise DataError("the profile's data is a mixture of [[data.sources]]; `data clean` "
                        "cleans and saves one dataset",
                        hint="`workbench data inspect --profile PROFILE` shows what the [clean] "
                             "steps would take from each source; to save one cleaned, pass its "
                             "path: `workbench data clean PATH -o OUT --profile PROFILE`")
    if not path:
        raise DataError("no data file given", hint="pass PATH, or --profile with data.train set")
    steps = validate_steps(_csv(args.steps) if args.steps is not None else list(pick(None, "steps", [])))
    placeholders = dict(pick(None, "placeholders", {}) or {})
    placeholders.update(_parse_fill(args.fill))
    if args.fill and "fill_placeholders" not in steps:
        raise DataError("--fill was given but fill_placeholders is not among the steps",
                        hint=f"add it, e.g. --steps {','.join(steps + ['fill_placeholders'])}")

    model = args.model or (profile.model.name_or_path if profile is not None else None)
    max_tokens = pick(args.max_tokens, "max_tokens", 0)
    if not max_tokens and profile is not None and "length_filter" in steps:
        max_tokens = getattr(getattr(profile, "train", None), "max_seq_len", 0)  # 0 means "as trained"
    if "length_filter" in steps and not model:
        raise DataError("length_filter needs a tokenizer to count tokens",
                        hint="pass --model M (or --profile with model.name_or_path)")
    if "length_filter" in steps and not max_tokens:
        raise DataError("length_filter needs --max-tokens N (or [clean] max_tokens in the profile)")

    fractions = args.fractions if args.fractions is not None else pick(None, "split", (0.8, 0.1, 0.1), data)
    on_bad = "skip" if args.skip_bad_rows else pick(None, "on_bad_rows", "error", data)
    return {
        "path": path,
        "profile": args.profile,
        "steps": steps,
        "min_answer_chars": pick(args.min_answer_chars, "min_answer_chars", 2),
        "near_dup_threshold": pick(args.near_dup_threshold, "near_dup_threshold", 0.85),
        "max_tokens": max_tokens,
        "placeholders": placeholders,
        "drop_pii": args.drop_pii or bool(pick(None, "drop_pii", False)),
        "fractions": parse_fractions(fractions),
        "seed": args.seed if args.seed is not None else getattr(getattr(profile, "train", None), "seed", 42),
        "format": args.format if args.format != "auto" or data is None else getattr(data, "format", "auto"),
        "on_bad_line": on_bad,
        "system_prompt": getattr(data, "system_prompt", "") if data is not None else "",
        "columns": dict(getattr(data, "columns", {}) or {}) if data is not None else {},
        "model": model,
        "chat_template": getattr(getattr(profile, "model", None), "chat_template", "") if profile else "",
        "needs_tokenizer": "length_filter" in steps,
    }


def _parse_fill(items: list[str]) -> dict[str, str]:
    """`name=Workbench`, repeatable, or several in one: `name=Workbench,author=Us`."""
    values: dict[str, str] = {}
    for item in items:
        for part in re.split(r",(?=\s*[A-Za-z_][\w.-]*=)", item):
            name, sep, value = part.partition("=")
            if not sep or not name.strip():
                raise DataError(f"--fill expects NAME=VALUE, got {part!r}", hint="e.g. --fill name=Workbench")
            values[name.strip()] = value
    return values


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


# ---------------------------------------------------------------------------------------------
# Helpers


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="M", help="tokenizer to count tokens with (a local folder or hub id)")
    p.add_argument("--max-seq-len", type=int, metavar="N")


def _chat_args(p: argparse.ArgumentParser) -> None:
    from workbench.data.chat_format import REASONING_CHOICES, SYSTEM_CHOICES

    p.add_argument("--chat-template", metavar="FILE", default="",
                   help="a Jinja chat template file to use instead of the tokenizer's")
    p.add_argument("--system", choices=SYSTEM_CHOICES, default="auto",
                   help="system messages: keep, fold into the first user turn, drop (auto: fold "
                        "when the template has no system role)")
    p.add_argument("--reasoning", choices=REASONING_CHOICES, default="keep",
                   help="reasoning (reasoning_content / <think>) in answers: keep or drop")


def _chat_format(args: argparse.Namespace, tokenizer):
    from workbench.data.chat_format import chat_format

    return chat_format(tokenizer, getattr(args, "system", "auto"), getattr(args, "reasoning", "keep"))


def _load_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", default="auto", help="the data schema (default: detect it)")
    p.add_argument("--skip-bad-rows", action="store_true",
                   help="skip rows that cannot be read (each is counted and listed) instead of stopping")


def _split_args(p: argparse.ArgumentParser, fractions_flag: str) -> None:
    from workbench.data.split import parse_fractions

    p.add_argument(fractions_flag, dest="fractions", type=_argtype(parse_fractions), metavar="TRAIN,VAL,TEST",
                   help="split fractions (default 0.8,0.1,0.1)")
    p.add_argument("--seed", type=int, metavar="N", help="split seed (default 42)")
    if fractions_flag == "--fractions":
        p.add_argument("--near-dup-threshold", type=float, metavar="X",
                       help="near duplicates at or above this similarity stay in one split (default 0.85)")


def _argtype(parse):
    def convert(text: str):
        try:
            return parse(text)
        except DataError as exc:
            raise argparse.ArgumentTypeError(exc.message) from None
    convert.__name__ = "fractions"
    return convert


def _rows_count(text: str) -> int:
    """--sample N: a whole number of rows, 1 or more."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a number of rows (1 or more), got {text!r}")
    return n


def _supported(func, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Only the keyword arguments `func` accepts, so we can run against older versions of it."""
    params = pyinspect.signature(func).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k in params}


def _load(path, format: str = "auto", on_bad_line: str = "error", system_prompt: str = "",
          columns: dict | None = None):
    from workbench.data.load import LoadReport, iter_records

    report = LoadReport()
    kwargs = _supported(iter_records, {"format": format, "on_bad_line": on_bad_line,
                                       "system_prompt": system_prompt, "report": report, "columns": columns or None})
    records = []
    progress = _Progress("load")
    for record in iter_records(path, **kwargs):
        records.append(record)
        if len(records) % 1000 == 0:
            progress(len(records), None)
    progress.done()
    return records, report


ROW_HINT = ("rows are numbered from 1 as messages show them: the line for JSON Lines and CSV "
            "(file.jsonl:36), the row for a JSON array or Parquet (file.json row 36)")


def _source_row(path: str, row: int) -> int:
    """The record's source.row for the row a person names (readers.row_label, from 1)."""
    from workbench.data.readers import numbering_of

    return row - 1 if numbering_of(path) == "index" else row


def _load_tokenizer(name_or_path: str, chat_template: str = ""):
    from workbench.hub import TOKENIZER, HubUnavailable, resolve_offline

    try:  # one short probe instead of a minute of retries when the hub is unreachable
        resolve_offline(name_or_path, needs=TOKENIZER, label=f"--model {name_or_path}")
    except HubUnavailable as exc:
        raise DataError(exc.message, hint=exc.hint) from None
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:  # pragma: no cover - transformers is a dependency
        raise DataError(f"transformers is needed to load a tokenizer: {exc}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except Exception as exc:  # from_pretrained raises many kinds; all mean "cannot load this"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"could not load the tokenizer of {name_or_path!r}: {first}",
                        hint="give a local model folder, or a hub id that is in the local cache (the Hub may be offline)") from None
    # The data commands measure rows longer than the model's limit on purpose, and say so in
    # their own words (length_filter, truncation): transformers' one-off "Token indices sequence
    # length is longer..." warning would only leak into the report. Marked as already given.
    warned = getattr(tokenizer, "deprecation_warnings", None)
    if isinstance(warned, dict):
        warned["sequence-length-is-longer-than-the-specified-maximum"] = True
    if chat_template:
        try:
            tokenizer.chat_template = Path(chat_template).read_text(encoding="utf-8")
        except OSError as exc:
            raise DataError(f"cannot read the chat template {chat_template}: {exc.strerror}",
                            hint="give the path of a Jinja template file") from None
        tokenizer.workbench_template_source = f"in {chat_template}"
    return tokenizer


def _save(args, result, path, load_report, settings, clean_report, tokenizer_ref):
    from workbench.data.save import describe_sources, describe_tokenizer, save_splits

    extra = {
        "sources": describe_sources([path], load_report.formats),
        "format": settings.get("format"),
        "detected_formats": dict(load_report.formats),
        "load": _load_dict(load_report),
        "operations": clean_report.summary() if clean_report is not None else [],
        "rows_before_cleaning": clean_report.rows_in if clean_report is not None else None,
        "seed": settings["seed"],
        "near_dup_threshold": settings["near_dup_threshold"],
        "fractions_requested": list(result.report["fractions"]),
        "leakage": {k: result.report["leakage"][k] for k in ("exact_pairs", "near_pairs", "examples_total", "clean")},
        "tokenizer": describe_tokenizer(tokenizer_ref),
        "profile": settings.get("profile"),
    }
    return save_splits(args.output, result.as_dict(), extra, overwrite=args.overwrite)


def _load_dict(report) -> dict[str, Any]:
    return {"rows_read": report.rows_read, "rows_loaded": report.rows_loaded, "formats": dict(report.formats),
            "skipped": [{"file": f, "row": r, "column": report.columns.get((f, r)), "reason": why}
                        for f, r, why in report.skipped]}


def _format_load(report, max_rows: int = 5) -> str:
    formats = ", ".join(sorted(set(report.formats.values()))) or "?"
    lines = [f"load: {report.rows_loaded} rows ({formats}), {len(report.skipped)} bad rows skipped"]
    for file, row, why in report.skipped[:max_rows]:
        lines.append(f"      skipped {report.location(file, row)}: {why}")
    if len(report.skipped) > max_rows:
        lines.append(f"      ... and {len(report.skipped) - max_rows} more (see --json)")
    return "\n".join(lines)


def _format_split(report: dict[str, Any]) -> str:
    sizes = ", ".join(f"{name} {size} ({report['actual_fractions'][name]:.1%})" for name, size in report["sizes"].items())
    line = f"split (seed {report['seed']}): {sizes}"
    if report["duplicate_groups"]:
        line += (f"\n  {report['duplicate_groups']} duplicate groups ({report['rows_in_duplicate_groups']} rows) "
                 "each kept within one split")
    return line


def _error(text: str) -> None:
    lines = text.splitlines() or [""]
    print(f"error: {lines[0]}", file=sys.stderr)
    for line in lines[1:]:
        print(line, file=sys.stderr)


class _Progress:
    """progress(done, total) that draws one updating line on stderr, only on a terminal."""

    def __init__(self, label: str, stream=None):
        self.label = label
        self.stream = stream or sys.stderr
        self.live = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = 0.0
        self._drawn = False

    def __call__(self, done: int, total: int | None = None) -> None:
        if not self.live:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and (total is None or done < total):
            return
        self._last = now
        text = f"{self.label}: {done}/{total}" if total else f"{self.label}: {done}"
        self.stream.write(f"\r\033[K{text}")
        self.stream.flush()
        self._drawn = True
        if total is not None and done >= total:
            self.done()

    def done(self) -> None:
        if self.live and self._drawn:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._drawn = False


if __name__ == "__main__":
    sys.exit(data_main())
