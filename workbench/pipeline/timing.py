"""The evaluation's cost, timed after training's first optimizer step (issue 25).

The cost of the evaluation after training is stated while training runs, minutes or hours
before the evaluation is paid for, so a person can still cap it (`eval.time_budget_s`) or skip
it (`eval.after_training = false`, or stop and `workbench eval` later). It was timed before
training began, on the loaded model: nothing a person waited for, yet the first optimizer
step waited for it (more than five minutes at "loading model" for SmolLM2-135M on 2 cores).
Timing it from the evaluation's own first calls would state it only once it is being paid
for. So it is timed right after the first step's log line: training is seen to work first, and
the stated cost comes a few seconds later (workbench/evaluate/cost.py: small probes).

The probes generate on the model being trained, between two optimizer steps, and leave
training exactly as it was: eval mode and the KV cache only while they run (inference_ready
puts back train mode and `config.use_cache`), no gradients (no_grad), greedy decoding (no
random numbers drawn), and the adapter that trains still the active one. The step after them
computes what it would have computed without them (tests/test_eval_timing.py compares the
loss curves). Their seconds are left out of the ETA and tokens/s (RunRecorder.leave_out).

Main process only: under torchrun rank 0 evaluates (a DDP replica), and the other ranks wait
for it at the next step's all-reduce. A sharded model (FSDP, ZeRO-3) is never evaluated after
training (pipeline/run.py), so it is not timed either: one rank alone cannot run it.
"""

from __future__ import annotations

import time

from transformers import TrainerCallback

from workbench.evaluate.cost import announce
from workbench.rundir import RunDir
from workbench.train.plan import Plan
from workbench.train.ranks import current_launch, is_distributed, is_main


def times_evaluation(plan: Plan) -> bool:
    """Whether this process times the evaluation: the one that will run it."""
    if not plan.profile.eval.after_training:
        return False
    launch = current_launch()
    if not launch or not is_distributed():
        return True
    return is_main() and launch["strategy"] == "ddp"


class EvaluationTiming(TrainerCallback):
    """Times the evaluation's cost once, after the first optimizer step this process trains:
    at that step's log (`logging_first_step`), else at the next step's beginning, else at the
    end of training; never when a stop was asked for first."""

    def __init__(self, plan: Plan, run: RunDir, on_event, recorder):
        self.plan = plan
        self.run = run
        self.on_event = on_event
        self.recorder = recorder  # its stop flag, and its clocks to leave the probes out of
        self.due = False
        self.done = not times_evaluation(plan)

    def on_step_end(self, args, state, control, **kw):
        self.due = not self.done

    def on_log(self, args, state, control, logs=None, model=None, **kw):
        if "loss" in (logs or {}):  # the training's own log line is out first
            self._time(model, control)

    def on_step_begin(self, args, state, control, model=None, **kw):
        self._time(model, control)

    def on_train_end(self, args, state, control, model=None, **kw):
        self._time(model, control)

    def _time(self, model, control) -> None:
        if not self.due or self.done:
            return
        self.due, self.done = False, True
        stop = self.recorder.stop
        if stop.is_set() or model is None:
            return
        started = time.time()
        announce(model, self.plan, self.run, self.on_event, should_stop=stop.is_set)
        self.recorder.leave_out(time.time() - started)
        if stop.is_set() and not is_distributed():
            # Asked to stop while timing: stop at this step, with its checkpoint, as the
            # recorder does at a step's end. (Under torchrun the ranks agree on stopping at
            # the next step's end instead: rank 0 alone must not save.)
            control.should_save = True
            control.should_training_stop = True
