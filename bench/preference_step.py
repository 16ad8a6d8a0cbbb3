"""Benchmark: is the workbench's DPO step as fast as TRL's DPOTrainer used directly?

    HF_HUB_OFFLINE=1 python bench/preference_step.py [--models tiny,smollm2-360m]
        [--steps 30] [--warmup 3] [--big-steps 2] [--big-warmup 1] [--repeats 5] [--big-repeats 3]
        [--arms ours,trl,ours-refcopy,trl-ids] [--big-arms ours,trl] [--threads 1] [--sequential]
        [--pairs 300] [--data translate|dpo_en] [--logging-steps 5] [--write bench/preference_step.md]

Target (the issue): tokens/s and peak memory of a DPO step no worse than 1.05x TRL's
`DPOTrainer` used directly, same model, same data, same settings. Exit status 1 when `ours`
misses it on a model.

The arms, each run in a fresh process:

- ours: a temporary profile (train.method = "dpo") planned by `plan_run`, a run folder made
  by `control.create_run`, the model from `runner.load_model` + `runner.add_adapters`, the
  trainer from `plan.method.build_trainer(model, plan, run, [RunRecorder, clock])` as
  `runner.execute` builds it (PrinterCallback removed): TRL's DPOTrainer under our
  RunDirTrainer mixin, fed the pairs our renderer tokenized;
- trl: `trl.DPOTrainer` + `DPOConfig` with the same hyperparameters, the same weights (read
  from the same folder) and a `peft.LoraConfig` passed as `peft_config`, given the same pairs
  as TRL's conversational dataset (prompt / chosen / rejected message lists), so it applies
  the chat template and tokenizes them itself. Bookkeeping options (tqdm, NaN filter, ...)
  keep TRL's defaults; the report lists every TrainingArguments field that differs;
- ours-refcopy: ours as it was before commit ff40e04: the frozen "ref" copy of the fresh adapter
  that trl adds to a PeftModel kept, every reference pass run through it (build_trainer now
  deletes it; this arm adds it back exactly as trl's DPOTrainer.__init__ does);
- trl-ids (optional): TRL used directly but fed our renderer's token ids (the same tokens as
  ours); ours-norec (optional): ours without the RunRecorder callback.

All arms of a repeat run at the same time, one thread each, released into `trainer.train()`
together at a barrier, so they share whatever else the cores are doing (`--sequential`: one
after the other). Measured per run: seconds per optimizer step in the steady state (the
intervals between consecutive `on_step_end`s after the warm-up steps: everything in the loop,
callbacks and logging included) by the wall clock, by the wall clock less the time spent
waiting for a core ("own time": the training loop's thread, /proc/thread-self/schedstat;
blocking I/O stays in it) and by
CPU time; tokens fed per second (non-pad tokens of the collated batch: prompt + chosen and
prompt + rejected, counted once although the reference pass reads them again) by own time;
the step-1 loss (ln 2 when the adapter starts at zero); the peak RSS during `trainer.train()`
above the RSS just before it (VmHWM reset through /proc/self/clear_refs). Compared: medians
of the paired ratios (run i of an arm against run i of trl).

The models: the bundled assets/tiny-model, and (when named) a random-init model of a shipped
architecture (assets/configs/NAME) with its vocabulary cut to the tiny tokenizer's, written
once to a temporary folder as safetensors so every arm loads it the same way.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "assets" / "tiny-model"
TRANSLATE = ROOT / "assets" / "demo" / "translate_en_fr_pairs.jsonl"
DPO_EN = ROOT.parent / "shared" / "data" / "dpo_en_demo.json"
TARGET = 1.05
LOADS: list[float] = []  # the 1-minute load average before each repeat
ARMS = ("ours", "trl", "ours-refcopy", "trl-ids", "ours-norec")

# One set of settings, written into our profile and passed to DPOConfig.
SETTINGS = dict(batch_size=4, grad_accum=1, learning_rate=5e-4, scheduler="constant_with_warmup",
                warmup_ratio=0.05, weight_decay=0.0, max_grad_norm=1.0, optimizer="adamw_torch",
                max_seq_len=128, seed=42, logging_steps=5, beta=0.1, loss="sigmoid",
                lora_r=16, lora_alpha=32, lora_dropout=0.05,
                targets=["q_proj", "k_proj", "v_proj", "o_proj"])


# ---------------------------------------------------------------------------------------------
# measuring, in the child process


def _rss_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+)", text).group(1))


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _thread_waited() -> float:
    """Seconds this thread has spent runnable but waiting for a core (Linux
    /proc/thread-self/schedstat, second field); 0.0 where there is none."""
    try:
        return int(Path("/proc/thread-self/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def _clock_callback():
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        """perf_counter at each optimizer step's end, and the logged losses."""

        def __init__(self):
            self.ends: list[float] = []
            self.cpu: list[float] = []
            self.waited: list[float] = []
            self.losses: dict[int, float] = {}

        def on_step_end(self, args, state, control, **kw):
            self.ends.append(time.perf_counter())
            self.cpu.append(time.process_time())
            self.waited.append(_thread_waited())  # the training loop's thread

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.losses[state.global_step] = float(logs["loss"])

    return StepClock()


def _count_tokens(trainer, fed: list, trained: list) -> None:
    """Wrap the trainer's collator: the non-pad tokens and completion tokens of each batch."""
    inner = trainer.data_collator

    def counting(examples):
        out = inner(examples)
        fed.append(int(out["attention_mask"].sum()))
        trained.append(int(out["completion_mask"].sum()))
        return out

    trainer.data_collator = counting


def _train_and_measure(trainer, clock, warmup: int, out: dict, barrier=None) -> dict:
    import gc

    import torch

    fed: list[int] = []
    trained: list[int] = []
    _count_tokens(trainer, fed, trained)
    if barrier is not None and barrier.barrier:
        _wait_at_barrier(barrier)
    gc.collect()
    resettable = _reset_peak()
    rss0 = _rss_kib("VmRSS")
    t0 = time.perf_counter()
    if getattr(barrier, "profile", None):  # --profile FILE: cProfile around train() only
        import cProfile

        with cProfile.Profile() as prof:
            trainer.train()
        prof.dump_stats(barrier.profile)
    else:
        trainer.train()
    wall = time.perf_counter() - t0
    peak = _rss_kib("VmHWM")
    ends = clock.ends
    steady = [b - a for a, b in zip(ends[warmup - 1:], ends[warmup:])] if warmup >= 1 else []
    cpu = [b - a for a, b in zip(clock.cpu[warmup - 1:], clock.cpu[warmup:])] if warmup >= 1 else []
    waited = [b - a for a, b in zip(clock.waited[warmup - 1:], clock.waited[warmup:])]
    own = [w - q for w, q in zip(steady, waited)]
    tokens = fed[warmup:len(ends)]
    out.update(
        steps=len(ends), warmup=warmup, step_s=steady, step_cpu_s=cpu, step_own_s=own,
        train_wall_s=wall, steady_s=sum(steady), steady_cpu_s=sum(cpu), steady_own_s=sum(own), steady_tokens=sum(tokens),
        tokens_per_step=fed[:len(ends)],
        trained_per_step=trained[:len(ends)], loss_step1=clock.losses.get(1),
        losses=clock.losses, peak_rss_delta_mib=(peak - rss0) / 1024 if resettable else None,
        rss_before_mib=rss0 / 1024, peak_rss_mib=peak / 1024, threads=torch.get_num_threads(),
        args={k: _jsonable(v) for k, v in trainer.args.to_dict().items()})
    return out


