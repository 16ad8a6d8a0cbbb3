"""`workbench`: the command line. With no arguments it opens the app; everything the app
does, a subcommand does too.

Imports stay lazy: `workbench runs` or `workbench profile validate` must answer at once,
without loading torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from workbench import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UserError(Exception):
    """Shown as `error: ...` without a traceback: the person can fix it."""


def _profile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a profile field, e.g. --set train.max_steps=20 (repeatable)")
    # The flag a bad row's hint names (data/load.py), taken wherever a profile is: the same as
    # --set data.on_bad_rows=skip, as in the data commands.
    p.add_argument("--skip-bad-rows", dest="overrides", action="append_const",
                   const="data.on_bad_rows=skip",
                   help="skip data rows that cannot be read (each is counted and listed); "
                        "same as --set data.on_bad_rows=skip")


def build_parser() -> argparse.ArgumentParser:
    # No abbreviations at the top level: argparse matches every argument against these options
    # first, so `estimate --r 16` would be read as an ambiguous `--run` / `--runs-dir`.
    parser = argparse.ArgumentParser(
        prog="workbench", allow_abbrev=False,
        description="Fine-tune open language models on your own GPU. "
                    "Without a command, opens the app.")
    parser.add_argument("--version", action="version", version=f"workbench {__version__}")
    parser.add_argument("--run", metavar="PROFILE", help="same as `workbench run PROFILE`")
    parser.add_argument("--detach", action="store_true", help="with --run: run in the background")
    parser.add_argument("--force", action="store_true",
                        help="with --run: start even when the disk-space check says it will not fit")
    parser.add_argument("--runs-dir", type=Path, help="where runs live (default: ./runs, "
                        "or the profile's train.runs_dir, or $WORKBENCH_RUNS_DIR)")
    _profile_args(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="train a profile headless")
    p.add_argument("profile", help="a profile path, or a name from profiles/ or your profile folder")
    p.add_argument("--detach", action="store_true",
                   help="start in its own session and return; the run survives the terminal")
    p.add_argument("--runs-dir", type=Path)
    p.add_argument("--force", action="store_true",
                   help="start even when the disk-space check says the run will not fit")
    _profile_args(p)
    from workbench.pipeline.launch import add_resume_flags, add_world_flags

    add_world_flags(p)  # --gpus N, --procs N, --node-rank R (torchrun: pipeline/launch.py)

    p = sub.add_parser("runs", help="list runs; `runs compare RUN RUN...` ranks them")
    p.add_argument("action", nargs="?", choices=["compare"],
                   help="compare: what differs, metrics, cost, quality per GPU-hour, curves")
    p.add_argument("run_refs", nargs="*", metavar="RUN", help="with compare: runs to compare")
    p.add_argument("--output", metavar="DIR", help="with compare: also write compare.md + loss.svg")
    p.add_argument("--json", action="store_true")
    p.add_argument("--runs-dir", type=Path)

    p = sub.add_parser("attach", help="follow a run's progress live from its folder")
    p.add_argument("run_ref", metavar="RUN", nargs="?",
                   help="run folder or name (default: the newest running run)")
    p.add_argument("--runs-dir", type=Path)

    p = sub.add_parser("stop", help="checkpoint and stop a running run")
    p.add_argument("run_ref", metavar="RUN", help="run folder or name")
    p.add_argument("--no-wait", action="store_true", help="send the signal and return")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait (default 600)")
    p.add_argument("--runs-dir", type=Path)

    p = sub.add_parser("resume", help="continue a stopped, failed or killed run from its last checkpoint")
    p.add_argument("run_ref", metavar="RUN", help="run folder or name")
    p.add_argument("--detach", action="store_true")
    p.add_argument("--from", dest="from_checkpoint", metavar="CHECKPOINT",
                   help="resume from this checkpoint (checkpoint-N) instead of the newest intact one")
    p.add_argument("--runs-dir", type=Path)
    add_resume_flags(p)  # --procs N / --gpus N: resume on another world size

    p = sub.add_parser("launch-script", help="write a cluster job script for a profile "
                       "(several machines: srun + torchrun)")
    p.add_argument("profile")
    p.add_argument("--scheduler", choices=["slurm"], default="slurm")
    p.add_argument("--nodes", type=int, help="machines (default: distributed.nnodes)")
    p.add_argument("--gpus-per-node", type=int, help="default: distributed.gpus when a number, "
                   "else 8")
    p.add_argument("--time", default="24:00:00", help="the job's time limit (default 24:00:00)")
    p.add_argument("--partition", default="", help="the Slurm partition (default: the cluster's)")
    p.add_argument("--output", "-o", type=Path, help="write the script here (default: stdout)")
    _profile_args(p)

    from workbench.data.cli import add_data_commands
    from workbench.estimate.cli import add_estimate_command
    from workbench.evaluate.cli import add_evaluate_commands
    from workbench.export.cli import add_export_command

    add_data_commands(sub)
    add_estimate_command(sub)
    add_evaluate_commands(sub)
    add_export_command(sub)
    from workbench.sweep.cli import add_sweep_commands

    add_sweep_commands(sub)

    p = sub.add_parser("profile", help="validate, show or compare profiles")
    psub = p.add_subparsers(dest="profile_command", metavar="ACTION", required=True)
    q = psub.add_parser("validate", help="check profiles and the files they name; prints every "
                                          "problem with its line")
    q.add_argument("profiles", nargs="+")
    _profile_args(q)
    q = psub.add_parser("show", help="print the fully resolved profile")
    q.add_argument("profile")
    _profile_args(q)
    q = psub.add_parser("diff", help="fields that differ between two profiles (or runs)")
    q.add_argument("a")
    q.add_argument("b")
    psub.add_parser("list", help="profiles found in profiles/ and your profile folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # inside the try: a reader that went away is seen here, not at exit
        return code
    except BrokenPipeError:
        # `workbench runs | head -3`: the reader has what it wanted. Nothing more can reach it,
        # and Python's flush at exit would print a second traceback: stdout goes nowhere now.
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + 13  # as a process ended by SIGPIPE, what shells expect from `cmd | head`


def _main(argv: list[str] | None = None) -> int:
    if not (sys.argv[1:] if argv is None else argv):
        # Bare `workbench` opens the app, whose first frame people wait on: the parser would
        # import engine modules (launch flags) the app does not need (bench/app_startup.py).
        try:
            return cmd_app()
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    parser = build_parser()
    args = parser.parse_args(argv)
    from workbench.hub import quiet_offline_kernel_notice

    quiet_offline_kernel_notice()
    if args.run and args.command:
        parser.error("use either --run PROFILE or a command, not both")
    try:
        if args.run:
            return cmd_run(args.run, args.overrides, args.detach, args.runs_dir,
                           getattr(args, "force", False))
        if args.command is None:
            return cmd_app()
        if args.command in TORCH_COMMANDS:
            from workbench.train.threads import size_torch_threads

            size_torch_threads()  # the idle cores only, as training does (threads.py)
        handler = COMMANDS[args.command]
        return handler(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a full disk outside a run (its folder, a profile): no traceback
        import errno

        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        print(f"error: disk full: {exc.strerror}" + (f" writing {exc.filename}" if exc.filename
                                                     else "") + "; free space, then try again",
              file=sys.stderr)
        return EXIT_FAILED


# ---- helpers ----------------------------------------------------------------------------

def _load_profile(ref: str, overrides: list[str]):
    from workbench.profile import ProfileError, load_profile

    try:
        return load_profile(ref, overrides)
    except ProfileError as exc:
        raise UserError(f"invalid profile\n{exc}") from exc


def _find_run(ref: str, runs_dir: Path | None):
    from workbench.rundir import RunNotFound, find_run

    try:
        return find_run(ref, runs_dir)
    except RunNotFound as exc:
        raise UserError(str(exc)) from exc


def _printers(run, live: bool | None = None):
    """Live output for the terminal, plain lines into the run's stdout.log (only there once
    the terminal goes away: console.TeePrinter)."""
    from workbench.pipeline.console import TeePrinter

    return TeePrinter(run, live=live)


def _print_outputs(run) -> None:
    status = run.read_status()
    print(f"\nrun:      {run.path}  ({run.effective_state(status)})")
    print(f"events:   {run.events_path}")
    print(f"log:      {run.log_path}")
    if status.get("adapter"):
        print(f"adapter:  {status['adapter']}")
    if (run.path / "report.md").exists():
        print(f"report:   {run.path / 'report.md'}")
    if status.get("state") == "failed" and status.get("hint"):
        print(f"hint:     {status['hint']}")


# ---- commands ---------------------------------------------------------------------------

# The one place the command line hands over to the app, at run time only: the engine never
# imports the app (or Textual) at import time, so headless commands stay light.
APP_ENTRY = "screens.app"


def cmd_app() -> int:
    import importlib

    try:
        app = importlib.import_module(APP_ENTRY)
    except ImportError as exc:
        raise UserError(f"the app could not start: {exc}") from exc
    return app.run_app()


def cmd_run(profile_ref: str, overrides: list[str], detach: bool, runs_dir: Path | None,
            force: bool = False) -> int:
    from workbench.train.control import create_run, spawn_detached
    from workbench.train.plan import RunError, plan_run

    profile = _load_profile(profile_ref, overrides)
    print(f"planning {profile.name} ({profile.model.name_or_path}, {profile.lora.method})", flush=True)
    try:
        plan = plan_run(profile, log=lambda s: print(s, flush=True))
    except RunError as exc:
        raise UserError(str(exc)) from exc
    for note in plan.notes:
        print(note)
    print(f"device {plan.device}, precision {plan.precision}, gradient checkpointing "
          f"{'on' if plan.gradient_checkpointing else 'off'}")
    _check_disk_space(plan, runs_dir, force)
    launch = _launch_for(plan)  # several processes (torchrun) or None; before the run folder
    if launch is not None and launch.node_rank > 0:  # another machine joins node 0's run
        from workbench.pipeline.launch import join

        return _distributed_exit(None, lambda printer: join(
            profile, Path(runs_dir or profile.train.runs_dir), launch), detach=True)
    run = create_run(plan, runs_dir)
    if launch is not None:
        from workbench.pipeline.launch import start

        return _distributed_exit(run, lambda printer: start(run, launch, detach, printer), detach)
    if detach:
        pid = spawn_detached(run)
        print(f"started {run.name} in the background (pid {pid})")
        print(f"  follow:  workbench attach {run.name}")
        print(f"  stop:    workbench stop {run.name}")
        print(f"  folder:  {run.path}")
        return EXIT_OK
    return _foreground(run, resume=False, plan=plan)


def _launch_for(plan):
    from workbench.pipeline.launch import DistributedError, launch_for_plan

    try:
        return launch_for_plan(plan)
    except DistributedError as exc:
        raise UserError(str(exc)) from exc


def _distributed_exit(run, go, detach: bool) -> int:
    from workbench.pipeline.launch import DistributedError

    printer = None if detach else _printers(run)
    try:
        code = go(printer)
    except DistributedError as exc:
        raise UserError(str(exc)) from exc
    finally:
        if printer is not None:
            printer.close()
    if not detach:
        _print_outputs(run)
    return code


def _check_disk_space(plan, runs_dir: Path | None, force: bool) -> None:
    from workbench.train.diskspace import plan_needs, preflight

    try:
        check = preflight(plan_needs(plan, Path(runs_dir or plan.profile.train.runs_dir)))
    except Exception as exc:  # noqa: BLE001 - advice: a model it cannot size never stops a run
        print(f"disk space not checked ({type(exc).__name__}: {exc})")
        return
    if check.level == "refuse" and not force:
        raise UserError(f"{check.text()}\nfree space there, lower train.save_total_limit, or "
                        "start anyway with --force")
    for line in check.lines:
        print(f"warning: {line}" + (" (--force: starting anyway)" if check.level == "refuse"
                                     else ""))


def _foreground(run, resume: bool, plan=None, from_checkpoint: str | None = None) -> int:
    from workbench.pipeline.worker import run_in_this_process

    print(f"run folder: {run.path}", flush=True)
    printer = _printers(run)
    try:
        code = run_in_this_process(run, resume=resume, printer=printer, plan=plan,
                                   from_checkpoint=from_checkpoint)
    finally:
        printer.close()
    _print_outputs(run)
    return code


def cmd_runs(args) -> int:
    if args.action == "compare":
        return _lazy("workbench.sweep.cli", "cmd_runs_compare", args)
    if args.run_refs:
        raise UserError(f"`workbench runs` takes no RUN; to compare runs: "
                        f"workbench runs compare {' '.join(args.run_refs)}")
    from workbench.pipeline.console import fmt_duration
    from workbench.rundir import list_runs

    runs = list_runs(args.runs_dir)
    rows = []
    for run in runs:
        st = run.read_status()
        rows.append({"name": run.name, "path": str(run.path), "state": run.shown_state(st),
                     "step": st.get("step"), "total_steps": st.get("total_steps"),
                     "loss": st.get("loss"), "eval_loss": st.get("eval_loss"),
                     "created_at": st.get("created_at"), "ended_at": st.get("ended_at"),
                     # The run's own time (its sessions; what `runs compare` costs), as the
                     # Runs screen shows it: not the pause before a resume, nor a later eval.
                     "active_seconds": run.active_seconds(st),
                     "device": st.get("device"), "pid": st.get("pid"),
                     "damaged_checkpoints": _damaged(run)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not rows:
        print(f"no runs under {args.runs_dir or 'runs'}/; start one with `workbench run demo`")
        return EXIT_OK
    header = f"{'RUN':<34} {'STATE':<12} {'STEP':>11} {'LOSS':>8} {'EVAL':>8} {'DEVICE':<6} STARTED / DURATION"
    print(header)
    for r in rows:
        step = f"{r['step'] or 0}/{r['total_steps'] or '?'}"
        loss = f"{r['loss']:.4f}" if isinstance(r["loss"], (int, float)) else "-"
        ev = f"{r['eval_loss']:.4f}" if isinstance(r["eval_loss"], (int, float)) else "-"
        when = (r["created_at"] or "")[:16].replace("T", " ")
        if r["active_seconds"] is not None:
            when += f"  {fmt_duration(r['active_seconds'])}"
        print(f"{r['name']:<34} {r['state']:<12} {step:>11} {loss:>8} {ev:>8} {r['device'] or '-':<6} {when}")
        for name, what in r["damaged_checkpoints"]:
            print(f"  ! damaged {name}: {what}")
    return EXIT_OK


def _damaged(run) -> list[list[str]]:
    """Checkpoints whose files no longer match their manifest (sizes: a quick check)."""
    from workbench.train.checkpoints import damaged_checkpoints

    return [list(d) for d in damaged_checkpoints(run, quick=True)]


def cmd_attach(args) -> int:
    from workbench.pipeline.console import ProgressPrinter
    from workbench.train.control import follow

    run = _find_run(args.run_ref, args.runs_dir) if args.run_ref else _running_run(args.runs_dir)
    printer = ProgressPrinter(sys.stdout)
    printer.total_steps = run.read_status().get("total_steps")
    print(f"attached to {run.name} (Ctrl-C detaches; the run goes on)", flush=True)

    def on_event(ev):
        if ev.get("type") == "log" and not printer.total_steps:
            printer.total_steps = run.read_status().get("total_steps")
        printer.handle(ev)

    try:
        state = follow(run, on_event)
    except KeyboardInterrupt:
        printer.close()
        print(f"detached; {run.name} keeps running")
        return EXIT_OK
    printer.close()
    _print_outputs(run)
    return EXIT_OK if state in ("finished", "stopped") else EXIT_FAILED


def _running_run(runs_dir: Path | None):
    """`attach` without a RUN: the newest running run; with none running, the recent runs to
    choose from, as an error (there is nothing to follow)."""
    from workbench.rundir import default_runs_dir, list_runs

    runs = list_runs(runs_dir)
    where = f"{runs_dir or default_runs_dir()}/"
    if not runs:
        raise UserError(f"no runs under {where} to attach to; start one with "
                        "`workbench run PROFILE --detach`, or pass --runs-dir DIR")
    states = [(run, run.effective_state()) for run in runs]
    running = [run for run, state in states if state in ("starting", "running")]
    if running:
        chosen = running[-1]  # list_runs is oldest first
        others = ", ".join(r.name for r in running[:-1])
        print(f"attaching to the newest running run, {chosen.name}"
              + (f" (also running: {others})" if others else ""), flush=True)
        return chosen
    recent = "\n".join(f"  {run.name:<34} {state}" for run, state in states[-10:][::-1])
    raise UserError(f"no run is running under {where}; name the one to follow, "
                    f"e.g. `workbench attach {runs[-1].name}`. Recent runs:\n{recent}")


def cmd_stop(args) -> int:
    from workbench.train.control import ControlError, request_stop, wait_stopped

    run = _find_run(args.run_ref, args.runs_dir)
    try:  # nothing is said before the run is known to be stoppable
        asked = request_stop(run)
    except ControlError as exc:
        raise UserError(str(exc)) from exc
    # A run still starting has no step to checkpoint: it ends before training begins; one
    # evaluating after training has its adapter saved: the evaluation ends at its next token.
    what = ("stop" if asked.get("state") == "starting" else
            "stop its evaluation (the adapter is saved)" if asked.get("evaluation") == "running"
            else "checkpoint and stop")
    if args.no_wait:
        print(f"asked {run.name} to {what}")
        return EXIT_OK
    print(f"asked {run.name} to {what}; waiting...", flush=True)
    state = wait_stopped(run, asked, wait_s=args.timeout)
    status = run.read_status()
    print(f"{run.name}: {state}" + (f" ({status.get('message')})" if status.get("message") else ""))
    return EXIT_OK if state in ("stopped", "finished") else EXIT_FAILED


def cmd_resume(args) -> int:
    from workbench.train.control import ControlError, check_resumable, spawn_detached

    run = _find_run(args.run_ref, args.runs_dir)
    try:
        check_resumable(run)
    except ControlError as exc:
        raise UserError(str(exc)) from exc
    from workbench.train.checkpoints import CheckpointError, describe_resume

    try:  # a mistyped or damaged --from is refused here, before the run is touched
        print(f"resuming {run.name} {describe_resume(run, args.from_checkpoint)}")
    except CheckpointError as exc:
        raise UserError(f"{exc.message}\n{exc.hint}") from exc
    from workbench.train.diskspace import resume_check

    for line in resume_check(run).lines:  # a warning: the run itself says it if the disk fills
        print(f"warning: {line}")
    from workbench.pipeline.launch import DistributedError, resume_launch, start

    try:  # a distributed run resumes through torchrun, on its own or another world size
        launch = resume_launch(run, args.procs, args.gpus)
    except DistributedError as exc:
        raise UserError(str(exc)) from exc
    if launch is not None:
        return _distributed_exit(run, lambda printer: start(run, launch, args.detach, printer,
                                                            resume=True), args.detach)
    if args.detach:
        pid = spawn_detached(run, resume=True, from_checkpoint=args.from_checkpoint)
        print(f"running in the background (pid {pid}); follow with `workbench attach {run.name}`")
        return EXIT_OK
    return _foreground(run, resume=True, from_checkpoint=args.from_checkpoint)


def cmd_profile(args) -> int:
    from workbench.profile import ProfileError, diff_profiles, format_diff, format_profile, load_profile

    action = args.profile_command
    if action == "validate":
        from workbench.profile import check_hub_ids, check_paths

        bad = 0
        for ref in args.profiles:
            try:
                profile = load_profile(ref, args.overrides)
                # The files it names, resolved as `run` resolves them: a missing model folder
                # or data file is found now, not when a run starts.
                missing = check_paths(profile)
                if missing:
                    raise ProfileError(missing)
            except ProfileError as exc:
                bad += 1
                print(f"invalid  {ref}\n{exc}")
                continue
            # Not errors: a hub model that is not cached only needs a network to run.
            warnings = check_hub_ids(profile)
            print(f"{'warning' if warnings else 'ok':<8} {ref} ({profile.name})")
            for issue in warnings:
                print(issue)
        return EXIT_USAGE if bad else EXIT_OK
    if action == "show":
        print(format_profile(_load_profile(args.profile, args.overrides), args.overrides), end="")
        return EXIT_OK
    if action == "diff":
        a, b = (_load_profile(_run_profile_path(x), []) for x in (args.a, args.b))
        print(format_diff(diff_profiles(a, b)) or "no differences")
        return EXIT_OK
    if action == "list":
        from workbench.profile import list_profiles

        for name, path in list_profiles().items():
            print(f"{name:<28} {path}")
        return EXIT_OK
    raise UserError(f"unknown profile action {action}")


def _run_profile_path(ref: str) -> str:
    """`profile diff` accepts runs too, to compare what two runs were trained with. A run
    folder wins, then a profile by path or name, then a run by name."""
    from workbench.profile import ProfileError, find_profile
    from workbench.rundir import RunNotFound, find_run

    if (Path(ref) / "profile.toml").is_file():
        return str(Path(ref) / "profile.toml")
    try:
        return str(find_profile(ref))
    except ProfileError:
        try:
            return str(find_run(ref).profile_path)
        except RunNotFound:
            return ref  # let load_profile say what was not found


def _lazy(module: str, name: str, args) -> int:
    import importlib

    return getattr(importlib.import_module(module), name)(args)


# Commands that run a model in this process (training runs size their threads in the worker).
TORCH_COMMANDS = {"eval", "compare", "export", "rewards"}

COMMANDS = {"runs": cmd_runs, "attach": cmd_attach, "stop": cmd_stop, "resume": cmd_resume,
            "profile": cmd_profile, "data": lambda a: _lazy("workbench.data.cli", "cmd_data", a),
            "estimate": lambda a: _lazy("workbench.estimate.cli", "cmd_estimate", a),
            "launch-script": lambda a: _lazy("workbench.pipeline.launch_script", "cmd_launch_script", a),
            "export": lambda a: _lazy("workbench.export.cli", "cmd_export", a),
            "eval": lambda a: _lazy("workbench.evaluate.cli", "cmd_eval", a),
            "compare": lambda a: _lazy("workbench.evaluate.cli", "cmd_compare", a),
            "rewards": lambda a: _lazy("workbench.evaluate.cli", "cmd_rewards", a),
            "sweep": lambda a: _lazy("workbench.sweep.cli", "cmd_sweep", a),
            "sweeps": lambda a: _lazy("workbench.sweep.cli", "cmd_sweeps", a), "run": lambda a: cmd_run(a.profile, a.overrides, a.detach,
                                                            a.runs_dir, a.force)}


if __name__ == "__main__":
    sys.exit(main())
