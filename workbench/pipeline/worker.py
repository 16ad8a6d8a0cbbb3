"""Entry point of a detached run: `python -m workbench.pipeline.worker RUN_DIR [--resume]`.

It runs in its own session with stdout / stderr going to RUN_DIR/stdout.log, and rebuilds
everything from the run's resolved profile.toml (so resume sees exactly what the first
process saw)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

# How much a detached run lowers its CPU priority (os.nice): the app, the shell and an editor
# next to it stay responsive while it trains, and on an otherwise idle machine it loses
# nothing (a niced process still gets every idle cycle). WORKBENCH_RUN_NICE=0 keeps the
# priority it was started with; foreground runs (`workbench --run`) never change it.
BACKGROUND_NICE = 10


def lower_priority() -> int:
    """Lower this process's CPU priority for a detached run (children inherit it: data
    loader workers, a launcher's ranks). Returns the niceness now."""
    raw = os.environ.get("WORKBENCH_RUN_NICE", "").strip()
    step = max(0, int(raw) if raw.lstrip("-").isdigit() else BACKGROUND_NICE)  # never raise it
    try:
        niceness = os.nice(step)
    except OSError:
        niceness = os.nice(0)
    # With the kernel's autogroups (most desktop and cloud kernels), the scheduler first
    # shares the CPU between sessions, and a nice value counts only inside its own: a detached
    # run is its own session (setsid), so its session's group is lowered as well. Only when
    # this process leads its session: never lower the shell a person ran this from.
    autogroup = Path("/proc/self/autogroup")
    if step and os.getsid(0) == os.getpid() and autogroup.exists():
        try:
            autogroup.write_text(f"{niceness}\n")
        except OSError:
            pass  # no autogroups here, or not allowed: the nice value above still holds
    return niceness


def main(argv: list[str] | None = None) -> int:
    # First of all: a `workbench stop` in the seconds this process starts (imports, planning)
    # is recorded and ends the run `stopped`, instead of killing it with nothing said.
    from workbench.train.control import StartingStop

    starting = StartingStop()
    lower_priority()  # before the imports and planning, which are CPU work too
    from workbench.hub import quiet_offline_kernel_notice

    quiet_offline_kernel_notice()
    parser = argparse.ArgumentParser(prog="python -m workbench.pipeline.worker")
    parser.add_argument("run_dir")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--from", dest="from_checkpoint", metavar="CHECKPOINT",
                        help="with --resume: the checkpoint to resume from (checkpoint-N)")
    args = parser.parse_args(argv)

    from workbench.rundir import RunDir

    run = RunDir(Path(args.run_dir).resolve())
    return run_in_this_process(run, resume=args.resume, from_checkpoint=args.from_checkpoint,
                               starting=starting)


def run_in_this_process(run, resume: bool, printer=None, plan=None,
                        from_checkpoint: str | None = None, starting=None) -> int:
    """Train the run in this process; shared by the worker and foreground runs. Without a
    `plan`, the run is planned again from its resolved profile. `starting` (StartingStop)
    holds a stop asked for before this was called."""
    from workbench.pipeline.console import Hangup, ProgressPrinter, SafeStream
    from workbench.train.control import StartingStop, starting_session

    starting = starting or StartingStop()
    # This session's status: none of the last session's ending (message, hint) shows now.
    starting_session(run, os.getpid())
    # A detached run's stdout is stdout.log: a full disk must not turn a line into a crash.
    printer = printer or ProgressPrinter(SafeStream(sys.stdout), live=False)

    def stopping(signum: int) -> None:  # runs in the signal handler
        try:
            event = run.append_event("status", state="stopping", message=(
                f"{signal.Signals(signum).name} while the run starts: stopping before "
                "training begins"))
        except OSError:
            return
        printer.handle(event)

    starting.listener = stopping
    if starting.flag.is_set():  # asked before the listener was there
        stopping(signal.SIGTERM)
    # From here on a closed terminal (SIGHUP) no longer kills the run: see console.Hangup.
    hangup = Hangup(printer)
    try:
        return _plan_and_execute(run, resume, printer, plan, from_checkpoint, hangup,
                                 starting.flag)
    finally:
        hangup.restore()
        starting.restore()


def _planning_status(run, printer):
    """What planning is doing ("loading ...", "tokenized data from the cache ..."): a status
    event the app shows while the run starts, and a line in the run's log."""
    def say(message: str) -> None:
        try:
            event = run.append_event("status", state="starting", message=message)
        except OSError:  # a full disk: the log line below still says it
            event = {"type": "status", "state": "starting", "message": message}
        printer.handle(event)
    return say


def _plan_and_execute(run, resume, printer, plan, from_checkpoint, hangup, stop) -> int:
    from workbench.train.control import run_profile
    from workbench.train.plan import plan_run
    from workbench.rundir import iso

    try:
        plan = plan or plan_run(run_profile(run), log=_planning_status(run, printer))
    except Exception as exc:  # the world changed since the run was planned (data moved...)
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        hint = getattr(exc, "hint", "")
        event = {"type": "error", "kind": getattr(exc, "kind", "config"), "message": message,
                 "hint": hint}
        try:
            event = run.append_event("error", kind=event["kind"], message=message, hint=hint)
            run.write_status(state="failed", message=message, hint=hint, ended_at=iso(time.time()))
            event2 = run.append_event("status", state="failed", message=message)
        except OSError:  # a full disk: the terminal still says what went wrong
            event2 = {"type": "status", "state": "failed", "message": message}
        printer.handle(event)
        printer.handle(event2)
        return 1
    if stop.is_set():  # asked while this process started or planned: no model loaded
        from workbench.train.control import stopped_before_training

        stopped_before_training(run, printer.handle, from_checkpoint)
        printer.close()
        return 0
    if hasattr(printer, "notice"):  # a foreground run on a terminal
        policy = getattr(plan.profile.train, "on_hangup", "continue")
        printer.notice("closing this terminal will not stop the run; Ctrl-C stops it"
                       if policy == "continue" else
                       "closing this terminal stops the run after a checkpoint "
                       "(train.on_hangup = \"stop\"); Ctrl-C stops it")
    from workbench.pipeline.run import run_pipeline
    from workbench.train.threads import size_torch_threads

    threads = size_torch_threads()
    try:
        with open(run.log_path, "a", encoding="utf-8") as fh:
            fh.write(threads + "\n")
    except OSError:
        pass  # a full disk is met, and reported, by the run itself
    printer.total_steps = run.read_status().get("total_steps")
    original = printer.handle

    def on_event(ev: dict) -> None:
        if ev.get("type") == "log":  # total steps are known only once the trainer starts
            printer.total_steps = run.read_status().get("total_steps") or printer.total_steps
        original(ev)

    state = run_pipeline(run, plan, resume=resume, on_event=on_event,
                         from_checkpoint=from_checkpoint, hangup=hangup, stop=stop)
    printer.close()
    return 0 if state in ("finished", "stopped") else 1


if __name__ == "__main__":
    sys.exit(main())