def _jsonable(v):
    try:
        json.dumps(v)
        return v
    except TypeError:
        return str(v)


def write_profile(folder: Path, model_dir: Path, data_file: Path, max_steps: int,
                  s: dict) -> Path:
    text = f"""name = "dpo-bench"
[model]
name_or_path = {json.dumps(str(model_dir))}
[data]
train = {json.dumps(str(data_file))}
validation_split = 0.0
[lora]
method = "lora"
r = {s['lora_r']}
alpha = {s['lora_alpha']}
dropout = {s['lora_dropout']}
target_modules = {json.dumps(s['targets'])}
[train]
method = "dpo"
max_steps = {max_steps}
batch_size = {s['batch_size']}
grad_accum = {s['grad_accum']}
learning_rate = {s['learning_rate']}
scheduler = "{s['scheduler']}"
warmup_ratio = {s['warmup_ratio']}
weight_decay = {s['weight_decay']}
max_grad_norm = {s['max_grad_norm']}
optimizer = "{s['optimizer']}"
logging_steps = {s['logging_steps']}
save_steps = 100000
max_seq_len = {s['max_seq_len']}
seed = {s['seed']}
device = "cpu"
precision = "fp32"
gradient_checkpointing = false
runs_dir = {json.dumps(str(folder / 'runs'))}
[preference]
beta = {s['beta']}
loss = "{s['loss']}"
[eval]
after_training = false
"""
    path = folder / "dpo-bench.toml"
    path.write_text(text)
    return path


def child_ours(a) -> dict:
    from transformers import set_seed
    from transformers.trainer_callback import PrinterCallback

    from workbench.profile import load_profile
    from workbench.quiet import quiet_libraries
    from workbench.train import runner
    from workbench.train.control import create_run
    from workbench.train.plan import plan_run
    from workbench.train.trainer import RunRecorder, StopFlag

    quiet_libraries()  # as runner.execute does
    s = json.loads(a.settings)
    folder = Path(a.tmp)
    profile = load_profile(write_profile(folder, Path(a.model_dir), Path(a.data_file),
                                         a.steps + a.warmup, s))
    plan = plan_run(profile)
    run = create_run(plan, runs_dir=folder / "runs")
    set_seed(profile.train.seed)
    model = runner.add_adapters(runner.load_model(plan), plan)
    clock = _clock_callback()
    if a.child in ("ours", "ours-refcopy"):
        recorder = RunRecorder(run, StopFlag(), device=plan.device, signals=plan.method.signals)
        spent = _time_bookkeeping(recorder, run)
        callbacks = [recorder, clock]
    else:  # "ours-norec": the same trainer without the RunRecorder (an ablation)
        spent, callbacks = {}, [clock]
    trainer = plan.method.build_trainer(model, plan, run, callbacks)
    trainer.remove_callback(PrinterCallback)
    adapters = list(trainer.model.peft_config)
    if a.child == "ours-refcopy" and "ref" not in trainer.model.peft_config:
        # Before ff40e04: trl's DPOTrainer, handed a PeftModel and no peft_config, adds a frozen
        # copy of its adapter as "ref" (dpo_trainer.py, __init__) and runs every reference pass
        # through it; build_trainer now deletes that copy for a fresh adapter. Put it back as
        # trl makes it.
        m = trainer.model
        m.add_adapter("ref", m.peft_config["default"])
        for pname, param in m.named_parameters():
            if ".default." in pname:
                m.get_parameter(pname.replace(".default.", ".ref.")).data.copy_(param.data)
        m.set_adapter("default")
    out = {"arm": a.child, "trainer": type(trainer).__name__, "adapters": adapters,
           "adapters_trained_with": list(trainer.model.peft_config),
           "rows": [{k: list(r[k]) for k in ("prompt_ids", "chosen_ids", "rejected_ids")}
                    for r in plan.train_rows] if a.dump_rows else None,
           "attn": model.config._attn_implementation}
    out = _train_and_measure(trainer, clock, a.warmup, out, barrier=a)
    out["bookkeeping"] = spent
    if "ref" in trainer.model.peft_config and not plan.start_adapter:
        out["ref_ab"] = _reference_pass_ab(trainer, 20 if a.steps >= 10 else 3)
    return out


def _reference_pass_ab(trainer, n: int) -> dict:
    """TRL's reference pass (DPOTrainer.compute_ref_log_probs) on one batch, through the "ref"
    copy of the adapter (as ours trains) and with the adapters disabled (as trl used directly
    trains: "ref" hidden from peft_config for the call), alternated n times: medians in s."""
    import torch
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    model = trainer.model
    rows = [trainer.train_dataset[i] for i in range(trainer.args.per_device_train_batch_size)]
    inputs = DataCollatorForPreference(pad_token_id=trainer._tokenizer.pad_token_id)(rows)
    inputs = {k: v.to(trainer.accelerator.device) for k, v in inputs.items()}
    times: dict[str, list] = {"ref copy": [], "adapters off": []}
    same = True
    for i in range(n):
        order = ("ref copy", "adapters off") if i % 2 == 0 else ("adapters off", "ref copy")
        results = {}
        for how in order:
            hidden = model.peft_config.pop("ref") if how == "adapters off" else None
            try:
                t0, w0 = time.perf_counter(), _thread_waited()
                with torch.no_grad():
                    results[how] = trainer.compute_ref_log_probs(model, inputs)
                times[how].append(time.perf_counter() - t0 - (_thread_waited() - w0))
            finally:
                if hidden is not None:
                    model.peft_config["ref"] = hidden
        same = same and all(torch.allclose(x, y, atol=1e-4)
                            for x, y in zip(results["ref copy"], results["adapters off"]))
    return {"ref_s": statistics.median(times["ref copy"]),
            "off_s": statistics.median(times["adapters off"]), "n": n, "same_logps": same}


def _add(cell: list, t0: float, w0: float) -> None:
    """One more call into [calls, wall seconds, own seconds (wall less waiting for a core)]."""
    wall = time.perf_counter() - t0
    cell[0] += 1
    cell[1] += wall
    cell[2] += wall - (_thread_waited() - w0)


