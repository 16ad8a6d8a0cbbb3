"""`workbench eval RUN` and `workbench compare RUN`. Imports nothing heavy at module level:
the top-level parser is built on every `workbench` call."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

EXIT_OK, EXIT_USAGE = 0, 2


def add_evaluate_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="evaluate a run: base vs few-shot vs fine-tuned on the "
                                           "test split; writes report.md and report.json")
    p.add_argument("run_ref", metavar="RUN", help="run folder or name")
    _common(p)
    p.add_argument("--max-test-rows", type=int, metavar="N",
                   help="score at most N test rows, a seeded sample (0 = all; default eval.max_test_rows)")
    p.add_argument("--checkpoints", action="store_true",
                   help="also score every checkpoint (answer perplexity by step)")
    p.add_argument("--runs-dir", type=Path)

    p = subparsers.add_parser("compare", help="answer prompts with base, few-shot and fine-tuned "
                                              "side by side (length-sorted batched calls)")
    p.add_argument("run_ref", metavar="RUN", help="run folder or name")
    p.add_argument("--prompts", metavar="FILE", help="TOML or JSONL prompts (default: eval.prompts)")
    _common(p)
    p.add_argument("--json", action="store_true", help="print the answers and metrics as JSON")
    p.add_argument("--runs-dir", type=Path)


    p = subparsers.add_parser("rewards", help="GRPO rewards: `rewards test PROFILE` samples "
                                              "completions and scores them before training")
    rsub = p.add_subparsers(dest="rewards_command", metavar="SUBCOMMAND", required=True)
    q = rsub.add_parser("test", help="sample completions from the model the run starts from, "
                                     "score them with every reward, and say whether GRPO can "
                                     "learn from them")
    q.add_argument("profile", metavar="PROFILE", help="profile file or name")
    q.add_argument("--prompts", type=int, metavar="N", help="training prompts to try "
                   "(default: rewards.test_prompts)")
    q.add_argument("--samples", type=int, metavar="K", help="completions per prompt "
                   "(default: grpo.num_generations)")
    q.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    q.add_argument("--json", action="store_true", help="print the result as JSON")
    q.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a profile field, e.g. --set grpo.temperature=1.2 (repeatable)")
    rsub.add_parser("list", help="the built-in reward functions")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shots", type=int, metavar="K", help="few-shot examples (default: eval.shots)")
    p.add_argument("--select", choices=("fixed", "bm25"), default=None,
                   help="few-shot choice: a fixed seeded set, or the most similar by BM25")
    p.add_argument("--max-new-tokens", type=int, metavar="N")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


def _quiet() -> None:
    from workbench.quiet import quiet_libraries

    quiet_libraries()


def _fail(exc) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return EXIT_USAGE


def _stopped(stop, what: str, again: str) -> int:
    """One line for a command a stop ended (Ctrl-C, SIGTERM): what ended, what to run later."""
    print(f"stopped ({stop.name}): {what}; {again}", file=sys.stderr)
    from workbench.evaluate.interrupt import EXIT_STOPPED

    return EXIT_STOPPED


def cmd_eval(args) -> int:
    from workbench.evaluate.errors import EvaluateError, Stopped
    from workbench.evaluate.evaluation import evaluate_run
    from workbench.evaluate.interrupt import SignalStop
    from workbench.evaluate.progress import TerminalProgress
    from workbench.rundir import RunNotFound, find_run

    # Rows done / total with an ETA: on a CPU the answers alone take minutes.
    shown = TerminalProgress()
    # Ctrl-C / SIGTERM: the evaluation ends at its next token, within seconds (interrupt.py).
    stop = SignalStop()
    try:
        with stop:
            run = find_run(args.run_ref, args.runs_dir)
            from workbench.train.checkpoints import adapter_problem  # files vs their manifest
            if problem := adapter_problem(run):
                raise EvaluateError(*problem)
            _quiet()
            result = evaluate_run(run, log=shown.log, progress=shown.update,
                                  on_event=shown.periodic, shots=args.shots,
                                  selection=args.select, max_new_tokens=args.max_new_tokens,
                                  checkpoints=args.checkpoints or None, device=args.device,
                                  max_test_rows=args.max_test_rows, cancel=stop)
    except (Stopped, KeyboardInterrupt):
        shown.close()
        return _stopped(stop, "the evaluation ended, no report was written",
                        f"`workbench eval {args.run_ref}` runs it again")
    except (EvaluateError, RunNotFound) as exc:
        return _fail(exc)
    finally:
        shown.close()
    from workbench.evaluate.report import verdict

    print(verdict(result))
    print(f"report:   {run.path / 'report.md'}\njson:     {run.path / 'report.json'}")
    return EXIT_OK


def cmd_compare(args) -> int:
    from workbench.evaluate.errors import EvaluateError, Stopped
    from workbench.evaluate.interrupt import SignalStop
    from workbench.rundir import RunNotFound, find_run

    stop = SignalStop()  # Ctrl-C / SIGTERM: the answers end at their next token
    try:
        with stop:
            run = find_run(args.run_ref, args.runs_dir)
            from workbench.train.checkpoints import adapter_problem  # files vs their manifest
            if problem := adapter_problem(run):
                raise EvaluateError(*problem)
            return _compare(run, args, stop)
    except (Stopped, KeyboardInterrupt):
        return _stopped(stop, "the comparison ended before every answer was in",
                        f"`workbench compare {args.run_ref}` runs it again")
    except (EvaluateError, RunNotFound) as exc:
        return _fail(exc)


def _compare(run, args, stop=None) -> int:
    from workbench.evaluate.compare import (ComparisonEngine, Generations, RowDone,
                                            default_systems, run_adapters)
    from workbench.evaluate.evaluation import EvalOptions
    from workbench.evaluate.fewshot import FewShotPicker
    from workbench.evaluate.metrics import score_all
    from workbench.evaluate.progress import EvalProgress, TerminalProgress
    from workbench.evaluate.suite import load_prompts
    from workbench.evaluate.testset import load_splits
    from workbench.evaluate.errors import EvaluateError, check_stop
    from workbench.profile import ProfileError, load_profile

    try:
        profile = load_profile(run.profile_path)
    except ProfileError as exc:
        raise EvaluateError(f"could not read the run's profile: {exc}") from exc
    path = args.prompts or profile.eval.prompts
    if not path:
        raise EvaluateError("no prompts to compare on", hint="pass --prompts FILE or set eval.prompts")
    prompts = load_prompts(path)
    adapters = run_adapters(run)
    opts = EvalOptions.from_profile(profile, shots=args.shots, selection=args.select,
                                    max_new_tokens=args.max_new_tokens)
    splits = load_splits(profile)
    _quiet()
    engine = ComparisonEngine.from_run(run, profile, adapters=adapters, device=args.device)
    check_stop(stop)  # asked while the model loaded
    systems = default_systems(opts.shots)
    picker = FewShotPicker(splits.train, opts.shots, seed=opts.seed, selection=opts.selection,
                           exclude_prompts=[p["prompt"] for p in prompts])
    rows = engine.rows([p["prompt"] for p in prompts], systems, picker)
    gens = None
    shown = TerminalProgress(doing="comparing")  # on stderr: stdout keeps the answers (or JSON)
    tracker = EvalProgress(on_update=shown.update, on_periodic=shown.periodic)
    stage = "answers"  # rows: every prompt once per system
    tracker(stage, 0, len(rows))
    try:
        for ev in engine.stream(rows, max_new_tokens=opts.max_new_tokens, seed=opts.seed,
                                batch_size=opts.batch_size, cancel=stop):
            if isinstance(ev, RowDone):
                tracker(stage, ev.done, ev.total)
            elif isinstance(ev, Generations):
                gens = ev
    finally:
        shown.close()
    check_stop(stop)  # answers cut short are no answers to show
    names = [s.name for s in systems]
    answers = [{"prompt": p["prompt"], "reference": p["reference"],
                "answers": {n: gens.text(n, i) for n in names}} for i, p in enumerate(prompts)]
    scored = [a for a in answers if a["reference"] is not None]
    chosen = opts.metric_names([a["reference"] for a in scored])[0]
    metrics = ({n: score_all(chosen, [a["answers"][n] for a in scored],
                             [a["reference"] for a in scored]) for n in names} if scored else {})
    timing = {k: v.to_dict() for k, v in gens.timing.items()}
    if args.json:
        print(json.dumps({"run": run.name, "prompts": answers, "metrics": metrics, "timing": timing,
                          "shots": picker.k}, indent=2, ensure_ascii=False))
        return EXIT_OK
    from workbench.evaluate.sidebyside import format_compare

    width = shutil.get_terminal_size((100, 24)).columns
    print(format_compare(answers, names, metrics, len(scored), timing, width))
    return EXIT_OK


def cmd_rewards(args) -> int:
    if args.rewards_command == "list":
        from workbench.rewards.builtin import BUILTINS

        for b in BUILTINS.values():
            name = f"{b.name}:{b.argument.upper().replace(' ', '_')}" if b.argument else b.name
            print(f"{name}\n    {b.summary}")
        print("\nyour own: \"FILE.py:FUNCTION\", TRL's reward signature "
              "f(prompts, completions, completion_ids=None, **columns) -> list of floats")
        return EXIT_OK
    from workbench.evaluate.errors import EvaluateError
    from workbench.evaluate.reward_trial import format_trial, try_rewards
    from workbench.profile import ProfileError, check_paths, load_profile

    try:
        profile = load_profile(args.profile, args.overrides)
    except ProfileError as exc:
        print(f"error: invalid profile\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    issues = check_paths(profile)
    if issues:
        print("error: " + "\n".join(str(i) for i in issues), file=sys.stderr)
        return EXIT_USAGE
    _quiet()
    say = (lambda s: print(s, file=sys.stderr)) if args.json else print
    last = [0.0]

    def progress(done: int, total: int) -> None:
        import time

        if sys.stderr.isatty() and (time.monotonic() - last[0] > 0.5 or done == total):
            last[0] = time.monotonic()
            print(f"\r  sampled {done}/{total}", end="\n" if done == total else "",
                  file=sys.stderr, flush=True)

    try:
        result = try_rewards(profile, prompts=args.prompts, samples=args.samples,
                             device=args.device, log=say, progress=progress)
    except EvaluateError as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(format_trial(result, width=shutil.get_terminal_size((110, 24)).columns))
    return EXIT_OK
