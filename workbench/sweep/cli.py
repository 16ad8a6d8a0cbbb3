"""`workbench sweep`, `workbench sweeps` and `workbench runs compare`.

    workbench sweep PROFILE --grid lora.r=8,16 --grid train.learning_rate=1e-4,2e-4 [--set K=V]
    workbench sweep PROFILE --range train.learning_rate=log:1e-5..1e-3 --trials 8
    workbench sweep PROFILE ... --detach | --parallel N | --no-prune | --skip-unfit
    workbench sweep report SWEEP [--json]      the ranked table, recommendation and curves
    workbench sweep attach SWEEP               follow a detached sweep
    workbench sweep stop SWEEP                 the running trial checkpoints, the sweep stops
    workbench sweep resume SWEEP [--detach]    the unfinished trial and the remaining ones
    workbench sweeps [--json]                  every sweep, its state and progress
    workbench runs compare RUN RUN... [--json] any runs, of any profiles
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ACTIONS = ("report", "attach", "stop", "resume")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class SweepUsageError(Exception):
    pass


def add_sweep_commands(sub) -> None:
    p = sub.add_parser(
        "sweep", help="try several LoRA configurations and rank them by quality per GPU-hour",
        description="Run one trial (an ordinary run) per configuration and rank them. "
                    "`workbench sweep report|attach|stop|resume SWEEP` act on a sweep.")
    p.add_argument("target", metavar="PROFILE|ACTION",
                   help="a profile to sweep, or one of: " + ", ".join(ACTIONS))
    p.add_argument("sweep_ref", metavar="SWEEP", nargs="?", help="with an ACTION: the sweep folder or name")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a grid axis (repeatable); paired keys change together: "
                        "lora.r+lora.alpha=8+16,16+32")
    p.add_argument("--range", dest="ranges", action="append", default=[], metavar="KEY=KIND:LO..HI",
                   help="a sampled axis for --trials: log:1e-5..1e-3, float:0..0.1, int:4..64")
    p.add_argument("--trials", type=int, help="sample N configurations instead of the full grid")
    p.add_argument("--parallel", type=int, help="trials side by side, one per GPU")
    p.add_argument("--no-prune", dest="prune", action="store_false", default=None,
                   help="never stop a trial early (the median pruner is on by default)")
    p.add_argument("--skip-unfit", action="store_true",
                   help="drop the configurations the memory estimate says will not fit, "
                        "instead of refusing the sweep")
    p.add_argument("--detach", action="store_true", help="run in the background")
    p.add_argument("--json", action="store_true", help="with report: machine-readable output")
    p.add_argument("--runs-dir", type=Path, help="where the trials' runs go (default: as for runs)")
    p.add_argument("--sweeps-dir", type=Path, help="where sweeps live (default ./sweeps or "
                                                   "$WORKBENCH_SWEEPS_DIR)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a profile field for every trial (repeatable)")

    p = sub.add_parser("sweeps", help="list sweeps")
    p.add_argument("--json", action="store_true")
    p.add_argument("--sweeps-dir", type=Path)


def _user_error(message: str):
    from workbench.cli import UserError

    return UserError(message)


def _find(args):
    from workbench.sweep.folder import SweepNotFound, find_sweep

    if not args.sweep_ref:
        raise _user_error(f"`workbench sweep {args.target}` needs a SWEEP (folder or name); "
                          "`workbench sweeps` lists them")
    try:
        return find_sweep(args.sweep_ref, args.sweeps_dir)
    except SweepNotFound as exc:
        raise _user_error(str(exc)) from exc


def cmd_sweep(args) -> int:
    if args.target in ACTIONS:
        sweep = _find(args)
        return {"report": _report, "attach": _attach, "stop": _stop, "resume": _resume}[args.target](sweep, args)
    if args.sweep_ref:
        raise _user_error(f"unexpected {args.sweep_ref!r}: `workbench sweep PROFILE` takes axes as "
                          f"--grid KEY=V1,V2; actions are {', '.join(ACTIONS)}")
    return _start(args)


def _start(args) -> int:
    from workbench.profile import ProfileError, load_profile
    from workbench.sweep.definition import SweepDefinitionError, build_definition, short_label
    from workbench.sweep.engine import create_sweep, spawn_sweep_detached
    from workbench.sweep.fit import check_fit
    from workbench.sweep.folder import default_sweeps_dir

    try:
        profile = load_profile(args.target, args.overrides)
    except ProfileError as exc:
        raise _user_error(f"invalid profile\n{exc}") from exc
    try:
        definition = build_definition(profile, args.grid, args.ranges, args.trials, args.parallel,
                                      args.prune)
    except SweepDefinitionError as exc:
        raise _user_error(str(exc)) from exc
    print(f"sweep of {profile.name}: {definition.describe()}", flush=True)

    if definition.sampled:
        # Sampled values are drawn later; the bounds of each range are what can be checked now.
        overrides = [[f"{r.key}={int(v)}" if r.kind == "int" else f"{r.key}={float(v)!r}"]
                     for r in definition.ranges for v in (r.low, r.high)]
    else:
        overrides = [definition_overrides(definition, p) for p in definition.grid_points()]
    profiles = [profile.with_overrides(o) for o in overrides] or [profile]
    labels = [short_label(o) for o in overrides] or [profile.name]
    fit = check_fit(profiles)
    for line in fit.lines(labels):
        print(line)
    if fit.unfit:
        if not args.skip_unfit or definition.sampled:
            raise _user_error("refused before starting: the configurations above will not fit "
                              f"in {fit.gpu} memory. Change the axes, or pass --skip-unfit to "
                              "sweep the others (`workbench estimate PROFILE --set ...` explains "
                              "a configuration's memory)")
        keep = [p for i, p in enumerate(definition.grid_points()) if i not in fit.unfit]
        print(f"skipping {len(fit.unfit)} configuration(s) that will not fit (--skip-unfit)")
        definition.grid = _restrict(definition, keep)
    _check_parallel(definition)

    from workbench.rundir import default_runs_dir

    runs_dir = args.runs_dir or (Path(profile.train.runs_dir) if profile.train.runs_dir != "runs"
                                 else default_runs_dir())
    sweep = create_sweep(profile, definition, list(args.overrides), runs_dir,
                         args.sweeps_dir or default_sweeps_dir(), fit.lines(labels))
    print(f"sweep folder: {sweep.path}")
    print(f"trials' runs: {Path(runs_dir).resolve()}")
    if args.detach:
        pid = spawn_sweep_detached(sweep)
        print(f"started {sweep.name} in the background (pid {pid})")
        print(f"  follow:  workbench sweep attach {sweep.name}")
        print(f"  stop:    workbench sweep stop {sweep.name}")
        print(f"  answer:  workbench sweep report {sweep.name}")
        return EXIT_OK
    return _foreground(sweep)


def definition_overrides(definition, point):
    from workbench.sweep.definition import overrides_for

    return overrides_for(definition, point)


def _restrict(definition, keep: list[dict]):
    """A grid without its unfit points is no longer a product; pair all its axes into one so
    exactly the kept points run."""
    from workbench.sweep.definition import GridAxis

    keys = [k for a in definition.grid for k in a.keys]
    values = []
    for point in keep:
        choice = []
        for a in definition.grid:
            choice += a.values[a.labels().index(point[a.name])]
        values.append(choice)
    return [GridAxis(keys, values)]


def _check_parallel(definition) -> None:
    if definition.parallel <= 1:
        return
    from workbench.estimate.gpu import telemetry

    state = telemetry()
    count = len(state.gpus) if state.available else 0
    if count < definition.parallel:
        raise _user_error(f"--parallel {definition.parallel} runs one trial per GPU, but "
                          f"{count} GPU(s) are here ({state.reason or 'fewer than asked'}); "
                          f"use --parallel {max(count, 1)}")


def _foreground(sweep, resume: bool = False) -> int:
    from workbench.sweep.engine import SweepRunner

    started = time.time()
    runner = SweepRunner(sweep, say=lambda s: print(s, flush=True))
    state = runner.run()
    print(f"\nsweep {state} in {time.time() - started:.0f} s: {sweep.path}", flush=True)
    return _print_report(sweep, json_out=False, write=True) if state == "finished" else (
        _stopped_hint(sweep))


def _stopped_hint(sweep) -> int:
    _print_report(sweep, json_out=False, write=True)
    print(f"continue with `workbench sweep resume {sweep.name}`")
    return EXIT_OK


def _print_report(sweep, json_out: bool, write: bool) -> int:
    from workbench.sweep.compare import format_comparison
    from workbench.sweep.report import sweep_comparison, write_sweep_report

    c = write_sweep_report(sweep) if write else sweep_comparison(sweep)
    if json_out:
        print(json.dumps({"sweep": sweep.name, "path": str(sweep.path), "state": sweep.effective_state(),
                          "trials": sweep.read_trials(), **(c.to_dict() if c else {})}, indent=2))
        return EXIT_OK
    if c is None:
        print(f"{sweep.name}: no trial has a run yet")
        return EXIT_OK
    print(format_comparison(c, color=sys.stdout.isatty()))
    print(f"\nreport: {sweep.path / 'report.md'}")
    return EXIT_OK


def _report(sweep, args) -> int:
    return _print_report(sweep, json_out=args.json, write=True)


def _attach(sweep, args) -> int:
    """Follow sweep.log (every trial start, prune and end) until the sweep ends."""
    print(f"attached to {sweep.name} (Ctrl-C detaches; the sweep goes on)", flush=True)
    offset = 0
    try:
        while True:
            try:
                with open(sweep.log_path, encoding="utf-8") as fh:
                    fh.seek(offset)
                    chunk = fh.read()
                    offset = fh.tell()
            except FileNotFoundError:
                chunk = ""
            if chunk:
                print(chunk, end="", flush=True)
            elif sweep.effective_state() not in ("starting", "running"):
                break
            else:
                time.sleep(0.5)
    except KeyboardInterrupt:
        print(f"detached; {sweep.name} keeps running")
        return EXIT_OK
    return _print_report(sweep, json_out=False, write=False)


def _stop(sweep, args) -> int:
    from workbench.sweep.engine import SweepError, stop_sweep

    print(f"asking {sweep.name} to stop (the running trial checkpoints first)...", flush=True)
    try:
        state = stop_sweep(sweep)
    except SweepError as exc:
        raise _user_error(str(exc)) from exc
    print(f"{sweep.name}: {state}; continue with `workbench sweep resume {sweep.name}`")
    return EXIT_OK


def _resume(sweep, args) -> int:
    from workbench.sweep.engine import SweepError, check_resumable, spawn_sweep_detached

    try:
        check_resumable(sweep)
    except SweepError as exc:
        raise _user_error(str(exc)) from exc
    done, total = sweep.progress()
    print(f"resuming {sweep.name}: {done} of {total} trials done; finished ones are not run again",
          flush=True)
    if args.detach:
        pid = spawn_sweep_detached(sweep, resume=True)
        print(f"running in the background (pid {pid}); follow with `workbench sweep attach {sweep.name}`")
        return EXIT_OK
    return _foreground(sweep, resume=True)


def cmd_sweeps(args) -> int:
    from workbench.sweep.folder import default_sweeps_dir, list_sweeps

    rows = []
    for s in list_sweeps(args.sweeps_dir):
        done, total = s.progress()
        trials = s.read_trials()
        rows.append({"name": s.name, "path": str(s.path), "state": s.effective_state(),
                     "done": done, "total": total,
                     "failed": sum(t["state"] == "failed" for t in trials),
                     "pruned": sum(t["state"] == "pruned" for t in trials),
                     "created_at": s.read_definition().get("created_at")})
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not rows:
        print(f"no sweeps under {args.sweeps_dir or default_sweeps_dir()}/; start one with "
              "`workbench sweep demo --grid lora.r=4,16`")
        return EXIT_OK
    print(f"{'SWEEP':<34} {'STATE':<12} {'TRIALS':>8} {'FAILED':>7} {'PRUNED':>7} CREATED")
    for r in rows:
        print(f"{r['name']:<34} {r['state']:<12} {str(r['done']) + '/' + str(r['total']):>8} "
              f"{r['failed']:>7} {r['pruned']:>7} {(r['created_at'] or '')[:16].replace('T', ' ')}")
    return EXIT_OK


def cmd_runs_compare(args) -> int:
    from workbench.sweep.compare import compare_runs, format_comparison, markdown, svg_plot
    from workbench.rundir import RunNotFound, find_run, write_text_atomic

    if not args.run_refs:
        raise _user_error("`workbench runs compare` needs one or more runs: "
                          "workbench runs compare RUN RUN... (`workbench runs` lists them)")
    runs = []
    for ref in args.run_refs:
        try:
            runs.append(find_run(ref, args.runs_dir))
        except RunNotFound as exc:
            raise _user_error(str(exc)) from exc
    if len({r.path for r in runs}) < len(runs):
        raise _user_error("the same run is named twice; name each run once")
    c = compare_runs(runs)
    if args.json:
        print(json.dumps(c.to_dict(), indent=2))
        return EXIT_OK
    print(format_comparison(c, color=sys.stdout.isatty()))
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        svg = svg_plot(c)
        if svg:
            write_text_atomic(out / "loss.svg", svg)
        write_text_atomic(out / "compare.md", markdown(c, "Runs compared", "loss.svg" if svg else None))
        print(f"\nwritten: {out / 'compare.md'}")
    return EXIT_OK