def _time_bookkeeping(recorder, run) -> dict:
    """Wrap the RunRecorder's hooks and the run folder's writes (instance attributes, so only
    this run is touched): {name: [calls, wall seconds, own seconds]}."""
    spent: dict[str, list] = {}

    def timed(obj, name: str, label: str) -> None:
        inner = getattr(obj, name)
        cell = spent.setdefault(label, [0, 0.0, 0.0])

        def wrapper(*args, **kwargs):
            t0, w0 = time.perf_counter(), _thread_waited()
            try:
                return inner(*args, **kwargs)
            finally:
                _add(cell, t0, w0)

        setattr(obj, name, wrapper)

    for hook in ("on_train_begin", "on_step_end", "on_log"):
        timed(recorder, hook, f"RunRecorder.{hook}")
    timed(run, "write_status", "RunDir.write_status")
    timed(run, "append_event", "RunDir.append_event")
    return spent


def child_trl(a) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import DPOConfig, DPOTrainer

    s = json.loads(a.settings)
    trainer_class = DPOTrainer
    if a.child == "trl-ids":
        # TRL used directly, but fed the token ids our renderer makes (as the workbench's
        # trainer is): the same tokens as ours, TRL's own preparation skipped.
        from workbench.profile import load_profile
        from workbench.train.plan import plan_run

        plan = plan_run(load_profile(write_profile(Path(a.tmp), Path(a.model_dir),
                                                   Path(a.data_file), a.steps + a.warmup, s)))
        records = [{k: list(r[k]) for k in ("prompt_ids", "chosen_ids", "rejected_ids")}
                   for r in plan.train_rows]

        class TokenIdsDPOTrainer(DPOTrainer):
            def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
                return dataset

        trainer_class = TokenIdsDPOTrainer
    else:
        records = [json.loads(line) for line in Path(a.data_file).read_text().splitlines()
                   if line.strip()]
        records = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in records]
    set_seed(s["seed"])
    tokenizer = AutoTokenizer.from_pretrained(a.model_dir)
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, dtype=torch.float32)
    peft_config = LoraConfig(r=s["lora_r"], lora_alpha=s["lora_alpha"], lora_dropout=s["lora_dropout"],
                             target_modules=s["targets"], task_type="CAUSAL_LM")
    args = DPOConfig(
        output_dir=str(Path(a.tmp) / "trl-out"), max_steps=a.steps + a.warmup,
        per_device_train_batch_size=s["batch_size"], gradient_accumulation_steps=s["grad_accum"],
        learning_rate=s["learning_rate"], lr_scheduler_type=s["scheduler"],
        warmup_steps=s["warmup_ratio"], weight_decay=s["weight_decay"],
        max_grad_norm=s["max_grad_norm"], optim=s["optimizer"], seed=s["seed"], data_seed=s["seed"],
        use_cpu=True, bf16=False,  # DPOConfig's default is bf16 = True, even on a CPU
        gradient_checkpointing=False,  # and gradient checkpointing on
        logging_steps=s["logging_steps"], logging_first_step=True,
        save_strategy="steps", save_steps=100000, report_to="none",
        max_length=s["max_seq_len"], beta=s["beta"], loss_type=[s["loss"]])
    clock = _clock_callback()
    trainer = trainer_class(model=model, args=args, train_dataset=Dataset.from_list(records),
                            processing_class=tokenizer, peft_config=peft_config, callbacks=[clock])
    ds = trainer.train_dataset
    adapters = list(trainer.model.peft_config)
    out = {"arm": a.child, "trainer": type(trainer).__name__, "adapters": adapters,
           "adapters_trained_with": adapters,
           "rows": [{k: list(ds[i][k]) for k in ("prompt_ids", "chosen_ids", "rejected_ids")}
                    for i in range(len(ds))] if a.dump_rows else None,
           "attn": trainer.model.config._attn_implementation}
    return _train_and_measure(trainer, clock, a.warmup, out, barrier=a)


# ---------------------------------------------------------------------------------------------
# preparing, in the parent


def prepare_data(kind: str, pairs: int, folder: Path) -> tuple[Path, str]:
    """The pairs as TRL's conversational records (prompt / chosen / rejected message lists), one
    JSON line each: the file our profile trains on and TRL reads."""
    if kind == "translate":
        records = [json.loads(line) for line in TRANSLATE.read_text().splitlines() if line.strip()]
        what = f"{TRANSLATE.relative_to(ROOT)}"
    else:
        if not DPO_EN.is_file():
            raise FileNotFoundError(f"{DPO_EN} is missing")
        role = {"human": "user", "gpt": "assistant", "system": "system"}
        records = []
        for row in json.loads(DPO_EN.read_text()):
            prompt = [{"role": role[m["from"]], "content": m["value"]} for m in row["conversations"]]
            records.append({"prompt": prompt,
                            "chosen": [{"role": "assistant", "content": row["chosen"]["value"]}],
                            "rejected": [{"role": "assistant", "content": row["rejected"]["value"]}]})
        what = "../shared/data/dpo_en_demo.json"
    records = records[:pairs]
    path = folder / "pairs.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path, f"{len(records)} pairs of {what}"


def random_model_dir(name: str, folder: Path) -> tuple[Path, str]:
    """A random-init model of a shipped architecture, vocabulary cut to the tiny tokenizer's,
    saved as safetensors with that tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from workbench.estimate.config import load_model_config

    tokenizer = AutoTokenizer.from_pretrained(TINY)
    config, _ = load_model_config(name)
    config = {**config, "vocab_size": len(tokenizer), "use_cache": False}
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        config[key] = getattr(tokenizer, f"{key[:-3]}_id", None) or tokenizer.eos_token_id
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config), dtype=torch.float32)
    params = sum(p.numel() for p in model.parameters())
    out = folder / name
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    del model
    return out, f"random-init {name} ({params / 1e6:.0f}M parameters, vocab cut to {len(tokenizer)})"


def run_children(arms: list[str], model_dir: Path, data_file: Path, steps: int, warmup: int,
                 dump_rows: bool, threads: int | None, together: bool) -> dict:
    """One run of each arm, each in its own process: one after the other, or all at once
    (`together`: released into `trainer.train()` together at a barrier, so they share whatever
    else the cores are doing at that moment)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    else:
        env.pop("OMP_NUM_THREADS", None)
    with tempfile.TemporaryDirectory(prefix="dpo-bench-runs-") as tmp:
        barrier = Path(tmp) / "barrier"
        barrier.mkdir()

        def start(arm: str):
            folder = Path(tmp) / arm
            folder.mkdir()
            cmd = [sys.executable, __file__, "--child", arm, "--model-dir", str(model_dir),
                   "--data-file", str(data_file), "--steps", str(steps), "--warmup", str(warmup),
                   "--tmp", str(folder), "--result", str(folder / "result.json"),
                   "--settings", json.dumps(SETTINGS)]
            if dump_rows:
                cmd.append("--dump-rows")
            if together:
                cmd += ["--barrier", str(barrier), "--barrier-count", str(len(arms))]
            return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)

        def finish(arm: str, proc) -> dict:
            output, _ = proc.communicate()
            result = Path(tmp) / arm / "result.json"
            if proc.returncode != 0 or not result.is_file():
                for other in procs.values():
                    if other.poll() is None:
                        other.kill()
                raise SystemExit(f"{arm} run failed (exit {proc.returncode}):\n{output[-6000:]}")
            return json.loads(result.read_text())

        out = {}
        if together:
            procs = {arm: start(arm) for arm in arms}
            for arm, proc in procs.items():
                out[arm] = finish(arm, proc)
        else:
            for arm in arms:
                procs = {arm: start(arm)}
                out[arm] = finish(arm, procs[arm])
        return out


