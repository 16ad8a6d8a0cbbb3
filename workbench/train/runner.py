"""The training recipe, top to bottom: model -> adapters -> trainer -> train -> adapter.

`execute` owns a run folder for the life of one process. It turns every ending into a
final status a person can act on: finished, stopped (with a checkpoint to resume from),
or failed (with the reason and a hint). Nothing here is imported until a run starts.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
import traceback
from typing import Callable

from workbench.train.plan import Plan, RunError
from workbench.quiet import quiet_libraries
from workbench.rundir import RunDir, active_seconds, iso

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def load_model(plan: Plan):
    import torch
    from transformers import AutoModelForCausalLM

    p = plan.profile
    kernels = plan.kernel_choice()  # attention and Hub kernels for this device
    kwargs = dict(
        revision=p.model.revision,
        trust_remote_code=p.model.trust_remote_code,
        attn_implementation=kernels.attn_implementation,
        use_safetensors=True,  # never unpickle .bin weights from who knows where
        dtype=getattr(torch, DTYPES[plan.precision]),
        **kernels.load_kwargs,
    )
    if p.lora.method == "qlora":
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if plan.precision == "bf16" else torch.float16
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute, bnb_4bit_quant_storage=compute)
        kwargs["device_map"] = {"": 0}
    # Under torchrun each rank loads to its own device, never device_map="auto" (train/ranks.py).
    from workbench.train.ranks import adjust_load_kwargs

    kwargs = adjust_load_kwargs(kwargs, plan)
    try:
        model = AutoModelForCausalLM.from_pretrained(p.model.name_or_path, **kwargs)
    except OSError as exc:
        if "safetensors" in str(exc).lower():
            raise RunError(f"{p.model.name_or_path} has no safetensors weights",
                           hint="workbench only loads safetensors (pickled .bin files can run "
                                "code); convert the checkpoint to safetensors first") from exc
        raise
    model.config.use_cache = False  # the KV cache is useless in training and costs memory
    if p.lora.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=plan.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def add_adapters(model, plan: Plan):
    if plan.start_adapter:
        return _continue_adapter(model, plan)
    # rsLoRA, the adapter's init (PiSSA, OLoRA, LoftQ...) and trained embeddings: lora_setup.py
    from workbench.train.lora_setup import add_fresh_adapter

    model = add_fresh_adapter(model, plan)
    if plan.gradient_checkpointing:
        # With frozen embeddings no input requires grad, and checkpointed blocks would
        # then produce no gradient for the adapters inside them.
        model.enable_input_require_grads()
    return model


def save_adapter(trainer, plan: Plan, run: RunDir) -> str:
    from workbench.train.ranks import is_distributed, save_adapter_distributed

    if is_distributed():  # every rank takes part (FSDP / ZeRO-3 gather); rank 0 writes
        return save_adapter_distributed(trainer, plan, run)
    from workbench.train.checkpoints import write_manifest
    from workbench.train.diskspace import folder_bytes, writing
    from workbench.train.lora_setup import save_adapter_files, use_saved_adapter

    last = run.last_checkpoint()
    need = folder_bytes(last / "adapter_model.safetensors") if last else None
    with writing("the adapter", need=need):
        staging = run.path / ".adapter.partial"
        shutil.rmtree(staging, ignore_errors=True)
        # Only the trained adapter: not trl's frozen reference copy ("ref") beside it.
        # Converted to a plain LoRA of the original base for PiSSA / OLoRA / LoftQ starts.
        save_adapter_files(trainer.model, staging)
        plan.tokenizer.save_pretrained(str(staging))
        write_manifest(staging)  # export and eval check it before they load the adapter
        if run.adapter_dir.exists():
            shutil.rmtree(run.adapter_dir)
        os.replace(staging, run.adapter_dir)
    use_saved_adapter(trainer.model, run.adapter_dir)  # evaluation sees what was saved
    return str(run.adapter_dir)


def _continue_adapter(model, plan: Plan):
    """Train on from an earlier run's adapter (SFT, then DPO). trl's DPO / KTO trainers then
    keep a frozen copy of it as the reference (adapter "ref", LoRA-sized), so the reference is
    that starting model, not the bare base."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(model, plan.start_adapter, is_trainable=True)
    if plan.gradient_checkpointing:
        model.enable_input_require_grads()
    return model


