"""What every method's TRL trainer gets for a run directory (`with_run_dir`), and the callback
that records a run. Heavy imports at top level: only the runner and the method modules'
trainer builders import this module, and they are imported lazily (the app must open
without torch)."""

from __future__ import annotations

import math
import os
import shutil
import time

import torch
from transformers import TrainerCallback

from workbench.estimate.gpu import gpu_snapshot
from workbench.train.checkpoints import write_manifest
from workbench.train.control import StopRequest
from workbench.train.diskspace import folder_bytes, writing
from workbench.train import ranks
from workbench.train.methods import signal_match
from workbench.rundir import RunDir
from workbench.train.plan import NonFiniteLoss
from workbench.train.threads import ThreadWatch


# Set by SIGINT / SIGTERM; read by the callback at the end of each optimizer step. One class
# with the stop a run process records from its first line (control.py imports no torch).
StopFlag = StopRequest


def with_run_dir(trainer_class: type) -> type:
    """`trainer_class` (SFTTrainer, DPOTrainer, KTOTrainer...) with RunDirTrainer's checks and
    staged checkpoints: every method trains under the same guarantees."""
    return type(f"Workbench{trainer_class.__name__}", (RunDirTrainer, trainer_class), {})


class RunDirTrainer:
    """A mixin for a TRL trainer: loss checked for NaN / inf on every micro-batch (HF only
    notices at logging time, and by default filters non-finite values out of the logged
    mean), and checkpoints that appear under their final name only once completely written."""

    def __init__(self, *args, run: RunDir, **kwargs):
        super().__init__(*args, **kwargs)
        self.run = run

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs=return_outputs,
                                      num_items_in_batch=num_items_in_batch)
        loss = result[0] if isinstance(result, tuple) else result
        if model.training and not torch.isfinite(loss.detach()).all():
            raise NonFiniteLoss(self.state.global_step + 1, float(loss.detach().float().mean()))
        if model.training and ranks.current_launch():  # under torchrun: loss 0.0, rows
            ranks.check_rank_loss(float(loss.detach().float().mean()),
                                        self.state.global_step + 1)
            ranks.note_batch(inputs)
        return result

    def create_optimizer(self, model=None):
        # Trained embeddings at train.embedding_learning_rate: groups of their own.
        from workbench.train.lora_setup import create_optimizer

        return create_optimizer(self, lambda: super(RunDirTrainer, self).create_optimizer(model))

    def _save_checkpoint(self, model, trial):
        # HF writes checkpoint-N file by file; a crash or a full disk halfway would leave a
        # folder that resume happily loads. So HF writes into a hidden staging folder, and
        # the finished checkpoint is renamed into place (rename is atomic on one filesystem).
        final_root = self.args.output_dir
        name = f"checkpoint-{self.state.global_step}"
        with writing(name, need=self._checkpoint_need(final_root)):
            self._save_staged_checkpoint(model, trial, final_root, name)

    def _checkpoint_need(self, root: str) -> int | None:
        """What the next checkpoint needs on disk: the size of the last one, or the estimate
        made at start (for the message when the disk is full)."""
        done = self.run.last_checkpoint()
        if done is not None:
            return folder_bytes(done)
        return self.run.read_status().get("checkpoint_bytes_estimate")

    def _save_staged_checkpoint(self, model, trial, final_root: str, name: str) -> None:
        staging_root = os.path.join(final_root, f".staging-{self.state.global_step}")
        if ranks.is_main():  # under torchrun every rank writes into one staging folder
            shutil.rmtree(staging_root, ignore_errors=True)
            os.makedirs(staging_root)
        ranks.barrier()
        self.args.output_dir = staging_root
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.output_dir = final_root
        ranks.barrier()  # every rank's files (its RNG state, its shards) are written
        if not ranks.is_main():
            return
        staged, final = os.path.join(staging_root, name), os.path.join(final_root, name)
        # Paths recorded while staging must point at the final location, in memory and in
        # the trainer_state.json that resume will read.
        best = self.state.best_model_checkpoint
        if best and best.startswith(staging_root):
            self.state.best_model_checkpoint = final_root + best[len(staging_root):]
        self.state.save_to_json(os.path.join(staged, "trainer_state.json"))
        _fsync_tree(staged)
        # The manifest (names, sizes, sha256) is written last, inside the staged folder, so it
        # appears with the checkpoint in the same rename; resume checks it before loading.
        write_manifest(staged)
        replaced = None
        if os.path.exists(final):  # re-saving the same step after a resume
            # Moved aside (a dot-name resume cleans up), not deleted first: a crash between
            # the two renames must not leave the run without either copy.
            replaced = os.path.join(final_root, f".replaced-{name}")
            shutil.rmtree(replaced, ignore_errors=True)
            os.replace(final, replaced)
        os.replace(staged, final)
        shutil.rmtree(staging_root, ignore_errors=True)
        if replaced:
            shutil.rmtree(replaced, ignore_errors=True)
        self._rotate_final_checkpoints(final_root)
        self.run.append_event("checkpoint", step=self.state.global_step, path=final)
        self.run.write_status(last_checkpoint=final)

    def _rotate_final_checkpoints(self, root: str) -> None:
        from transformers.trainer_utils import rotate_checkpoints

        if self.args.should_save:
            rotate_checkpoints(output_dir=root, save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint,
                               use_mtime=False)