def _wait_at_barrier(a) -> None:
    if not a.barrier:
        return
    folder = Path(a.barrier)
    (folder / a.child).touch()
    deadline = time.time() + 900
    while len(list(folder.iterdir())) < a.barrier_count:
        if time.time() > deadline:
            raise SystemExit("the other runs never reached the barrier")
        time.sleep(0.01)


def trace_estimate(model_dir: Path) -> dict:
    """The workbench's tracer on this step (`workbench estimate --trace`): the GPU memory of the
    DPO step it models, for the same model and settings at the full max_length."""
    s = SETTINGS
    cmd = [sys.executable, "-m", "workbench", "estimate", "--model", str(model_dir),
           "--train-method", "dpo", "--method", "lora", "--r", str(s["lora_r"]),
           "--alpha", str(s["lora_alpha"]), "--dropout", str(s["lora_dropout"]),
           "--targets", ",".join(s["targets"]), "--batch", str(s["batch_size"]),
           "--seq", str(s["max_seq_len"]), "--no-grad-ckpt", "--precision", "fp32",
           "--optimizer", s["optimizer"], "--trace", "--json", "--no-count-data"]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1"),
                              capture_output=True, text=True, timeout=300)
        est = json.loads(proc.stdout)
        return {"peak": est["peak_bytes"], "reserved": est["reserved_bytes"],
                "traced": bool(est.get("trace")), "modeled": est.get("step_modeled", "")}
    except (subprocess.TimeoutExpired, ValueError, KeyError) as exc:
        return {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}


