"""One trial's process: `python -m workbench.sweep.trial SWEEP_DIR INDEX`.

It plans the run exactly as `workbench run PROFILE --set ...` does (base profile + the trial's
overrides), creates an ordinary run folder, hands its path back to the sweep through
trials/<INDEX>.json, then trains in this process. A trial that cannot even be planned (a
data file gone, a model that does not load) hands back the error instead. Keeping the trial
in its own process means a crash, an OOM or a NaN ends the trial, never the sweep.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.sweep.trial")
    parser.add_argument("sweep_dir")
    parser.add_argument("index", type=int)
    args = parser.parse_args(argv)

    from workbench.profile import load_profile
    from workbench.sweep.folder import SweepDir
    from workbench.train.control import create_run
    from workbench.train.plan import plan_run
    from workbench.rundir import write_json_atomic
    from workbench.pipeline.worker import run_in_this_process

    sweep = SweepDir(Path(args.sweep_dir).resolve())
    trial = sweep.read_trials()[args.index]
    handoff = sweep.handoff_dir / f"{args.index}.json"
    try:
        profile = load_profile(sweep.profile_path, trial["overrides"])
        plan = plan_run(profile)
    except Exception as exc:  # noqa: BLE001 - reported to the sweep as this trial's reason
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        write_json_atomic(handoff, {"error": message, "hint": getattr(exc, "hint", "")})
        return 1
    run = create_run(plan, sweep.read_definition()["runs_dir"])
    write_json_atomic(handoff, {"run": str(run.path)})
    # From here on the trial's output belongs in its run folder, as a detached run's does.
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    log = os.open(run.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    return run_in_this_process(run, resume=False, plan=plan)


if __name__ == "__main__":
    sys.exit(main())
