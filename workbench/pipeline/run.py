"""One run from plan to report: plan -> train -> evaluate -> report.

This floor sits above `workbench.train` and `workbench.evaluate` and is the only place that
uses both: the training recipe (train/runner.py) knows nothing of evaluation, and the
evaluation knows nothing of how a model was trained. The detached worker
(`workbench.pipeline.worker`) and every rank of a torchrun launch (`workbench.pipeline.launch`)
run a run through `run_pipeline`.
"""

from __future__ import annotations

from typing import Callable

from workbench.rundir import RunDir
from workbench.train.plan import Plan
from workbench.train.ranks import current_launch, is_distributed, is_main


def run_pipeline(run: RunDir, plan: Plan, resume: bool = False,
                 on_event: Callable[[dict], None] = lambda ev: None,
                 from_checkpoint: str | None = None, hangup=None) -> str:
    """Train (or resume), then evaluate what training changed. Returns the final state."""
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
                   after_training=evaluate_run)


def evaluate_run(model, plan: Plan, run: RunDir, on_event) -> None:
    if runs_evaluation(run, on_event):  # under torchrun: rank 0 of a DDP run only
        _evaluate(model, plan, run, on_event)


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


def _evaluate(model, plan: Plan, run: RunDir, on_event) -> None:
    """Every run ends with evidence of what training changed: base, few-shot and fine-tuned
    on the test split and the prompt suite, in report.md / report.json. A failure here never
    fails the run (`workbench eval RUN` retries it). It takes minutes on a CPU, so its
    eval_progress events go to the display like the training's own; the run is marked
    finished right after, and the report says so already."""
    if not plan.profile.eval.after_training:
        on_event(run.append_event("status", state="running", message=(
            "evaluation after training skipped (eval.after_training = false); "
            f"`workbench eval {run.name}` runs it")))
        return
    from workbench.train.diskspace import REPORT_BYTES, is_disk_full, writing

    try:
        from workbench.evaluate.evaluation import evaluate_after_training
        from workbench.evaluate.report import verdict
        from workbench.evaluate.suite import summary_line

        with writing("the evaluation report", need=REPORT_BYTES):
            result = evaluate_after_training(model, plan, run, on_event=on_event,
                                             final_state="finished")
    except Exception as exc:
        if is_disk_full(exc, run.path):
            raise  # a full disk is the run's failure, with its own message (execute)
        on_event(run.append_event("status", state="running",
                                  message=f"evaluation skipped: {type(exc).__name__}: {exc}"))
        return
    if "suite" in result:
        on_event(run.append_event("status", state="running",
                                  message=summary_line(result["suite"]["summary"])))
    on_event(run.append_event("status", state="running", message=verdict(result)))