def nan_check_cost(n: int = 5000) -> float:
    """RunDirTrainer.compute_loss's check on a scalar loss that requires grad, in microseconds
    (median of n): the whole per-micro-batch cost of the check on the CPU."""
    import torch

    x = torch.randn(4, requires_grad=True)
    loss = (x * 2).sum()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        if not torch.isfinite(loss.detach()).all():
            raise AssertionError
        os.environ.get("WORKBENCH_LAUNCH")  # ranks.current_launch()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def status_write_cost(folder: Path, n: int = 40) -> dict:
    """One RunDir.write_status here (read, update, write a temporary file, fsync, rename), and
    the same write without the fsync, alternated: medians in ms."""
    from workbench.rundir import RunDir

    run_dir = folder / "status-cost"
    run_dir.mkdir()
    run = RunDir(run_dir)
    run.write_status(state="running", step=0, total_steps=100, pid=os.getpid())

    def without_fsync(**fields):
        status = run.read_status()
        status.update(fields)
        tmp = run.status_path.with_name(".status.json.tmp")
        tmp.write_text(json.dumps(status, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, run.status_path)

    durable, plain = [], []
    for i in range(n):
        for fn, out in ((run.write_status, durable), (without_fsync, plain)):
            t0, w0 = time.perf_counter(), _thread_waited()
            fn(step=i, loss=0.5)
            out.append((time.perf_counter() - t0 - (_thread_waited() - w0)) * 1000)
    return {"fsync_ms": statistics.median(durable), "plain_ms": statistics.median(plain),
            "fsync_max_ms": max(durable), "n": n}


def paired_ratios(arm_runs: list[dict], trl_runs: list[dict]) -> dict:
    """Run i of an arm against run i of trl (run together, or one after the other): the slowdown
    by own time a step and by tokens/s (>1 = the arm slower), and the peak memory ratio;
    medians and every pair."""
    step, tps, mem = [], [], []
    for o, t in zip(arm_runs, trl_runs):
        step.append((o["steady_own_s"] / len(o["step_s"])) / (t["steady_own_s"] / len(t["step_s"])))
        tps.append((t["steady_tokens"] / t["steady_own_s"]) / (o["steady_tokens"] / o["steady_own_s"]))
        if o["peak_rss_delta_mib"] and t["peak_rss_delta_mib"]:
            mem.append(o["peak_rss_delta_mib"] / t["peak_rss_delta_mib"])
    return {"step": statistics.median(step), "tps": statistics.median(tps),
            "mem": statistics.median(mem) if mem else None, "all_step": step, "all_tps": tps}


def summarize(runs: list[dict]) -> dict:
    """Medians over an arm's runs: seconds a step by the wall clock, by the wall clock less the
    time spent waiting for a core ("own time": what the run would take alone on its core,
    blocking I/O such as fsync included), and by process CPU time; tokens fed per second."""
    per_step = lambda key: [r[key] / len(r["step_s"]) for r in runs]
    tps = lambda key: [r["steady_tokens"] / r[key] for r in runs]
    mem = [r["peak_rss_delta_mib"] for r in runs if r["peak_rss_delta_mib"] is not None]
    out = {"mem_mib": statistics.median(mem) if mem else None, "all_mem": mem,
           "loss1": [r["loss_step1"] for r in runs],
           "tokens_per_step": runs[0]["tokens_per_step"],
           "trained_per_step": runs[0]["trained_per_step"]}
    for name, key in (("wall", "steady_s"), ("own", "steady_own_s"), ("cpu", "steady_cpu_s")):
        out[f"{name}_all"] = per_step(key)
        out[f"{name}_s"] = statistics.median(per_step(key))
        out[f"{name}_tps"] = statistics.median(tps(key))
    return out


ARG_SKIP = {"output_dir", "logging_dir", "run_name", "hub_token", "push_to_hub_token",
            "accelerator_config", "deepspeed_plugin"}


def args_diff(ours: dict, trl: dict) -> list[str]:
    keys = sorted((set(ours) | set(trl)) - ARG_SKIP)
    return [f"`{k}`: ours {ours.get(k)!r}, trl {trl.get(k)!r}" for k in keys
            if ours.get(k) != trl.get(k)]


def tokenization(ours_rows: list[dict], trl_rows: list[dict], tokenizer_dir: Path) -> dict:
    """Pair by pair (the same records in the same order): do the token ids differ, and how."""
    from collections import Counter

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    differ = prompt_differ = trained_diff = tail_only = 0
    tails: Counter = Counter()
    example = None
    n = min(len(ours_rows), len(trl_rows))
    for i in range(n):
        a, b = ours_rows[i], trl_rows[i]
        if any(a[k] != b[k] for k in a):
            differ += 1
            if example is None:
                example = {k: (tok.decode(a[k]), tok.decode(b[k]), a[k], b[k]) for k in a if a[k] != b[k]}
        prompt_differ += a["prompt_ids"] != b["prompt_ids"]
        if (len(a["chosen_ids"]) + len(a["rejected_ids"])
                != len(b["chosen_ids"]) + len(b["rejected_ids"])):
            trained_diff += 1
        extra = []
        for k in ("chosen_ids", "rejected_ids"):
            if b[k][:len(a[k])] == a[k]:
                extra.append(tuple(b[k][len(a[k]):]))
        if a["prompt_ids"] == b["prompt_ids"] and len(extra) == 2 and any(extra):
            tail_only += 1
            tails.update(tok.decode(list(e)) for e in extra if e)
    per_pair = lambda rows: [len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in rows]
    return {"ours_pairs": len(ours_rows), "trl_pairs": len(trl_rows), "compared": n,
            "differ": differ, "prompt_differ": prompt_differ, "trained_diff": trained_diff,
            "tail_only": tail_only, "tails": dict(tails.most_common(3)), "example": example,
            "ours_trained_mean": statistics.mean(per_pair(ours_rows)) if ours_rows else 0,
            "trl_trained_mean": statistics.mean(per_pair(trl_rows)) if trl_rows else 0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="tiny,smollm2-360m",
                    help="comma-separated: tiny and/or names under assets/configs (random init)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per run (tiny model)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed first steps per run (tiny)")
    ap.add_argument("--big-steps", type=int, default=2, help="timed steps per run (random-init models)")
    ap.add_argument("--big-warmup", type=int, default=1, help="untimed steps (random-init models)")
    ap.add_argument("--repeats", type=int, default=5, help="runs per arm (tiny model)")
    ap.add_argument("--big-repeats", type=int, default=3, help="runs per arm (random-init models)")
    ap.add_argument("--pairs", type=int, default=300)
    ap.add_argument("--data", choices=("translate", "dpo_en"), default="translate")
    ap.add_argument("--logging-steps", type=int, default=SETTINGS["logging_steps"])
    ap.add_argument("--threads", type=int, default=1,
                    help="OMP_NUM_THREADS for the runs; 1 by default: on 2 shared cores two "
                         "threads a run stall each other (0 = torch's default)")
    ap.add_argument("--write", type=Path)
    # internal: one measured run
    ap.add_argument("--arms", default="ours,trl,ours-refcopy,trl-ids",
                    help="the arms on the tiny model, comma-separated, from: ours, trl, "
                         "ours-refcopy (ours before ff40e04: trl's copy of the fresh adapter as "
                         "the reference), trl-ids "
                         "(TRL used directly, fed our renderer's token ids), ours-norec (ours "
                         "without the RunRecorder callback)")
    ap.add_argument("--big-arms", default="ours,trl", help="the arms on random-init models")
    ap.add_argument("--sequential", action="store_true",
                    help="run the arms one after the other (default: all at once, released "
                         "together into training, so they share the cores' other load)")
    ap.add_argument("--child", choices=ARMS, help=argparse.SUPPRESS)
    ap.add_argument("--barrier", help=argparse.SUPPRESS)
    ap.add_argument("--profile", help=argparse.SUPPRESS)
    ap.add_argument("--barrier-count", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--data-file", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--settings", help=argparse.SUPPRESS)
    ap.add_argument("--dump-rows", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()

    for arms in (a.arms, a.big_arms):
        if not a.child and ({"ours", "trl"} - set(arms.split(",")) or set(arms.split(",")) - set(ARMS)):
            ap.error(f"--arms / --big-arms must name ours and trl, and only arms from {', '.join(ARMS)}")
    if min(a.warmup, a.big_warmup) < 1 or min(a.steps, a.big_steps, a.repeats, a.big_repeats) < 1:
        ap.error("--warmup/--big-warmup, --steps/--big-steps and --repeats/--big-repeats must be "
                 "at least 1")
    if a.child:
        sys.path.insert(0, str(ROOT))
        out = (child_trl if a.child.startswith("trl") else child_ours)(a)
        Path(a.result).write_text(json.dumps(out))
        return 0

    SETTINGS["logging_steps"] = a.logging_steps
    command = "HF_HUB_OFFLINE=1 python bench/preference_step.py " + " ".join(sys.argv[1:])
    started = time.time()
    results = []
    with tempfile.TemporaryDirectory(prefix="dpo-bench-") as tmp:
        folder = Path(tmp)
        try:
            data_file, data_what = prepare_data(a.data, a.pairs, folder)
        except FileNotFoundError as exc:
            print(f"{exc}: nothing was measured", file=sys.stderr)
            return 2
        for name in [m.strip() for m in a.models.split(",") if m.strip()]:
            if name == "tiny":
                model_dir, what = TINY, "assets/tiny-model (bundled)"
                steps, warmup = a.steps, a.warmup
            else:
                print(f"building {name} ...", flush=True)
                model_dir, what = random_model_dir(name, folder)
                steps, warmup = a.big_steps, a.big_warmup
            arms = tuple(arm.strip() for arm in (a.arms if name == "tiny" else a.big_arms).split(",")
                         if arm.strip())
            runs = {arm: [] for arm in arms}
            for rep in range(a.repeats if name == "tiny" else a.big_repeats):
                order = list(arms) if rep % 2 == 0 else list(reversed(arms))
                LOADS.append(os.getloadavg()[0])
                done = run_children(order, model_dir, data_file, steps, warmup, rep == 0,
                                    a.threads, not a.sequential)
                for arm in order:
                    r = done[arm]
                    runs[arm].append(r)
                    n = len(r["step_s"])
                    print(f"{name} {arm} #{rep + 1}: {r['steady_s'] / n:.3f} s/step wall, "
                          f"{r['steady_own_s'] / n:.3f} own, {r['steady_cpu_s'] / n:.3f} CPU, "
                          f"{r['steady_tokens'] / r['steady_own_s']:.0f} tokens/s own, "
                          f"peak RSS +{r['peak_rss_delta_mib'] or 0:.0f} MiB, "
                          f"step-1 loss {r['loss_step1']}"
                          + (f", bookkeeping {_bookkeeping_ms(r):.1f} ms/step" if arm == "ours" else ""),
                          flush=True)
            tok = tokenization(runs["ours"][0]["rows"], runs["trl"][0]["rows"], model_dir)
            trace = trace_estimate(model_dir)
            paired = {arm: paired_ratios(runs[arm], runs["trl"]) for arm in arms if arm != "trl"}
            refcopy = (paired_ratios(runs["ours-refcopy"], runs["ours"])
                       if "ours-refcopy" in arms else None)
            ref_ab = [x["ref_ab"] for arm in arms for x in runs[arm] if x.get("ref_ab")]
            same_ids = ({arm: paired_ratios(runs[arm], runs["trl-ids"])
                         for arm in ("ours", "ours-refcopy") if arm in arms} if "trl-ids" in arms else {})
            results.append({"name": name, "what": what, "steps": steps, "warmup": warmup,
                            **{arm: summarize(runs[arm]) for arm in arms}, "arms": arms,
                            "tok": tok, "diff": args_diff(runs["ours"][0]["args"], runs["trl"][0]["args"]),
                            "attn": (runs["ours"][0]["attn"], runs["trl"][0]["attn"]),
                            "trace": trace, "paired": paired, "same_ids": same_ids, "refcopy": refcopy, "ref_ab": ref_ab, "together": not a.sequential,
                            "adapters": {arm: (runs[arm][0]["adapters"],
                                               runs[arm][0]["adapters_trained_with"]) for arm in arms},
                            "bookkeeping": [r["bookkeeping"] for r in runs["ours"]],
                            "ours_steps": [r["steps"] for r in runs["ours"]],
                            "threads": runs["ours"][0]["threads"]})
        cost = status_write_cost(folder)
        cost["nan_us"] = nan_check_cost()
    text = report(results, a, command, data_what, time.time() - started, cost)
    print(text)
    if a.write:
        a.write.write_text(text)
    ok = all(r["paired"]["ours"]["tps"] <= TARGET and memory_ok(r["ours"], r["trl"], r["paired"]["ours"])[0]
             for r in results)
    return 0 if ok else 1


def report(results: list[dict], a, command: str, data_what: str, wall: float, cost: dict) -> str:
    versions = ", ".join(f"{n} {metadata.version(n)}" for n in
                         ("torch", "transformers", "trl", "peft", "accelerate", "datasets"))
    from _shared import cpu_machine

    s = SETTINGS
    lines = [
        "# DPO step: the workbench's trainer vs TRL's DPOTrainer used directly",
        "",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {cpu_machine()}, no GPU; torch threads a run: "
        f"{results[0]['threads'] if results else '?'}; other engineers' tests shared the two cores "
        f"(1-minute load average {min(LOADS, default=0):.1f} to {max(LOADS, default=0):.1f} at the "
        "repeats' starts)",
        f"- Python {platform.python_version()}; {versions}",
        f"- command: `{command}` (wall {wall / 60:.1f} min)",
        f"- data: {data_what}; the same settings for both: batch {s['batch_size']} x grad_accum "
        f"{s['grad_accum']}, fp32, max_length {s['max_seq_len']}, LoRA r {s['lora_r']} alpha "
        f"{s['lora_alpha']} dropout {s['lora_dropout']} on {', '.join(s['targets'])}, lr "
        f"{s['learning_rate']} {s['scheduler']} (warmup {s['warmup_ratio']}), {s['optimizer']}, beta "
        f"{s['beta']} {s['loss']}, logging every {s['logging_steps']} steps (and step 1), no eval, "
        "no checkpoint inside the timed steps, gradient checkpointing off",
        "- s/step: median over the runs of each run's mean steady-state step (the intervals between "
        "consecutive `on_step_end` after the warm-up steps: data, forward/backward of policy and "
        "reference, optimizer, callbacks, logging). **own**: the wall clock less the time the "
        "training loop's thread spent runnable but waiting for a core (/proc/thread-self/schedstat), "
        "i.e. what the "
        "step takes alone on its core, blocking I/O such as fsync included: the figure compared. "
        "wall: the raw wall clock (other processes' load swings it by +-50%). CPU: process CPU "
        "time (leaves out blocking I/O)",
        "- tokens/s: non-pad tokens fed (prompt+chosen and prompt+rejected, counted once although "
        "the reference pass reads them again) / own time; slowdown: trl's tokens/s / ours, and "
        "ours' s/step / trl's (>1 = ours slower)",
        "- peak memory: peak RSS during `trainer.train()` above the RSS just before it (VmHWM reset "
        "through /proc/self/clear_refs). The workbench's tracer (`workbench estimate --trace`) "
        "models one DPO step on a GPU (below, per model); it models TRL's step, reference with the "
        "adapter disabled, so one number for both arms: it cannot tell them apart. The GPU peak "
        "of our runner's step is measured by bench/gpu_checks.sh on a lent GPU",
        "",
        "| model | arm | timed steps (warm-up) x runs | s/step own | s/step wall | s/step CPU | "
        "tokens/s (own) | peak RSS delta | vs trl: tokens/s slowdown | vs trl: s/step | "
        "vs trl: peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for arm in r["arms"]:
            o = r[arm]
            mem = f"{o['mem_mib']:.0f} MiB" if o["mem_mib"] is not None else "n/a"
            pr = r["paired"].get(arm)
            slow = ("- | - | -" if pr is None else
                    f"**{pr['tps']:.3f}x** | {pr['step']:.3f}x | "
                    + (f"{pr['mem']:.2f}x" if pr["mem"] else "n/a"))
            lines.append(f"| {r['what']} | {arm} | {r['steps']} ({r['warmup']}) x {len(o['own_all'])} | "
                         f"{o['own_s']:.3f} | {o['wall_s']:.3f} | {o['cpu_s']:.3f} | "
                         f"{o['own_tps']:.0f} | {mem} | {slow} |")
    lines += ["", "The vs-trl columns are medians of the paired ratios: run i of an arm against "
              "run i of trl, " + ("run at the same time (all arms of a repeat start training "
              "together at a barrier, one thread each, so they share the other load of the cores)"
              if results and results[0]["together"] else "run one after the other")
              + "; the other columns are medians over the runs.", "",
              "Every run, in the order run (s/step own; wall; CPU; peak RSS delta MiB):", ""]
    trace_lines = []
    for r in results:
        tr = r["trace"]
        if "error" in tr:
            trace_lines.append(f"- {r['name']}: the tracer did not answer ({tr['error']})")
        else:
            trace_lines.append(f"- {r['name']}: `workbench estimate --trace`, batch {s['batch_size']} x "
                               f"{s['max_seq_len']} tokens fp32 on a GPU: peak {tr['peak'] / 2**30:.2f} GiB "
                               f"with the CUDA context, max_memory_reserved {tr['reserved'] / 2**30:.2f} GiB"
                               f"{'' if tr['traced'] else ' (analytic: not traced)'}; step modeled: "
                               f"{tr['modeled']}")
    for r in results:
        for arm in r["arms"]:
            x = r[arm]
            lines.append(f"- {r['name']} {arm}: "
                         + "; ".join(", ".join(f"{v:.3f}" for v in x[f"{k}_all"])
                                     for k in ("own", "wall", "cpu"))
                         + "; " + ", ".join(f"{v:.0f}" for v in x["all_mem"]))
        for arm, pr in r["paired"].items():
            lines.append(f"- {r['name']} {arm} / trl, pair by pair: s/step "
                         + ", ".join(f"{v:.3f}" for v in pr["all_step"]) + "; tokens/s slowdown "
                         + ", ".join(f"{v:.3f}" for v in pr["all_tps"]))
    lines += ["", "GPU memory of the step by the workbench's tracer (one number for every arm: it models trl used directly):", ""]
    lines += trace_lines
    lines += ["", "## Do the two train the same thing?", ""]
    for r in results:
        tk, o, t = r["tok"], r["ours"], r["trl"]
        same_tokens = o["tokens_per_step"] == t["tokens_per_step"]
        same_trained = o["trained_per_step"] == t["trained_per_step"]
        lines.append(f"- {r['name']}: step-1 loss ours {_fmt_losses(o['loss1'])}, trl "
                     f"{_fmt_losses(t['loss1'])} (ln 2 = {math.log(2):.4f}); pairs trained: ours "
                     f"{tk['ours_pairs']}, trl {tk['trl_pairs']}; pairs whose token ids differ: "
                     f"{tk['differ']} of {tk['compared']} (prompt ids differ in {tk['prompt_differ']}; "
                     f"in {tk['tail_only']} the only difference is tokens TRL adds after each answer: "
                     f"{tk['tails']}); trained (completion) tokens a pair, chosen + rejected: ours "
                     f"{tk['ours_trained_mean']:.2f}, trl {tk['trl_trained_mean']:.2f} (differ in "
                     f"{tk['trained_diff']} pairs); tokens fed a step "
                     f"{'identical' if same_tokens else 'differ'} (first steps: ours "
                     f"{o['tokens_per_step'][:6]}, trl {t['tokens_per_step'][:6]}); completion tokens a "
                     f"step {'identical' if same_trained else 'differ'}; attention ours {r['attn'][0]}, "
                     f"trl {r['attn'][1]}; adapters on the model once the trainer is built: "
                     + "; ".join(f"{arm} {built}" + (f" (trained with {used})" if used != built else "")
                                 for arm, (built, used) in r["adapters"].items()))
        if tk["example"]:
            lines.append("  - the first pair that differs:")
            for k, (da, db, ia, ib) in tk["example"].items():
                lines.append(f"    - {k}: ours {da!r} {ia}; trl {db!r} {ib}")
    lines += ["", "## What ours does that TRL used directly does not", "",
              "Timed inside our runs (RunRecorder's hooks and the run folder's writes wrapped, the "
              "writes being inside the hooks' time; own time = wall less waiting for a core, "
              "fsync included):", ""]
    for r in results:
        lines += bookkeeping_lines(r)
    lines += ["", f"One status write on this disk (own time), alternated {cost['n']} times: "
              f"{cost['fsync_ms']:.2f} ms median (max {cost['fsync_max_ms']:.1f} ms) as "
              f"RunDir.write_status does it (fsync, then rename); {cost['plain_ms']:.2f} ms without "
              f"the fsync. The NaN check of RunDirTrainer.compute_loss (`torch.isfinite(loss.detach())"
              f".all()` and the launch lookup): {cost['nan_us']:.1f} us a micro-batch on the CPU."]
    if results:
        lines += ["", "TrainingArguments fields that differ (ours / trl), from the first model's runs:", ""]
        lines += [f"- {d}" for d in results[0]["diff"]] or ["- none"]
    lines += ["", "## Verdict", "",
              f"Target: ours no slower than {TARGET}x TRL used directly, by tokens/s (own time) and "
              "by peak memory (peak RSS delta); medians of the paired ratios.", ""]
    for r in results:
        for arm, pr in r["paired"].items():
            if arm in ("ours-norec", "trl-ids"):
                continue
            mem_ok, mem_note = memory_ok(r[arm], r["trl"], pr)
            ok = pr["tps"] <= TARGET and mem_ok
            mem = f"peak RSS {pr['mem']:.2f}x{mem_note}" if pr["mem"] else "memory n/a"
            label = f"{arm} (as before ff40e04)" if arm == "ours-refcopy" else arm
            lines.append(f"- {r['name']}, {label}: tokens/s {pr['tps']:.3f}x slower than TRL's, "
                         f"{pr['step']:.3f}x TRL's time a step, {mem}: "
                         f"**{'within' if ok else 'MISSES'} the {TARGET}x target**")
        for arm, pr in r["same_ids"].items():
            lines.append(f"- {r['name']}, {arm} against trl-ids (TRL used directly on the very same "
                         f"token ids): tokens/s {pr['tps']:.3f}x, time a step {pr['step']:.3f}x")
    for r in results:
        ids = r["paired"].get("trl-ids")
        same = r["same_ids"].get("ours")
        if ids and same:
            extra = (statistics.mean(r["trl"]["tokens_per_step"])
                     / statistics.mean(r["ours"]["tokens_per_step"]) - 1)
            lines.append(f"- reading {r['name']}: TRL feeds {extra:.1%} more tokens a step than ours "
                         f"for the same pairs (see 2 below); TRL itself fed our ids (trl-ids) shows "
                         f"{ids['tps']:.3f}x by tokens/s against trl at {ids['step']:.3f}x the time a "
                         "step, i.e. that much of the tokens/s gap is the token count, not speed. On "
                         f"the same pairs ours takes {r['paired']['ours']['step']:.3f}x TRL's time a "
                         f"step, and on the very same token ids {same['step']:.3f}x.")
    lines += findings(results, cost)
    return "\n".join(lines) + "\n"


def _bookkeeping_ms(run: dict) -> float:
    """Our recorder's hooks, own time per optimizer step, in ms (all steps)."""
    b = run["bookkeeping"]
    if not b:
        return 0.0
    return sum(b[k][2] for k in b if k.startswith("RunRecorder.")) / run["steps"] * 1000


def bookkeeping_lines(r: dict) -> list[str]:
    """What ours does per step that TRL used directly does not, summed over the runs."""
    total: dict[str, list] = {}
    for b in r["bookkeeping"]:
        for k, (n, wall, own) in b.items():
            cell = total.setdefault(k, [0, 0.0, 0.0])
            cell[0] += n
            cell[1] += wall
            cell[2] += own
    steps = sum(r["ours_steps"])
    lines = [f"- {r['name']} ({steps} steps over {len(r['ours_steps'])} runs; median step "
             f"{r['ours']['own_s'] * 1000:.0f} ms own time):"]
    for k, (n, wall, own) in total.items():
        lines.append(f"  - {k}: {n} calls, {own * 1000 / max(n, 1):.2f} ms a call own time "
                     f"({wall * 1000 / max(n, 1):.2f} wall), {own * 1000 / steps:.2f} ms a step")
    hooks = sum(v[2] for k, v in total.items() if k.startswith("RunRecorder."))
    lines.append(f"  - the recorder's hooks in all: {hooks * 1000 / steps:.2f} ms a step = "
                 f"{hooks / steps / r['ours']['own_s']:.2%} of the median step")
    return lines


def _trl_line(needle: str) -> str:
    """trl/trainer/dpo_trainer.py:LINE of the first line holding `needle` (for the report)."""
    import inspect

    import trl.trainer.dpo_trainer as module

    lines = inspect.getsource(module).splitlines()
    return next((f"trl/trainer/dpo_trainer.py:{i}" for i, line in enumerate(lines, 1)
                 if needle in line), "trl/trainer/dpo_trainer.py")


def findings(results: list[dict], cost: dict) -> list[str]:
    """Why ours differs from trl used directly, from what was measured."""
    out = ["", "## Why, and what to change", ""]
    n = 0
    add_line = _trl_line('model.add_adapter("ref"')
    use_line = _trl_line('adapter_name="ref" if "ref" in')
    for r in results:
        ours_has_copy = "ref" in r["adapters"]["ours"][1]
        if not (ours_has_copy or r["refcopy"] or r["ref_ab"]):
            continue
        n += 1
        text = (f"{n}. **The reference pass ran through a copy of the adapter** "
                "(fixed in ff40e04, workbench/train/methods/preference.py `build_trainer`"
                + (": but the `ours` arm here still trained with the copy" if ours_has_copy else "")
                + "). runner.add_adapters wraps the model in a PeftModel before the trainer is "
                "built, and trl's DPOTrainer, handed a PeftModel without a `peft_config`, adds a "
                f"frozen copy of its adapter as adapter \"ref\" ({add_line}) and computes every "
                f"reference log-prob with it ({use_line}): each step switches the active adapter "
                "twice (`set_adapter`, a walk over every module) and runs the LoRA branches (A, "
                "then B) in the reference forward. trl used directly, given the `peft_config`, "
                "has no copy and runs the reference with the adapters disabled. For a fresh "
                "adapter the copy is worth nothing: LoRA's B starts at zero, so it is the base "
                "model. A cProfile of 42 tiny-model steps before the fix counted 5040 `linear` "
                "calls in ours against 3696 in trl: 32 more a step, the A and B of the 16 "
                "adapted projections in the reference forward.")
        for ab in r["ref_ab"][:1]:
            text += (f" The reference pass itself on one batch ({r['name']}, alternated {ab['n']} "
                     f"times in one process): {ab['ref_s'] * 1000:.1f} ms through the copy, "
                     f"{ab['off_s'] * 1000:.1f} ms with the adapters off, "
                     f"+{(ab['ref_s'] - ab['off_s']) * 1000:.1f} ms = "
                     f"{(ab['ref_s'] - ab['off_s']) / r['ours']['own_s']:.1%} of the step; the "
                     f"log-probs {'agree' if ab['same_logps'] else 'DIFFER'} (atol 1e-4).")
        if r["refcopy"]:
            rc = r["refcopy"]
            text += (f" Whole steps: ours-refcopy (the copy kept, as before the fix) takes "
                     f"{rc['step']:.3f}x the time a step of ours (pairs: "
                     + ", ".join(f"{v:.3f}" for v in rc["all_step"]) + ").")
        out.append(text)
    for r in results[:1]:
        tk = r["tok"]
        if tk["tail_only"]:
            n += 1
            ids = r["paired"].get("trl-ids")
            out.append(f"{n}. **Tokens: TRL trains {tk['trl_trained_mean'] - tk['ours_trained_mean']:.2f} "
                       "more completion tokens a pair.** Its conversational path takes the "
                       "completion as everything the chat template renders after the prompt, "
                       f"so the tiny model's template adds {list(tk['tails'])} after each "
                       "answer's <|im_end|>; our renderer ends the answer at <|im_end|>. The "
                       "prompts are the same token for token. TRL therefore feeds "
                       f"{statistics.mean(r['trl']['tokens_per_step']) / statistics.mean(r['ours']['tokens_per_step']) - 1:.1%} "
                       "more tokens a step; where the step time hardly depends on the token count "
                       "(the tiny model) that alone lifts TRL's tokens/s"
                       + (f": trl-ids (TRL fed our ids) against trl: {ids['step']:.3f}x the time a "
                          f"step, {ids['tps']:.3f}x by tokens/s." if ids else ".")
                       + " Not a speed difference, and not to be copied: training the newline "
                       "after the end-of-turn token is TRL's quirk.")
    for r in results[:1]:
        if not r["bookkeeping"] or not r["bookkeeping"][0]:
            continue
        n += 1
        total_own = sum(b[k][2] for b in r["bookkeeping"] for k in b if k.startswith("RunRecorder."))
        writes = sum(b["RunDir.write_status"][0] for b in r["bookkeeping"])
        steps = sum(r["ours_steps"])
        out.append(f"{n}. **Our own per-step work.** The RunRecorder's hooks took "
                   f"{total_own * 1000 / steps:.2f} ms a step (own time, warm-up steps included) on {r['name']} "
                   f"({total_own / steps / r['ours']['own_s']:.1%} of its step), nearly all of it "
                   f"status.json writes ({writes} in {steps} steps: one at every logged step from "
                   "on_log, and at most one a second from on_step_end), each with an fsync "
                   f"({cost['fsync_ms']:.2f} ms here when the disk is quiet, against "
                   f"{cost['plain_ms']:.2f} ms without the fsync; more while other processes write). "
                   f"The NaN check is {cost['nan_us']:.0f} us a micro-batch on the CPU (on a GPU "
                   "its `.all()` in an `if` is a device sync each micro-batch; TRL's default "
                   "`logging_nan_inf_filter=True` costs two, `isnan` and `isinf` (transformers' "
                   "trainer.py, the training loop), and ours turns that filter off, so ours syncs "
                   "no more often). To trim the status writes: "
                   "in RunRecorder.on_log (workbench/train/trainer.py) keep the loss for the "
                   "throttled status write of on_step_end instead of writing status.json at every "
                   "logged step, and write progress-only status without fsync (the rename alone "
                   "already keeps readers from seeing half a file).")
    return out


def memory_ok(o: dict, t: dict, pr: dict) -> tuple[bool, str]:
    """Peak memory within the target: the paired ratio at most TARGET, or the difference of the
    medians smaller than the spread between runs of one arm (allocator noise on a small delta)."""
    if pr["mem"] is None or pr["mem"] <= TARGET:
        return True, ""
    spread = max(max(x["all_mem"]) - min(x["all_mem"]) for x in (o, t))
    gap = o["mem_mib"] - t["mem_mib"]
    if gap <= spread:
        return True, (f" (+{gap:.0f} MiB, inside the {spread:.0f} MiB spread between runs of one "
                      "arm: noise, not a difference)")
    return False, ""


def _fmt_losses(xs: list) -> str:
    return "/".join("?" if x is None else f"{x:.4f}" for x in xs)


if __name__ == "__main__":
    sys.exit(main())
