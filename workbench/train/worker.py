"""Entry point of a detached run: `python -m workbench.train.worker RUN_DIR [--resume]`.

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
    parser = argparse.ArgumentParser(prog="python -m workbench.train.worker")
    parser.add_argument("run_dir")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)

    from workbench.train.rundir import RunDir

    run = RunDir(Path(args.run_dir).resolve())
    run.write_status(state="starting", pid=os.getpid())
    return run_in_this_process(run, resume=args.resume)


def run_in_this_process(run, resume: bool, printer=None, plan=None) -> int:
    """Train the run in this process; shared by the worker and foreground runs. Without a
    `plan`, the run is planned again from its resolved profile."""
    from workbench.train.console import ProgressPrinter
    from workbench.train.control import run_profile
    from workbench.train.plan import plan_run
    from workbench.train.rundir import iso

    printer = printer or ProgressPrinter(sys.stdout, live=False)
    try:
        plan = plan or plan_run(run_profile(run))
    except Exception as exc:  # the world changed since the run was planned (data moved...)
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        hint = getattr(exc, "hint", "")
        printer.handle(run.append_event("error", kind=getattr(exc, "kind", "config"),
                                        message=message, hint=hint))
        run.write_status(state="failed", message=message, hint=hint, ended_at=iso(time.time()))
        printer.handle(run.append_event("status", state="failed", message=message))
        return 1
    from workbench.train.runner import execute
    from workbench.train.threads import size_torch_threads

    with open(run.log_path, "a", encoding="utf-8") as fh:
        fh.write(size_torch_threads() + "\n")
    printer.total_steps = run.read_status().get("total_steps")
    original = printer.handle

    def on_event(ev: dict) -> None:
        if ev.get("type") == "log":  # total steps are known only once the trainer starts
            printer.total_steps = run.read_status().get("total_steps") or printer.total_steps
        original(ev)

    state = execute(run, plan, resume=resume, on_event=on_event)
    printer.close()
    return 0 if state in ("finished", "stopped") else 1


if __name__ == "__main__":
    sys.exit(main())
