"""The sweep loop: start trials as their own processes, watch their events, prune, record.

One trial at a time by default; with `--parallel N`, one per GPU (CUDA_VISIBLE_DEVICES). The
Optuna study (SQLite in the sweep folder) samples the configurations of `--trials N` sweeps
and holds every trial's intermediate eval losses for the median pruner; a grid's points are
enqueued into it, so a grid is pruned the same way. trials.json, not the study, is the record
of what ran: a finished, failed or pruned trial is never started again, whatever happened to
the sweep process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from workbench.sweep.definition import SweepDefinition, overrides_for, short_label
from workbench.sweep.folder import DONE_TRIAL_STATES, SweepDir
from workbench.rundir import RunDir, iso, pid_alive, write_json_atomic

POLL_S = 0.2
# The median pruner compares a trial with the others at the same step; with fewer finished
# trials than this the median means little, so nothing is pruned yet.
PRUNER_STARTUP_TRIALS = 2


class SweepError(Exception):
    """Something a person can fix (a sweep already running, nothing to resume...)."""


def _quiet_optuna():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def _study(sweep: SweepDir, definition: SweepDefinition, create: bool):
    optuna = _quiet_optuna()
    # The seed makes `--trials N` sampling repeatable; the grid needs no sampler of its own
    # (its points are enqueued), the TPE sampler only proposes values for ranges.
    sampler = optuna.samplers.TPESampler(seed=int(sweep.read_definition().get("seed", 42)))
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=0)
              if definition.prune else optuna.pruners.NopPruner())
    if create:
        return optuna.create_study(storage=sweep.study_url, study_name=sweep.name,
                                   direction="minimize", sampler=sampler, pruner=pruner)
    return optuna.load_study(storage=sweep.study_url, study_name=sweep.name, sampler=sampler,
                             pruner=pruner)


def create_sweep(profile, definition: SweepDefinition, base_overrides: list[str],
                 runs_dir: Path, sweeps_dir: Path, fit_lines: list[str]) -> SweepDir:
    from workbench.profile import save_profile

    sweep = SweepDir.create(sweeps_dir, profile.name)
    save_profile(profile, sweep.profile_path)
    write_json_atomic(sweep.definition_path, {
        "profile": profile.name, "source": profile.source, "created_at": iso(time.time()),
        "runs_dir": str(Path(runs_dir).resolve()), "base_overrides": base_overrides,
        "definition": definition.to_dict(), "seed": profile.train.seed, "memory_check": fit_lines})
    _study(sweep, definition, create=True)
    if definition.sampled:
        trials = [_new_trial(i, None, None) for i in range(definition.trials)]
    else:
        trials = [_new_trial(i, point, overrides_for(definition, point))
                  for i, point in enumerate(definition.grid_points())]
    sweep.write_trials(trials)
    sweep.write_status(state="starting", pid=os.getpid(), created_at=iso(time.time()))
    return sweep


def _new_trial(index: int, params: dict | None, overrides: list[str] | None) -> dict:
    return {"index": index, "params": params, "overrides": overrides,
            "label": short_label(overrides) if overrides else None, "state": "pending",
            "run": None, "reason": None, "optuna_number": None, "started_at": None,
            "ended_at": None, "process_s": 0.0}


def spawn_sweep_detached(sweep: SweepDir, resume: bool = False) -> int:
    cmd = [sys.executable, "-m", "workbench.sweep.engine", str(sweep.path)]
    if resume:
        cmd.append("--resume")
    log = open(sweep.log_path, "ab")
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
    finally:
        log.close()
    sweep.write_status(pid=proc.pid, state="starting")
    return proc.pid


def check_resumable(sweep: SweepDir) -> None:
    state = sweep.effective_state()
    if state in ("starting", "running"):
        raise SweepError(f"{sweep.name} is still running (pid {sweep.read_status().get('pid')}); "
                         f"follow it with `workbench sweep attach {sweep.name}`")
    done, total = sweep.progress()
    if state == "finished" and done == total:
        raise SweepError(f"{sweep.name} already finished ({total} trials); "
                         f"`workbench sweep report {sweep.name}` shows the answer")


def stop_sweep(sweep: SweepDir, wait_s: float = 600.0) -> str:
    """SIGTERM to the sweep: it asks the running trial(s) to checkpoint and stop, then stops.
    A sweep whose process is gone (kill -9) has its running trials stopped directly."""
    from workbench.train.control import ControlError, stop_run

    status = sweep.read_status()
    if sweep.effective_state(status) in ("starting", "running"):
        os.kill(status["pid"], signal.SIGTERM)
        deadline = time.time() + wait_s
        while time.time() < deadline and sweep.effective_state() in ("starting", "running"):
            time.sleep(0.25)
        return sweep.effective_state()
    stopped = 0
    for t in sweep.read_trials():
        if t.get("run") and t["state"] == "running":
            try:
                stop_run(RunDir(Path(t["run"])), wait_s=wait_s)
                stopped += 1
            except ControlError:
                pass
    if not stopped:
        raise SweepError(f"{sweep.name} is not running (state: {sweep.effective_state()})")
    return "stopped"


# ---- the loop ---------------------------------------------------------------------------

@dataclass
class Active:
    """A trial whose process runs now (or ran before a kill -9 and still does)."""
    index: int
    proc: subprocess.Popen | None  # None: adopted from a sweep process that died
    otrial: object  # optuna.trial.Trial
    launched: float
    run: RunDir | None = None
    offset: int = 0
    reported: set = field(default_factory=set)
    pruned: bool = False
    prune_reason: str = ""  # why the pruner stopped it, said once (sweep.log, trials.json)
    stopping: bool = False
    gpu: int | None = None

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        return self.run is not None and pid_alive(self.run.read_status().get("pid"))


def _trial_env(sweep: SweepDir, trial: dict, gpu: int | None) -> dict:
    """The sweep's name and the trial's parameters travel to the report_to trackers, so a
    sweep shows up grouped in TensorBoard, W&B and MLflow too."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", WORKBENCH_SWEEP=sweep.name,
               WORKBENCH_SWEEP_TRIAL=str(trial["index"]))
    env["WANDB_RUN_GROUP"] = sweep.name
    env["WANDB_JOB_TYPE"] = "sweep-trial"
    env["WANDB_NAME"] = f"{sweep.name}/trial-{trial['index']}"
    env["MLFLOW_EXPERIMENT_NAME"] = sweep.name
    env["MLFLOW_RUN_NAME"] = f"trial-{trial['index']}"
    env["MLFLOW_TAGS"] = json.dumps({"workbench.sweep": sweep.name, "workbench.trial": trial["index"],
                                     **{f"sweep.{k}": str(v) for k, v in (trial["params"] or {}).items()}})
    # One TensorBoard folder for the whole sweep: `tensorboard --logdir SWEEP/tensorboard`.
    env["TENSORBOARD_LOGGING_DIR"] = str(sweep.path / "tensorboard" / f"trial-{trial['index']}")
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    return env