OOM_HINT = ("lower train.batch_size (raise train.grad_accum to keep the effective batch), "
            "lower train.max_seq_len, turn on train.gradient_checkpointing, or use "
            "lora.method = \"qlora\"; `workbench estimate PROFILE` shows where memory goes")
NAN_HINT = ("lower train.learning_rate (e.g. by 10x), keep train.max_grad_norm around 0.3-1.0, "
            "and prefer bf16 over fp16 when the GPU supports it")
HANGUP_NOTE = ("the terminal went away (SIGHUP): the run goes on, its output now only in "
               "{log}; follow it with `workbench attach {name}`, stop it with `workbench stop {name}`")


def execute(run: RunDir, plan: Plan, resume: bool = False,
            on_event: Callable[[dict], None] = lambda ev: None,
            from_checkpoint: str | None = None, hangup=None,
            extra_callbacks: Callable | None = None,
            after_training: Callable | None = None, stop=None) -> str:
    """Train in this process. Returns the final state. `from_checkpoint` names the
    checkpoint to resume from (else the newest intact one); `hangup` is the SIGHUP watcher
    of a foreground run (console.Hangup); `extra_callbacks(recorder)` returns more
    TrainerCallbacks for the run (the pipeline's: time the evaluation after the first step),
    given the run's RunRecorder (its stop flag, its clocks), and `after_training(...)` runs
    once the adapter is saved, before the run is marked finished (the pipeline's evaluation:
    training never calls up into evaluate itself); given the stop flag, it returns a message
    when a stop cut it short, and the run then ends `stopped` with its adapter kept. `stop` is
    the flag a stop asked for while the process started is already in (control.StopRequest)."""
    quiet_libraries()
    import torch
    from transformers import EarlyStoppingCallback, set_seed
    from transformers.trainer_callback import PrinterCallback

    from workbench.train.checkpoints import CheckpointError, choose_for_resume
    from workbench.train.diskspace import Reserve, checkpoint_bytes, clean_partials
    from workbench.train.faults import classify
    from workbench.train.plan import NonFiniteLoss
    from workbench.train.trainer import RunRecorder, StopFlag

    stop = stop if stop is not None else StopFlag()

    def emit(type_: str, **fields) -> None:
        """An event for the record and the screen. When the record cannot be written (the
        disk is full) the person still sees it."""
        try:
            event = run.append_event(type_, **fields)
        except OSError:
            event = {"type": type_, "time": round(time.time(), 3), **fields}
        on_event(event)

    training = []  # set once the trainer runs: before that there is no step to checkpoint

    def on_signal(signum, frame):
        stop.request()
        if stop.signals > 1:  # a second Ctrl-C means "now", checkpoint or not
            raise KeyboardInterrupt
        again = " (press Ctrl-C again to quit at once)" if signum == signal.SIGINT else ""
        what = "saving a checkpoint, then stopping" if training else "stopping before training begins"
        emit("status", state="stopping", message=f"{signal.Signals(signum).name}: {what}{again}")

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    policy = getattr(plan.profile.train, "on_hangup", "continue")

    def on_hangup() -> None:
        # Runs in the signal handler: the printer has already pointed output at stdout.log.
        if policy == "stop":
            stop.request()
            emit("status", state="stopping", message="the terminal went away (SIGHUP) and "
                 "train.on_hangup = \"stop\": saving a checkpoint, then stopping")
        elif hangup is None or hangup.count == 1:
            emit("status", state="running",
                 message=HANGUP_NOTE.format(log=run.log_path, name=run.name))

    if hangup is not None:
        hangup.listener = on_hangup
        if hangup.happened:  # while the model was being planned or loaded
            on_hangup()
    # A little space kept back, given up when the disk fills, so the final status still fits.
    reserve = Reserve(run.path)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 writes the status
        reserve.take()
    estimate_bytes: list[int] = []

    def finish(state: str, message: str, **extra) -> str:
        try:
            # The run's own time, recorded once as each session ends: what `runs compare`
            # and sweeps cost it at, whatever later commands append (rundir.active_seconds).
            now = time.time()
            spent = active_seconds(run.read_events()[0], live_until=now)
            run.write_status(state=state, message=message, ended_at=iso(now),
                             active_seconds=round(spent, 1) if spent is not None else None,
                             active_until=iso(now), **extra)
        except OSError as exc:  # nothing more to free: the terminal still says it
            on_event({"type": "error", "kind": "disk", "message": f"could not write "
                      f"{run.status_path}: {exc.strerror or exc}", "hint": ""})
        emit("status", state=state, message=message)
        return state

    def fail(kind: str, message: str, hint: str = "", **extra) -> str:
        emit("error", kind=kind, message=message, hint=hint)
        return finish("failed", message, hint=hint, **extra)

    def log_traceback() -> None:
        try:
            with open(run.log_path, "a", encoding="utf-8") as fh:
                traceback.print_exc(file=fh)
        except OSError:
            pass

    if "tensorboard" in plan.profile.train.report_to:
        # Keep TensorBoard files in the run folder rather than inside checkpoints/.
        os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(run.path / "tensorboard"))
    started = time.time()
    checkpoint = None
    recorder = trainer = None
    try:
        status = run.read_status()
        run.write_status(state="running", pid=os.getpid(),
                         started_at=status.get("started_at") or iso(started),
                         ended_at=None, message=None, hint=None)
        if resume:
            removed = run.remove_partial_checkpoints()
            choice = choose_for_resume(run, from_checkpoint)
            checkpoint = str(choice.path) if choice.path else None
            if removed:
                choice.notes[-1] += f" (removed {len(removed)} partial checkpoint(s))"
            for note in choice.notes:
                emit("status", state="running", message=note)
        else:
            emit("status", state="running", message="loading model")

        if not resume:
            _record_estimate(run, plan, on_event)
        if stop.is_set():  # asked while the process started: no model to load
            return finish("stopped", "stopped before training began; nothing to resume from"
                          if not checkpoint else f"stopped before training began; resume "
                          f"continues from {os.path.basename(checkpoint)}")
        set_seed(plan.profile.train.seed)
        model = add_adapters(load_model(plan), plan)
        trainable, total = model.get_nb_trainable_parameters()
        estimate_bytes.append(checkpoint_bytes(trainable))
        run.write_status(trainable_params=trainable, total_params=total, device=plan.device,
                         checkpoint_bytes_estimate=estimate_bytes[0])
        if stop.is_set():
            return finish("stopped", "stopped before training began; nothing to resume from"
                          if not checkpoint else f"stopped before training began; resume "
                          f"continues from {os.path.basename(checkpoint)}")

        # Said at each phase that can take seconds, so a run never sits at "loading model".
        stream = getattr(plan, "stream", None)
        if stream is not None:  # data.streaming: rows are read as training goes
            if checkpoint is not None:
                at = stream.resume_from(checkpoint)
                emit("status", state="running", message=f"resuming the stream at {at.describe()} "
                     f"({at.rows} training rows trained before; the rows before it are read "
                     "and skipped, not rendered)")
            emit("status", state="running", message="building the trainer (streaming: rows are "
                 "read, rendered and tokenized as training reaches them)")
        else:
            emit("status", state="running", message=f"building the trainer "
                 f"({len(plan.train_rows)} training rows into its dataset)")
        recorder = RunRecorder(run, stop, on_event=on_event, device=plan.device,
                               signals=plan.method.signals)
        callbacks = [recorder]
        if plan.profile.train.early_stopping_patience and plan.evaluates:
            callbacks.append(EarlyStoppingCallback(plan.profile.train.early_stopping_patience))
        if extra_callbacks is not None:
            callbacks += extra_callbacks(recorder)
        if plan.device == "cpu":  # every method's loss goes through trl's fused LM head
            from workbench.train.cpu_lm_head import size_for_cpu

            with open(run.log_path, "a", encoding="utf-8") as fh:
                fh.write(size_for_cpu() + "\n")
        if stream is not None:  # the SFT trainer on an iterable dataset (train/streaming.py)
            from workbench.train.streaming_trainer import build_streaming_trainer

            trainer = build_streaming_trainer(model, plan, run, callbacks)
        else:
            trainer = plan.method.build_trainer(model, plan, run, callbacks)
        trainer.remove_callback(PrinterCallback)  # it prints raw log dicts; we print events
        emit("status", state="running", message="training: the first step"
             if checkpoint is None else f"training: loading {os.path.basename(checkpoint)}")
        training.append(True)
        trainer.train(resume_from_checkpoint=checkpoint)

        state = trainer.state
        peak = torch.cuda.max_memory_reserved() if plan.device == "cuda" else None
        if peak is not None:
            _record_measured_peak(run, peak, torch.cuda.max_memory_allocated(), on_event)
        extra = dict(step=state.global_step, total_steps=state.max_steps, peak_gpu_mem_bytes=peak,
                     train_seconds=round(time.time() - started, 1))
        if stop.is_set():
            saved = run.checkpoints_dir / f"checkpoint-{state.global_step}"
            last = saved if saved.is_dir() else run.last_checkpoint()
            return finish("stopped", f"stopped at step {state.global_step}; checkpoint "
                          f"{last.name if last else 'none'}; continue with `workbench resume {run.name}`",
                          **extra)
        adapter = save_adapter(trainer, plan, run)
        early = state.global_step < state.max_steps
        message = (f"adapter saved to {adapter}" + (" (early stopping: eval loss stopped improving)"
                                                    if early else ""))
        if after_training is not None:
            cut_short = after_training(trainer.model, plan, run, on_event, stop)
            if cut_short:  # a stop during it: the adapter is kept, the run ends stopped
                return finish("stopped", cut_short, adapter=adapter, **extra)
        return finish("finished", message, adapter=adapter, **extra)
    except NonFiniteLoss as exc:
        return fail("nan", str(exc), NAN_HINT)
    except torch.OutOfMemoryError as exc:
        return fail("oom", f"the GPU ran out of memory: {str(exc).splitlines()[0]}", OOM_HINT)
    except RunError as exc:
        return fail(exc.kind, exc.message, exc.hint)
    except CheckpointError as exc:
        return fail(exc.kind, exc.message, exc.hint)
    except KeyboardInterrupt:
        return finish("stopped", "interrupted twice: stopped without a new checkpoint; "
                                 "resume continues from the last complete one")
    except Exception as exc:  # noqa: BLE001 - every ending becomes a status a person can act on
        # Loading a checkpoint happens inside train(), before the first step ends.
        loading = checkpoint if recorder is None or not recorder.steps_done else None
        fault = classify(exc, run, loading_checkpoint=loading,
                         estimate=estimate_bytes[0] if estimate_bytes else None)
        if fault is not None and fault.kind == "disk":
            # Make room for the last words: the reserve, and half-written files (never used).
            reserve.release()
            clean_partials(run)
        log_traceback()
        # The step reached, not the last one status.json had time to record.
        reached = {"step": trainer.state.global_step} if trainer is not None else {}
        if fault is not None:
            return fail(fault.kind, fault.message, fault.hint, **reached)
        return fail("crash", f"{type(exc).__name__}: {exc}",
                    f"the traceback is in {run.log_path}; please report it if it looks like a bug",
                    **reached)
    finally:
        reserve.release()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if hangup is not None:
            hangup.listener = None


