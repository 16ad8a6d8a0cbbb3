"""Entry point of a detached run: `python -m workbench.pipeline.worker RUN_DIR [--resume]`.

It runs in its own session with stdout / stderr going to RUN_DIR/stdout.log, and rebuilds
everything from the run's resolved profile.toml (so resume sees exactly what the first
process saw)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
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
    run.write_status(state="starting", pid=os.getpid())
    return run_in_this_process(run, resume=args.resume, from_checkpoint=args.from_checkpoint)


def run_in_this_process(run, resume: bool, printer=None, plan=None,
                        from_checkpoint: str | None = None) -> int:
    """Train the run in this process; shared by the worker and foreground runs. Without a
    `plan`, the run is planned again from its resolved profile."""
    from workbench.pipeline.console import Hangup, ProgressPrinter, SafeStream

    # A detached run's stdout is stdout.log: a full disk must not turn a line into a crash.
    printer = printer or ProgressPrinter(SafeStream(sys.stdout), live=False)
    # From here on a closed terminal (SIGHUP) no longer kills the run: see console.Hangup.
    hangup = Hangup(printer)
    try:
        return _plan_and_execute(run, resume, printer, plan, from_checkpoint, hangup)
    finally:
        hangup.restore()


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


def _plan_and_execute(run, resume, printer, plan, from_checkpoint, hangup) -> int:
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
                    from_checkpoint=from_checkpoint, hangup=hangup)
    printer.close()
    return 0 if state in ("finished", "stopped") else 1


if __name__ == "__main__":
    sys.exit(main())
