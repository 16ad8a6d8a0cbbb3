"""One run from plan to report: plan -> train -> evaluate -> report.

This floor sits above `workbench.train` and `workbench.evaluate` and is the only place that
uses both: the training recipe (train/runner.py) knows nothing of evaluation, and the
evaluation knows nothing of how a model was trained. The detached worker
(`workbench.pipeline.worker`) and every rank of a torchrun launch (`workbench.pipeline.launch`)
run a run through `run_pipeline`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable

from workbench.rundir import RunDir
from workbench.train.plan import Plan
from workbench.train.ranks import current_launch, is_distributed, is_main


def run_pipeline(run: RunDir, plan: Plan, resume: bool = False,
                 on_event: Callable[[dict], None] = lambda ev: None,
                 from_checkpoint: str | None = None, hangup=None, stop=None) -> str:
    """Train (or resume), then evaluate what training changed. Returns the final state.
    `stop` is the stop flag of the process (control.StartingStop's), if it made one: a stop
    asked for while the run started ends it before the model loads."""
    try:  # seconds on a small machine (bench/time_to_first_step.md): say so, not nothing
        on_event(run.append_event("status", state="starting",
                                  message="loading the training libraries (torch, transformers, trl)"))
    except OSError:
        pass  # a full disk is met, and reported, by the run itself
    from workbench.train.runner import execute

    def timing(recorder) -> list:
        """The evaluation's cost, timed after the first optimizer step (pipeline/timing.py);
        a resumed run stated it already."""
        from workbench.pipeline.timing import EvaluationTiming

        return [EvaluationTiming(plan, run, on_event, recorder)]

    return execute(run, plan, resume=resume, on_event=on_event, from_checkpoint=from_checkpoint,
                   hangup=hangup, extra_callbacks=None if resume else timing,
                   after_training=evaluate_run, stop=stop)


def evaluate_run(model, plan: Plan, run: RunDir, on_event, stop=None) -> str | None:
    """The evaluation after training; a message when a stop cut it short (the run then ends
    `stopped`, its adapter kept), else None."""
    if runs_evaluation(run, on_event):  # under torchrun: rank 0 of a DDP run only
        return _evaluate(model, plan, run, on_event, stop)
    return None


def runs_evaluation(run: RunDir, on_event: Callable[[dict], None]) -> bool:
    """The evaluation after training generates on rank 0 alone: fine for a DDP replica,
    impossible for a sharded model (its weights live on every rank), which says so."""
    launch = current_launch()
    if not launch or not is_distributed():
        return True
    if not is_main():
        return False
    if launch["strategy"] == "ddp":
        return True
    on_event(run.append_event("status", state="running", message=(
        f"evaluation after training skipped: the {launch['strategy']} model is sharded over "
        f"the ranks; `workbench eval {run.name}` evaluates the saved adapter")))
    return False


def _evaluate(model, plan: Plan, run: RunDir, on_event, stop=None) -> str | None:
    """Every run ends with evidence of what training changed: base, few-shot and fine-tuned
    on the test split and the prompt suite, in report.md / report.json. A failure here never
    fails the run (`workbench eval RUN` retries it). It takes minutes on a CPU, so its
    eval_progress events go to the display like the training's own; the run is marked
    finished right after, and the report says so already.

    A stop (Ctrl-C, `workbench stop`, the app's `x`) during it ends it within seconds: the
    evaluation asks the stop flag after every generated token and perplexity batch. The
    adapter is already saved; status.json says `evaluation: "stopped"`, and the message says
    `workbench eval RUN` runs it later. Returns that message, else None."""
    if not plan.profile.eval.after_training:
        on_event(run.append_event("status", state="running", message=(
            "evaluation after training skipped (eval.after_training = false); "
            f"`workbench eval {run.name}` runs it")))
        return None
    from workbench.evaluate.errors import Stopped
    from workbench.train.diskspace import REPORT_BYTES, is_disk_full, writing

    stop = stop if stop is not None else _NoStop()
    if stop.is_set():  # asked while the adapter was being saved
        return _evaluation_stopped(run)
    run.write_status(evaluation="running")  # `workbench stop` says what a stop does now
    try:
        from workbench.evaluate.evaluation import evaluate_after_training
        from workbench.evaluate.report import verdict
        from workbench.evaluate.suite import summary_line

        with _stops_evaluation(run, on_event, stop), \
                writing("the evaluation report", need=REPORT_BYTES):
            result = evaluate_after_training(model, plan, run, on_event=on_event,
                                             final_state="finished", cancel=stop.is_set)
    except (Stopped, KeyboardInterrupt):  # KeyboardInterrupt: a second Ctrl-C, at once
        return _evaluation_stopped(run)
    except Exception as exc:
        if is_disk_full(exc, run.path):
            raise  # a full disk is the run's failure, with its own message (execute)
        run.write_status(evaluation="failed")
        on_event(run.append_event("status", state="running",
                                  message=f"evaluation skipped: {type(exc).__name__}: {exc}"))
        return None
    run.write_status(evaluation="finished")
    if "suite" in result:
        on_event(run.append_event("status", state="running",
                                  message=summary_line(result["suite"]["summary"])))
    on_event(run.append_event("status", state="running", message=verdict(result)))
    return None


class _NoStop:
    """The stop flag of a caller that has none (tests calling the evaluation directly)."""

    def is_set(self) -> bool:
        return False

    def request(self) -> None:
        pass


def _evaluation_stopped(run: RunDir) -> str:
    run.write_status(evaluation="stopped")
    return (f"stopped during the evaluation after training: the adapter is saved in "
            f"{run.adapter_dir}, no report was written; `workbench eval {run.name}` runs the "
            "evaluation later")


@contextlib.contextmanager
def _stops_evaluation(run: RunDir, on_event, stop):
    """While the evaluation runs, SIGINT / SIGTERM say what a stop now does (training's
    handler says "saving a checkpoint", which is over): set the flag the evaluation asks
    after every token; a second one raises KeyboardInterrupt at once. Main thread only
    (Python's rule for signal handlers); elsewhere training's handler still sets the flag."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum, frame) -> None:
        stop.request()
        if getattr(stop, "signals", 1) > 1:
            raise KeyboardInterrupt
        try:
            on_event(run.append_event("status", state="stopping", message=(
                f"{signal.Signals(signum).name}: stopping the evaluation after training (the "
                "adapter is saved)")))
        except OSError:
            pass  # a full disk: the final status still says it

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