def _record_estimate(run: RunDir, plan: Plan, on_event) -> None:
    """The memory model's answer for exactly this run (resolved precision and checkpointing).
    Informational: a model the estimator does not know never stops a run."""
    from dataclasses import replace

    try:
        from workbench.estimate.config import load_model_config
        from workbench.estimate.memory import EstimateSettings, estimate

        config, _ = load_model_config(plan.profile.model.name_or_path, plan.profile.model.revision)
        settings = replace(EstimateSettings.from_profile(plan.profile), precision=plan.precision,
                           grad_ckpt=plan.gradient_checkpointing)
        est = estimate(config, settings)
    except Exception as exc:  # noqa: BLE001 - an estimate is advice, never a reason to fail
        with open(run.log_path, "a", encoding="utf-8") as fh:
            fh.write(f"memory estimate unavailable: {type(exc).__name__}: {exc}\n")
        return
    run.write_status(estimated_peak_bytes=est.peak_bytes, estimated_reserved_bytes=est.reserved_bytes)
    on_event(run.append_event("estimate", peak_bytes=est.peak_bytes,
                              reserved_bytes=est.reserved_bytes, breakdown=dict(est.breakdown),
                              trainable_params=est.trainable_params))


def _record_measured_peak(run: RunDir, reserved: int, allocated: int, on_event) -> None:
    estimated = run.read_status().get("estimated_reserved_bytes")
    error = round((estimated - reserved) / reserved * 100, 1) if estimated and reserved else None
    on_event(run.append_event("memory", measured_peak_reserved_bytes=reserved,
                              measured_peak_allocated_bytes=allocated,
                              estimated_reserved_bytes=estimated, error_pct=error))