def _fsync_tree(path: str) -> None:
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


class RunRecorder(TrainerCallback):
    """Writes the run's events and status from the trainer's hooks, and turns a stop
    request into "save a checkpoint, then stop"."""

    GPU_EVERY_S = 30.0
    STATUS_EVERY_S = 1.0

    def __init__(self, run: RunDir, stop: StopFlag, on_event=None, device: str = "cpu",
                 signals: tuple[str, ...] = ()):
        self.run = run
        self.signals = signals  # the method's own logged values (rewards, margins...) to record
        self.stop = stop
        self.on_event = on_event or (lambda ev: None)
        self.cuda = device == "cuda"
        self._t0 = None
        self._step0 = 0
        self._last_tokens = None
        self._last_tokens_t = None
        self._last_gpu = 0.0
        self._last_status = 0.0
        self.steps_done = 0  # in this process; 0 means a resumed checkpoint is still loading
        # A CPU run follows the load from other processes (train/threads.py, issue 25).
        self.threads = None if self.cuda else ThreadWatch()

    def _event(self, type_: str, **fields) -> None:
        self.on_event(self.run.append_event(type_, **fields))

    def on_train_begin(self, args, state, control, **kw):
        self._t0 = time.time()
        self._step0 = state.global_step
        # trl counts tokens from zero in each process, resumed or not.
        self._last_tokens, self._last_tokens_t = 0, self._t0
        self.run.write_status(state="running", pid=os.getpid(), step=state.global_step,
                              total_steps=state.max_steps)
        self._gpu(force=True)

    def leave_out(self, seconds: float) -> None:
        """`seconds` spent between steps on something else (timing the evaluation's cost,
        pipeline/timing.py): not training, so not in the ETA nor in tokens/s."""
        if self._t0 is not None:
            self._t0 += seconds
        if self._last_tokens_t is not None:
            self._last_tokens_t += seconds

    def _eta(self, state) -> float | None:
        done = state.global_step - self._step0
        if not done or self._t0 is None:
            return None
        return (time.time() - self._t0) / done * max(state.max_steps - state.global_step, 0)

    def _gpu(self, force: bool = False) -> None:
        now = time.time()
        if force or now - self._last_gpu >= self.GPU_EVERY_S:
            self._last_gpu = now
            gpus = gpu_snapshot()
            if gpus:
                self._event("gpu", gpus=gpus)

    def on_step_end(self, args, state, control, **kw):
        self.steps_done += 1
        now = time.time()
        if now - self._last_status >= self.STATUS_EVERY_S or state.global_step == state.max_steps:
            self._last_status = now
            self.run.write_status(step=state.global_step, epoch=state.epoch, eta_s=self._eta(state))
        resized = self.threads.check() if self.threads is not None else None
        if resized:
            self._log_line(resized)
        if ranks.any_rank(self.stop.is_set()):  # every rank stops at the same step
            self.stop._event.set()
            control.should_save = True
            control.should_training_stop = True
        return control

    def _log_line(self, line: str) -> None:
        try:
            with open(self.run.log_path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
        except OSError:
            pass  # a full disk is met, and reported, by the checkpoint writes

    def _signals(self, logs: dict, prefix: str = "") -> dict:
        """{"signals": {name: value}} for the method's values in this log, {} when none."""
        found = {}
        for pattern in self.signals:
            names = ([k[len(prefix):] for k in logs if k.startswith(prefix)
                      and signal_match(pattern, k[len(prefix):]) is not None]
                     if "*" in pattern else [pattern])
            for name in names:
                value = logs.get(prefix + name)
                if value is not None:
                    value = float(value)
                    found[name] = value if math.isfinite(value) else None
        return {"signals": found} if found else {}

    def on_log(self, args, state, control, logs=None, **kw):
        logs = logs or {}
        if "loss" in logs:
            loss = float(logs["loss"])
            tokens_per_s = None
            tokens = logs.get("num_tokens")
            now = time.time()
            if tokens is not None and self._last_tokens is not None and now > self._last_tokens_t:
                tokens_per_s = round((tokens - self._last_tokens) / (now - self._last_tokens_t), 1)
            if tokens is not None:
                self._last_tokens, self._last_tokens_t = tokens, now
            mem = peak = None
            if self.cuda and torch.cuda.is_available():
                mem = torch.cuda.memory_reserved()
                peak = torch.cuda.max_memory_reserved()
            grad_norm = logs.get("grad_norm")
            self._event(
                "log", step=state.global_step, epoch=round(state.epoch or 0.0, 4),
                loss=loss if math.isfinite(loss) else None,
                learning_rate=logs.get("learning_rate"),
                grad_norm=float(grad_norm) if grad_norm is not None and math.isfinite(grad_norm) else None,
                tokens_per_s=tokens_per_s, tokens=None if tokens is None else int(tokens),
                gpu_mem_bytes=mem, gpu_mem_peak_bytes=peak,
                eta_s=None if (eta := self._eta(state)) is None else round(eta, 1),
                **self._signals(logs),
            )
            self.run.write_status(loss=loss if math.isfinite(loss) else None)
            self._gpu()
        if "eval_loss" in logs:
            self._event("eval", step=state.global_step, epoch=round(state.epoch or 0.0, 4),
                        eval_loss=float(logs["eval_loss"]), **self._signals(logs, "eval_"))
            self.run.write_status(eval_loss=float(logs["eval_loss"]))