def _popen(cmd: list[str], log_path: Path, env: dict) -> subprocess.Popen:
    log = open(log_path, "ab")
    try:
        # Its own session: Ctrl-C in the sweep's terminal reaches the sweep, which then stops
        # the trial through the run's stop signal (a checkpoint first), not a raw interrupt.
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True, env=env)
    finally:
        log.close()


class SweepRunner:
    def __init__(self, sweep: SweepDir, say: Callable[[str], None] = print):
        self.sweep = sweep
        raw = sweep.read_definition()
        self.definition = SweepDefinition.from_dict(raw["definition"])
        self.say = say
        self.stop_requested = False
        self.trials = sweep.read_trials()
        self.active: list[Active] = []

    # -- bookkeeping ------------------------------------------------------------------------
    def save(self) -> None:
        self.sweep.write_trials(self.trials)

    def _log(self, line: str) -> None:
        self.say(line)
        self.sweep.log(f"{iso(time.time())} {line}")

    def _ask(self, study, trial: dict):
        """An Optuna trial for this configuration: the grid point (or the values sampled
        before a restart) enqueued so the study records exactly what runs."""
        if trial["params"] is not None:
            study.enqueue_trial(trial["params"], skip_if_exists=False)
        ot = study.ask()
        params = {}
        for axis in self.definition.grid:
            params[axis.name] = ot.suggest_categorical(axis.name, axis.labels())
        for r in self.definition.ranges:
            if r.kind == "int":
                params[r.key] = ot.suggest_int(r.key, int(r.low), int(r.high))
            else:
                params[r.key] = ot.suggest_float(r.key, r.low, r.high, log=r.kind == "log")
        if trial["params"] is None:
            trial["params"] = params
            trial["overrides"] = overrides_for(self.definition, params)
            trial["label"] = short_label(trial["overrides"])
        trial["optuna_number"] = ot.number
        return ot

    def _retire_optuna(self, study, trial: dict) -> None:
        """A trial the last sweep process left RUNNING in the study gets a fresh study trial;
        the old one is marked failed (its intermediate values are reported again from the
        run's events)."""
        import optuna

        number = trial.get("optuna_number")
        if number is None:
            return
        frozen = study.get_trials(deepcopy=False)
        if number < len(frozen) and frozen[number].state == optuna.trial.TrialState.RUNNING:
            study.tell(number, state=optuna.trial.TrialState.FAIL)

    # -- starting trials ------------------------------------------------------------------------
    def _start(self, study, trial: dict, gpu: int | None) -> Active:
        started = time.time()
        handoff = self.sweep.handoff_dir / f"{trial['index']}.json"
        run = None
        if trial.get("run") is None and handoff.is_file():
            trial["run"] = json.loads(handoff.read_text()).get("run")  # died right after hand-off
        if trial.get("run"):
            run = RunDir(Path(trial["run"]))
        self._retire_optuna(study, trial)
        ot = self._ask(study, trial)
        env = _trial_env(self.sweep, trial, gpu)
        if run is not None and run.effective_state() in ("starting", "running"):
            act = Active(trial["index"], None, ot, started, run=run, gpu=gpu)
            self._log(f"trial {trial['index'] + 1}: {trial['label']}: still running in {run.name} "
                      "(left by the previous sweep process); following it")
        elif run is not None and run.effective_state() in ("finished", "failed"):
            act = Active(trial["index"], None, ot, started, run=run, gpu=gpu)  # ended meanwhile
        elif run is not None:
            self._log(f"trial {trial['index'] + 1}: {trial['label']}: resuming {run.name} "
                      f"from {run.last_checkpoint().name if run.last_checkpoint() else 'the start'}")
            proc = _popen([sys.executable, "-m", "workbench.pipeline.worker", str(run.path), "--resume"],
                          run.log_path, env)
            act = Active(trial["index"], proc, ot, started, run=run, gpu=gpu)
        else:
            handoff.unlink(missing_ok=True)
            self._log(f"trial {trial['index'] + 1}/{len(self.trials)}: {trial['label']}")
            proc = _popen([sys.executable, "-m", "workbench.sweep.trial", str(self.sweep.path),
                           str(trial["index"])], self.sweep.handoff_dir / f"{trial['index']}.log", env)
            act = Active(trial["index"], proc, ot, started, gpu=gpu)
        trial["state"] = "running"
        trial["reason"] = None
        trial["started_at"] = trial.get("started_at") or iso(started)
        self.save()
        return act

    # -- watching -------------------------------------------------------------------------------
    def _poll(self, act: Active) -> bool:
        """Read what the trial wrote since last time; True when its process has ended."""
        trial = self.trials[act.index]
        ended = not act.alive()
        if act.run is None:
            handoff = self.sweep.handoff_dir / f"{act.index}.json"
            if handoff.is_file():
                data = json.loads(handoff.read_text())
                if "run" in data:
                    act.run = RunDir(Path(data["run"]))
                    trial["run"] = data["run"]
                    self.save()
                elif ended:
                    return True
        if act.run is not None:
            events, act.offset = act.run.read_events(act.offset)
            for ev in events:
                if ev.get("type") == "eval" and isinstance(ev.get("eval_loss"), (int, float)):
                    self._report(act, ev["step"], ev["eval_loss"])
        if self.stop_requested and not act.stopping and not ended:
            self._stop(act, "the sweep is stopping")
        return ended

    def _report(self, act: Active, step: int, loss: float) -> None:
        if step in act.reported:
            return
        act.reported.add(step)
        act.otrial.report(loss, step)
        if (self.definition.prune and not act.pruned and _steps_left(act, step) != 0
                and act.otrial.should_prune()):
            act.pruned = True
            act.prune_reason = (f"pruned at step {step}: eval loss {loss:.4f} is worse than the "
                                "median of the other trials at this step")
            self._log(f"trial {act.index + 1}: {act.prune_reason}; stopping it at a checkpoint")
            self._stop(act, "pruned")

    def _stop(self, act: Active, why: str) -> None:
        from workbench.train.control import ControlError, stop_run

        act.stopping = True
        if act.run is None:  # still planning: nothing to checkpoint yet
            if act.proc is not None:
                act.proc.terminate()
            return
        try:
            stop_run(act.run, wait_s=0)
        except ControlError:
            if act.proc is not None and act.proc.poll() is None:
                act.proc.terminate()

    def _finish(self, study, act: Active) -> None:
        import optuna

        trial = self.trials[act.index]
        if act.proc is not None:
            act.proc.wait()
        trial["process_s"] = round(trial.get("process_s", 0.0) + time.time() - act.launched, 2)
        trial["ended_at"] = iso(time.time())
        number = act.otrial.number
        if act.run is None:
            handoff = self.sweep.handoff_dir / f"{act.index}.json"
            data = json.loads(handoff.read_text()) if handoff.is_file() else {}
            trial["state"] = "stopped" if self.stop_requested else "failed"
            trial["reason"] = data.get("error") or (
                f"the trial process ended (exit code {act.proc.returncode if act.proc else '?'}) "
                f"before creating its run; see {self.sweep.handoff_dir / f'{act.index}.log'}")
            study.tell(number, state=optuna.trial.TrialState.FAIL)
        else:
            events, act.offset = act.run.read_events(act.offset)
            for ev in events:
                if ev.get("type") == "eval" and isinstance(ev.get("eval_loss"), (int, float)):
                    act.reported.add(ev["step"])  # too late to prune; the value is recorded below
            status = act.run.read_status()
            state = act.run.effective_state(status)
            value = status.get("eval_loss") if status.get("eval_loss") is not None else status.get("loss")
            if state == "finished":
                trial["state"] = "finished"
                study.tell(number, value if value is not None else float("nan"))
            elif state == "stopped" and act.pruned:
                trial["state"] = "pruned"
                trial["reason"] = (f"{act.prune_reason or 'pruned'}; stopped at step "
                                   f"{status.get('step')} with a checkpoint")
                # The run itself reads "pruned" (`workbench runs`, the app, `runs compare`).
                try:
                    act.run.mark_pruned(self.sweep.name, act.prune_reason or "pruned by the sweep")
                except OSError:
                    pass  # a full disk: trials.json still says "pruned"
                study.tell(number, state=optuna.trial.TrialState.PRUNED)
            elif state == "stopped":
                trial["state"] = "stopped"
                trial["reason"] = status.get("message")
                # Left RUNNING in the study: resume gives it a fresh study trial.
            else:
                trial["state"] = "failed"
                kind = _last_error_kind(act.run)
                trial["reason"] = ((f"{kind}: " if kind else "") + (status.get("message") or
                                   f"the run's process died ({state})"))
                study.tell(number, state=optuna.trial.TrialState.FAIL)
        self.save()
        # A pruned trial's why was said when it was pruned: its end says only where it stopped.
        said = (f"stopped at step {act.run.read_status().get('step')} with a checkpoint"
                if trial["state"] == "pruned" else trial["reason"])
        self._log(f"trial {act.index + 1}: {trial['state']}"
                  + (f" ({said})" if said else "")
                  + (f"; eval loss {act.run.read_status().get('eval_loss'):.4f}"
                     if act.run is not None and trial["state"] == "finished"
                     and isinstance(act.run.read_status().get("eval_loss"), float) else ""))

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> str:
        definition = self.definition
        study = _study(self.sweep, definition, create=False)
        gpus = [None] if definition.parallel <= 1 else list(range(definition.parallel))
        free = list(gpus)

        def on_signal(signum, frame):
            if not self.stop_requested:
                self.stop_requested = True
                self._log(f"{signal.Signals(signum).name}: stopping the running trial(s) at a "
                          "checkpoint, then the sweep")

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        self.sweep.write_status(state="running", pid=os.getpid(), started_at=iso(time.time()),
                                ended_at=None)
        try:
            queue = [t for t in self.trials if t["state"] not in DONE_TRIAL_STATES]
            # Unfinished trials of an earlier process first: they hold checkpoints.
            queue.sort(key=lambda t: (t["state"] == "pending", t["index"]))
            while queue or self.active:
                while queue and free and not self.stop_requested:
                    self.active.append(self._start(study, queue.pop(0), free.pop(0)))
                time.sleep(POLL_S)
                for act in list(self.active):
                    if self._poll(act):
                        self._finish(study, act)
                        self.active.remove(act)
                        free.append(act.gpu)
                if self.stop_requested and not self.active:
                    break
            state = "stopped" if self.stop_requested else "finished"
            self.sweep.write_status(state=state, ended_at=iso(time.time()))
            return state
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _steps_left(act: Active, step: int) -> int | None:
    """Optimizer steps the trial still has to run (None: not known yet). A trial with none
    left is never pruned: stopping it then saves nothing and throws away its evaluation and
    its rank (its eval loss at the last step may well beat a ranked trial's)."""
    if act.run is None:
        return None
    status = act.run.read_status()
    total = status.get("total_steps")
    if not isinstance(total, int) or total <= 0:
        return None
    return max(total - max(step, status.get("step") or 0), 0)


def _last_error_kind(run: RunDir) -> str:
    events, _ = run.read_events()
    kinds = [e.get("kind") for e in events if e.get("type") == "error"]
    return kinds[-1] if kinds else ""


def main(argv: list[str] | None = None) -> int:
    """`python -m workbench.sweep.engine SWEEP_DIR [--resume]`: a detached sweep."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m workbench.sweep.engine")
    parser.add_argument("sweep_dir")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    sweep = SweepDir(Path(args.sweep_dir).resolve())
    sweep.write_status(pid=os.getpid())
    # Its stdout is sweep.log already, where every line is written: print nothing twice.
    state = SweepRunner(sweep, say=lambda s: None).run()
    from workbench.sweep.report import write_sweep_report

    write_sweep_report(sweep)
    return 0 if state in ("finished", "stopped") else 1


if __name__ == "__main__":
    sys.exit(main())
