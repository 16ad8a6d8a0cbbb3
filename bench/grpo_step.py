"""Benchmark: is the workbench's GRPO step as fast as TRL's GRPOTrainer used directly?

    HF_HUB_OFFLINE=1 python bench/grpo_step.py [--models tiny,smollm2-360m] [--steps 10]
        [--warmup 2] [--repeats 5] [--big-steps 2] [--big-warmup 1] [--big-repeats 3]
        [--big-completion-len 8] [--threads 1] [--cprofile DIR] [--quick]
        [--write bench/grpo_step.md] [--save-results FILE.json] [--report-from FILE.json]

Target (the issue): "seconds per step, generation vs training share, and peak memory of the
workbench's GRPO against TRL's GRPOTrainer used directly with the same settings: no slower than
1.05x". Exit status 1 when `ours` misses it on a model.

The settings are the shipped demo's (profiles/grpo-demo.toml: LoRA r 16 on q/k/v/o, 4
completions a prompt, batch 8 x grad_accum 2 = 4 prompts x 4 completions a step, up to 16
completion tokens, temperature 1, beta 0, loss "dapo", rewards rewards.py:french_overlap x1.0 +
answer:exact x0.5, lr 5e-4, logging every 2 steps), the checkpoint interval pushed past the run.

The arms, each run in a fresh process; a repeat runs one of each, both processes alive at once
but taking turns a step each (ours, trl, ours, trl ... step by step, the first arm alternating
between repeats): one computes while the other waits on a pipe, so the two never compete for
the cores and each pair of steps meets the same load from the rest of the machine:

- ours: the demo profile planned by `plan_run`, a run folder by `control.create_run`, the model
  from `runner.load_model` + `runner.add_adapters`, the trainer from
  `plan.method.build_trainer(model, plan, run, [RunRecorder, clock])` as `runner.execute` builds
  it (PrinterCallback removed): TRL's GRPOTrainer under our RunDirTrainer mixin, prompts
  pre-tokenized by the run's chat format, rewards through the workbench's checked wrapper,
  a "samples" event at every logged step;
- trl: `trl.GRPOTrainer` + `GRPOConfig` with the same fields, the same weights (the same folder,
  `AutoModelForCausalLM.from_pretrained` as a user would), a `peft.LoraConfig` passed as
  `peft_config`, the same prompts (our plan's training rows, in the same order) as a
  conversational dataset with the `answer` column (TRL applies the chat template itself), and
  the same reward functions as plain Python functions: `french_overlap` imported from
  assets/demo/rewards.py and the built-in answer:exact's function, no wrapper. Bookkeeping
  options (tqdm, NaN filter, ...) keep TRL's defaults; the report lists every field that differs.

Measured per run, over the steady-state steps (each from the moment the run gets its turn at
`on_step_begin` to the moment it hands it over at the next step's `on_step_begin`: the step,
the logging after it and the next batch's fetch; the warm-up steps and the last step, which also
saves, left out): seconds a step by the wall clock, by the wall clock less
the time the training loop's thread waited for a core ("own time", /proc/thread-self/schedstat:
what the step takes alone on its core; the figure compared) and by CPU time; inside each step,
own time in the trainer's methods (wrapped on the instance): `_generate_and_score_completions`
(generation: the prompts' tokens, `_generate`, decoding, `_calculate_rewards`, advantages),
`compute_loss` (the training forward), `training_step` less `_prepare_inputs` and `compute_loss`
(the backward), `log` (TRL's logging, our recorder's `on_log` and samples event) and the
optimizer's `step`; the rest (gradient clipping, scheduler, step-end callbacks, the data loader)
is "other". Peak memory: the peak RSS during `trainer.train()` above the RSS just before it
(VmHWM reset through /proc/self/clear_refs). Compared: medians of the paired ratios (run i of
ours against run i of trl, the two runs of a repeat).

The models: the bundled assets/tiny-model, and (when named) a random-init model of a shipped
architecture (assets/configs/NAME) with its vocabulary cut to the tiny tokenizer's (made by
bench/preference_step.py's `random_model_dir`, its use_cache turned back on so sampling uses
the KV cache), with a short completion length (--big-completion-len).

Also measured, in this process: fetching one generation batch from each arm's dataset and
through accelerate's `send_to_device`, as the data loader does, by prompt length (ours carries
each prompt's token ids as a list column).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from preference_step import (_jsonable, _reset_peak, _rss_kib, _thread_waited,  # noqa: E402
                             _time_bookkeeping, random_model_dir)

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "assets" / "tiny-model"
DEMO = ROOT / "profiles" / "grpo-demo.toml"
REWARDS_FILE = ROOT / "assets" / "demo" / "rewards.py"
TARGET = 1.05
# Per-step categories: the trainer's methods wrapped on the instance (own seconds a step).
PARTS = ("gen_score", "generate", "rewards", "prepare", "loss_fwd", "train_step", "log", "optimizer")


# ---------------------------------------------------------------------------------------------
# measuring, in the child process


class Meter:
    """Own time (wall less waiting for a core) and wall time spent in wrapped methods, summed
    since the last step end; nested wraps each count their own."""

    def __init__(self):
        self.own: dict[str, float] = dict.fromkeys(PARTS, 0.0)
        self.calls: dict[str, int] = dict.fromkeys(PARTS, 0)

    def wrap(self, obj, name: str, label: str) -> None:
        inner = getattr(obj, name)

        def wrapper(*args, **kwargs):
            t0, w0 = time.perf_counter(), _thread_waited()
            try:
                return inner(*args, **kwargs)
            finally:
                self.own[label] += time.perf_counter() - t0 - (_thread_waited() - w0)
                self.calls[label] += 1

        setattr(obj, name, wrapper)

    def take(self) -> dict:
        out = dict(self.own)
        self.own = dict.fromkeys(PARTS, 0.0)
        return out


class Turn:
    """Lock-step alternation of the two arms' runs, a step each: a token passed through two
    named pipes. `acquire` blocks until the other run hands the turn over (or has finished);
    `release` hands it over. Without pipes (one run alone) both do nothing."""

    TIMEOUT_S = 1800

    def __init__(self, mine: str | None, other: str | None):
        self.r = os.open(mine, os.O_RDWR) if mine else None
        self.w = os.open(other, os.O_RDWR) if other else None

    def acquire(self) -> None:
        if self.r is None:
            return
        import select

        ready, _, _ = select.select([self.r], [], [], self.TIMEOUT_S)
        if not ready:
            raise SystemExit("the other run never handed the turn over")
        os.read(self.r, 1)

    def release(self) -> None:
        if self.w is not None:
            os.write(self.w, b"x")


def _clock_callback(meter: Meter, turn: Turn):
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        """A step is timed from the moment its run gets the turn (`on_step_begin`) to the moment
        it hands the turn over, at the next step's `on_step_begin` (so the logging after a step,
        our samples event included, and the next batch's fetch count in it), or at
        `on_train_end` (the last step, which also saves: never timed). Kept for each step: wall,
        CPU and waited-for-a-core seconds, and the wrapped methods' own time."""

        def __init__(self):
            self.step_s: list[float] = []
            self.cpu_s: list[float] = []
            self.own_s: list[float] = []
            self.parts: list[dict] = []
            self.logs: dict[int, dict] = {}
            self._start = None

        def on_train_begin(self, args, state, control, optimizer=None, **kw):
            if optimizer is not None:
                meter.wrap(optimizer, "step", "optimizer")

        def _end(self) -> None:
            if self._start is None:
                return
            t, c, w = time.perf_counter(), time.process_time(), _thread_waited()
            t0, c0, w0 = self._start
            self.step_s.append(t - t0)
            self.cpu_s.append(c - c0)
            self.own_s.append(t - t0 - (w - w0))
            self.parts.append(meter.take())
            self._start = None
            turn.release()

        def on_step_begin(self, args, state, control, **kw):
            self._end()
            turn.acquire()
            meter.take()
            self._start = (time.perf_counter(), time.process_time(), _thread_waited())

        def on_train_end(self, args, state, control, **kw):
            self._end()

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                keep = ("loss", "reward", "reward_std", "frac_reward_zero_std",
                        "completions/mean_length", "num_tokens")
                self.logs[state.global_step] = {k: float(logs[k]) for k in keep if k in logs}

    return StepClock()


def _instrument(trainer, meter: Meter) -> None:
    for name, label in (("_generate_and_score_completions", "gen_score"), ("_generate", "generate"),
                        ("_calculate_rewards", "rewards"), ("_prepare_inputs", "prepare"),
                        ("compute_loss", "loss_fwd"), ("training_step", "train_step"),
                        ("log", "log")):
        meter.wrap(trainer, name, label)


def _first_prompt_ids(trainer, out: dict) -> None:
    """The prompt token ids of the first generation batch as the trainer tokenized them."""
    inner = trainer._tokenize_prompts

    def recording(prompts):
        result = inner(prompts)
        out.setdefault("prompt_ids", [list(map(int, x)) for x in result[0]])
        return result

    trainer._tokenize_prompts = recording


def _train_and_measure(trainer, clock, meter: Meter, warmup: int, out: dict, cprofile: str | None) -> dict:
    import gc

    import torch

    _instrument(trainer, meter)
    _first_prompt_ids(trainer, out)
    gc.collect()
    resettable = _reset_peak()
    rss0 = _rss_kib("VmRSS")
    t0 = time.perf_counter()
    if cprofile:
        import cProfile

        with cProfile.Profile() as prof:
            trainer.train()
        prof.dump_stats(cprofile)
    else:
        trainer.train()
    wall = time.perf_counter() - t0
    peak = _rss_kib("VmHWM")
    timed = slice(warmup, len(clock.step_s) - 1)  # the warm-up and the last step left out
    out.update(
        steps=len(clock.step_s), warmup=warmup, step_s=clock.step_s[timed],
        step_cpu_s=clock.cpu_s[timed], step_own_s=clock.own_s[timed], parts=clock.parts[timed],
        train_wall_s=wall, logs=clock.logs, calls=meter.calls,
        peak_rss_delta_mib=(peak - rss0) / 1024 if resettable else None,
        rss_before_mib=rss0 / 1024, peak_rss_mib=peak / 1024, threads=torch.get_num_threads(),
        use_cache=getattr(trainer.model.config, "use_cache", None),
        sample_cache=getattr(getattr(trainer.model, "generation_config", None), "use_cache", None),
        attn=trainer.model.config._attn_implementation,
        args={k: _jsonable(v) for k, v in trainer.args.to_dict().items()})
    return out


def profile_overrides(a, folder: Path) -> list[str]:
    """The demo profile's overrides for a measured run: its settings, the run's length, no
    checkpoint inside it, no evaluation after it, and the model / completion length asked for."""
    out = [f"train.max_steps={a.steps + a.warmup + 1}", "train.save_steps=100000",
           "eval.after_training=false", f"train.runs_dir={json.dumps(str(folder / 'runs'))}",
           f"model.name_or_path={json.dumps(str(a.model_dir))}"]
    if a.completion_len:
        out.append(f"grpo.max_completion_len={a.completion_len}")
    return out


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
    folder = Path(a.tmp)
    profile = load_profile(DEMO, profile_overrides(a, folder))
    plan = plan_run(profile)
    run = create_run(plan, runs_dir=folder / "runs")
    set_seed(profile.train.seed)
    model = runner.add_adapters(runner.load_model(plan), plan)
    meter = Meter()
    clock = _clock_callback(meter, Turn(a.turn_mine, a.turn_other))
    recorder = RunRecorder(run, StopFlag(), device=plan.device, signals=plan.method.signals)
    spent = _time_bookkeeping(recorder, run)
    trainer = plan.method.build_trainer(model, plan, run, [recorder, clock])
    trainer.remove_callback(PrinterCallback)
    if hasattr(trainer, "_record_samples"):
        cell = spent.setdefault("trainer._record_samples (the samples event)", [0, 0.0, 0.0])
        inner = trainer._record_samples

        def samples():
            t0, w0 = time.perf_counter(), _thread_waited()
            try:
                return inner()
            finally:
                wall = time.perf_counter() - t0
                cell[0] += 1
                cell[1] += wall
                cell[2] += wall - (_thread_waited() - w0)

        trainer._record_samples = samples
    out = {"arm": "ours", "trainer": type(trainer).__name__,
           "adapters": list(trainer.model.peft_config),
           "callbacks": [type(c).__name__ for c in trainer.callback_handler.callbacks]}
    out = _train_and_measure(trainer, clock, meter, a.warmup, out, a.cprofile)
    out["bookkeeping"] = spent
    out["events"] = _event_counts(run.path / "events.jsonl")
    return out


def _event_counts(path: Path) -> dict:
    counts: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for line in path.read_text().splitlines():
        kind = json.loads(line).get("type", "?")
        counts[kind] = counts.get(kind, 0) + 1
        sizes[kind] = sizes.get(kind, 0) + len(line) + 1
    return {k: [counts[k], sizes[k]] for k in counts}


def child_trl(a) -> dict:
    import importlib.util

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import GRPOConfig, GRPOTrainer

    from workbench.rewards.builtin import builtin_for

    s = json.loads(a.settings)
    records = [json.loads(line) for line in Path(a.data_file).read_text().splitlines() if line.strip()]
    spec = importlib.util.spec_from_file_location("demo_rewards", REWARDS_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    builtin, argument = builtin_for("answer:exact")
    reward_funcs = [module.french_overlap, builtin.make(argument, None)]  # plain functions

    set_seed(s["seed"])
    tokenizer = AutoTokenizer.from_pretrained(a.model_dir)
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, dtype=torch.float32)
    peft_config = LoraConfig(r=s["lora_r"], lora_alpha=s["lora_alpha"], lora_dropout=s["lora_dropout"],
                             bias=s["lora_bias"], target_modules=s["targets"], task_type="CAUSAL_LM")
    args = GRPOConfig(
        output_dir=str(Path(a.tmp) / "trl-out"), max_steps=a.steps + a.warmup + 1,
        per_device_train_batch_size=s["batch_size"], gradient_accumulation_steps=s["grad_accum"],
        learning_rate=s["learning_rate"], lr_scheduler_type=s["scheduler"],
        warmup_steps=s["warmup_ratio"], weight_decay=s["weight_decay"],
        max_grad_norm=s["max_grad_norm"], optim=s["optimizer"], seed=s["seed"], data_seed=s["seed"],
        use_cpu=True, bf16=False,  # GRPOConfig's default is bf16 = True, even on a CPU
        gradient_checkpointing=False,  # and gradient checkpointing on
        logging_steps=s["logging_steps"], logging_first_step=True,
        save_strategy="steps", save_steps=100000, report_to="none",
        num_generations=s["num_generations"], max_completion_length=a.completion_len or s["max_completion_len"],
        temperature=s["temperature"], top_p=s["top_p"], beta=s["beta"], loss_type=s["loss"],
        reward_weights=s["reward_weights"], scale_rewards=s["scale_rewards"],
        mask_truncated_completions=s["mask_truncated"])
    meter = Meter()
    clock = _clock_callback(meter, Turn(a.turn_mine, a.turn_other))
    trainer = GRPOTrainer(model=model, reward_funcs=reward_funcs, args=args,
                          train_dataset=Dataset.from_list(records), processing_class=tokenizer,
                          peft_config=peft_config, callbacks=[clock])
    out = {"arm": "trl", "trainer": type(trainer).__name__, "adapters": list(trainer.model.peft_config),
           "callbacks": [type(c).__name__ for c in trainer.callback_handler.callbacks]}
    return _train_and_measure(trainer, clock, meter, a.warmup, out, a.cprofile)


# ---------------------------------------------------------------------------------------------
# preparing, in the parent


def demo_settings() -> dict:
    """The demo profile's settings, as the trl arm's GRPOConfig takes them."""
    from workbench.profile import load_profile

    p = load_profile(DEMO, [])
    t, g, lo, r = p.train, p.grpo, p.lora, p.rewards
    return dict(batch_size=t.batch_size, grad_accum=t.grad_accum, learning_rate=t.learning_rate,
                scheduler=t.scheduler, warmup_ratio=t.warmup_ratio, weight_decay=t.weight_decay,
                max_grad_norm=t.max_grad_norm, optimizer=t.optimizer, seed=t.seed,
                logging_steps=t.logging_steps, lora_r=lo.r, lora_alpha=lo.alpha,
                lora_dropout=lo.dropout, lora_bias=lo.bias, targets=list(lo.target_modules),
                num_generations=g.num_generations, max_completion_len=g.max_completion_len,
                temperature=g.temperature, top_p=g.top_p, beta=g.beta, loss=g.loss,
                scale_rewards=g.scale_rewards, mask_truncated=g.mask_truncated,
                reward_weights=list(r.weights), reward_functions=list(r.functions),
                precision=t.precision, max_prompt_len=g.max_prompt_len)


def prepare_prompts(folder: Path) -> tuple[Path, str]:
    """Our plan's training prompts (the demo's, 10% held out), in order, as TRL's conversational
    records with their reference column: the trl arm's dataset."""
    from workbench.profile import load_profile
    from workbench.train.plan import plan_run

    plan = plan_run(load_profile(DEMO, ["eval.after_training=false",
                                        f"train.runs_dir={json.dumps(str(folder / 'plan-runs'))}"]))
    rows = [{"prompt": r["prompt"], **r["columns"]} for r in plan.train_rows]
    path = folder / "prompts.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path, (f"the demo's {len(rows)} training prompts (assets/demo/translate_en_fr_prompts.jsonl "
                  f"less the 10% held out), in the plan's order")


def hidden_column_cost(data_file: Path, lengths=(15, 512, 2048), n: int = 20) -> list[dict]:
    """What fetching one generation batch costs in each arm's dataset, by prompt length: the
    rows taken from the dataset (`Dataset.__getitems__`, as the data loader does) and passed
    through accelerate's `send_to_device` (the data loader's device placement, which walks every
    list element). Ours: the dataset `grpo.to_dataset` builds (the prompt's token ids as a list
    column, and the hidden row and reference columns); trl: prompt + answer. The prompt ids are
    the demo prompt's, repeated to the length (their values do not matter). Medians of n, ms."""
    import datasets
    import torch
    from accelerate.utils import send_to_device
    from datasets import Dataset

    datasets.disable_progress_bars()

    try:
        from workbench.train.methods.grpo_trainer import to_dataset
    except ImportError:  # where it lived before
        from workbench.train.methods.grpo import to_dataset

    records = [json.loads(line) for line in data_file.read_text().splitlines() if line.strip()][:64]
    batch = 16
    out = []
    for length in lengths:
        ids = (list(range(4, 20)) * (length // 16 + 1))[:length]
        rows = [{"prompt": r["prompt"], "prompt_ids": ids, "source": f"prompts.jsonl:{i}",
                 "columns": {"answer": r["answer"]}} for i, r in enumerate(records)]
        ours = to_dataset(rows)
        # Since this benchmark's finding, to_dataset stores the ids as one JSON string, decoded
        # where they are used; before, a list column (the "ours" arm then measured that).
        stored_as_text = isinstance(ours[0]["_wb_prompt_ids"], str)
        as_text = ours if stored_as_text else ours.map(
            lambda x: {"_wb_prompt_ids": json.dumps(x["_wb_prompt_ids"])})
        trl = Dataset.from_list(records)
        arms = (("ours", ours, stored_as_text), ("ours-ids-as-text", as_text, True),
                ("trl", trl, False))
        times: dict[str, list] = {name: [] for name, _, _ in arms}
        for i in range(n):
            for name, ds, decode in (arms if i % 2 == 0 else arms[::-1]):
                picked = [(i * batch + j) % len(records) for j in range(batch)]
                t0, w0 = time.perf_counter(), _thread_waited()
                fetched = send_to_device(ds.__getitems__(picked), torch.device("cpu"))
                if decode:
                    [json.loads(x["_wb_prompt_ids"]) for x in fetched]
                times[name].append((time.perf_counter() - t0 - (_thread_waited() - w0)) * 1000)
        out.append({"length": length, "stored_as_text": stored_as_text,
                    **{f"{name}_ms": statistics.median(v) for name, v in times.items()}})
    return out


def _enable_cache(model_dir: Path) -> None:
    """random_model_dir writes use_cache = false (the DPO benchmark trains only); sampling
    without the KV cache would recompute the whole sequence at every token, so it is put back
    as the shipped checkpoints have it."""
    for name in ("config.json", "generation_config.json"):
        path = model_dir / name
        if path.is_file():
            data = json.loads(path.read_text())
            data["use_cache"] = True
            path.write_text(json.dumps(data, indent=2))


def run_pair(order: tuple[str, str], model_dir: Path, data_file: Path, steps: int, warmup: int,
             completion_len: int | None, threads: int, settings: dict,
             cprofile: dict | None) -> dict:
    """One run of each arm, both processes alive at once but never computing at the same time:
    they take turns a step each (Turn), the first of `order` starting, so each pair of steps
    meets the same load from the rest of the machine."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
        env["WORKBENCH_CPU_THREADS"] = str(threads)
    with tempfile.TemporaryDirectory(prefix="grpo-bench-") as tmp:
        pipes = {arm: Path(tmp) / f"turn-{arm}" for arm in order}
        for path in pipes.values():
            os.mkfifo(path)
        keep = {arm: os.open(path, os.O_RDWR) for arm, path in pipes.items()}  # the buffer lives
        procs = {}
        for arm in order:
            other = order[1] if arm == order[0] else order[0]
            folder = Path(tmp) / arm
            folder.mkdir()
            cmd = [sys.executable, __file__, "--child", arm, "--model-dir", str(model_dir),
                   "--data-file", str(data_file), "--steps", str(steps), "--warmup", str(warmup),
                   "--tmp", str(folder), "--result", str(folder / "result.json"),
                   "--settings", json.dumps(settings), "--turn-mine", str(pipes[arm]),
                   "--turn-other", str(pipes[other])]
            if completion_len:
                cmd += ["--completion-len", str(completion_len)]
            if cprofile:
                cmd += ["--cprofile", cprofile[arm]]
            procs[arm] = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True)
        load = os.getloadavg()
        os.write(keep[order[0]], b"x")  # the first run's turn
        out = {}
        try:
            for arm, proc in procs.items():
                output, _ = proc.communicate()
                result = Path(tmp) / arm / "result.json"
                if proc.returncode != 0 or not result.is_file():
                    raise SystemExit(f"{arm} run failed (exit {proc.returncode}):\n{output[-6000:]}")
                out[arm] = json.loads(result.read_text())
                out[arm]["load"] = load
                out[arm]["first"] = arm == order[0]
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
            for fd in keep.values():
                os.close(fd)
        return out


# ---------------------------------------------------------------------------------------------
# summarizing


def per_step(run: dict) -> dict:
    """One run's steady-state means, in seconds a step (own time unless said)."""
    n = len(run["step_own_s"])
    own = sum(run["step_own_s"]) / n
    part = {k: sum(p[k] for p in run["parts"][:n]) / n for k in PARTS}
    training = own - part["gen_score"]
    backward = part["train_step"] - part["prepare"] - part["loss_fwd"]
    other = own - part["train_step"] - part["log"] - part["optimizer"]
    return {"own": own, "wall": sum(run["step_s"]) / n, "cpu": sum(run["step_cpu_s"]) / n,
            "gen": part["gen_score"], "generate": part["generate"], "rewards": part["rewards"],
            "training": training, "fwd": part["loss_fwd"], "bwd": backward,
            "optimizer": part["optimizer"], "log": part["log"], "other": other,
            "mem": run["peak_rss_delta_mib"]}


def summarize(runs: list[dict]) -> dict:
    steps = [per_step(r) for r in runs]
    out = {k: statistics.median(s[k] for s in steps) for k in steps[0] if k != "mem"}
    mem = [s["mem"] for s in steps if s["mem"] is not None]
    out["mem"] = statistics.median(mem) if mem else None
    out["all"] = steps
    out["loads"] = [r["load"][0] for r in runs]
    return out


def paired(ours: list[dict], trl: list[dict]) -> dict:
    step, gen, train, mem = [], [], [], []
    for o, t in zip(ours, trl):
        po, pt = per_step(o), per_step(t)
        step.append(po["own"] / pt["own"])
        gen.append(po["gen"] / pt["gen"])
        train.append(po["training"] / pt["training"])
        if po["mem"] and pt["mem"]:
            mem.append(po["mem"] / pt["mem"])
    med = lambda xs: statistics.median(xs) if xs else None
    keys = ("own", "gen", "generate", "rewards", "training", "fwd", "bwd", "optimizer", "log", "other")
    delta = {k: med([per_step(o)[k] - per_step(t)[k] for o, t in zip(ours, trl)]) for k in keys}
    return {"step": med(step), "gen": med(gen), "train": med(train), "mem": med(mem),
            "all_step": step, "all_mem": mem, "delta": delta}


ARG_SKIP = {"output_dir", "logging_dir", "run_name", "hub_token", "push_to_hub_token",
            "accelerator_config", "deepspeed_plugin"}


def args_diff(ours: dict, trl: dict) -> list[str]:
    keys = sorted((set(ours) | set(trl)) - ARG_SKIP)
    return [f"`{k}`: ours {ours.get(k)!r}, trl {trl.get(k)!r}" for k in keys
            if ours.get(k) != trl.get(k)]


def memory_ok(o: dict, t: dict, pr: dict) -> tuple[bool, str]:
    """Peak memory within the target: the paired ratio at most TARGET, or the difference of the
    medians smaller than the spread between runs of one arm (allocator noise on a small delta)."""
    if pr["mem"] is None or pr["mem"] <= TARGET:
        return True, ""
    spread = max(max(s["mem"] for s in x["all"]) - min(s["mem"] for s in x["all"]) for x in (o, t))
    gap = o["mem"] - t["mem"]
    if gap <= spread:
        return True, (f" (+{gap:.0f} MiB, inside the {spread:.0f} MiB spread between runs of one "
                      "arm: noise, not a difference)")
    return False, ""


def same_training(ours: list[dict], trl: list[dict]) -> dict:
    """Did the two arms sample and score the same things? The first batch's prompt ids, and the
    logged reward / completion length step by step (the same seed, the same prompts in the same
    order and the same LoRA init give the same samples when nothing else differs)."""
    o, t = ours[0], trl[0]
    steps = sorted(set(map(int, o["logs"])) & set(map(int, t["logs"])))
    pick = lambda run, key: [run["logs"][str(s)].get(key) for s in steps]
    rewards_o, rewards_t = pick(o, "reward"), pick(t, "reward")
    return {"prompt_ids_same": o.get("prompt_ids") == t.get("prompt_ids"),
            "prompt_ids_o": (o.get("prompt_ids") or [[]])[0], "prompt_ids_t": (t.get("prompt_ids") or [[]])[0],
            "steps": steps, "reward_o": rewards_o, "reward_t": rewards_t,
            "len_o": pick(o, "completions/mean_length"), "len_t": pick(t, "completions/mean_length"),
            "loss_o": pick(o, "loss"), "loss_t": pick(t, "loss"),
            "same_rewards": all(x is not None and y is not None and abs(x - y) < 1e-6
                                for x, y in zip(rewards_o, rewards_t)),
            "runs_same": [all(abs(a - b) < 1e-6 for a, b in zip(
                [x["logs"][str(s)].get("reward", math.nan) for s in steps],
                [y["logs"][str(s)].get("reward", math.nan) for s in steps]))
                for x, y in zip(ours, trl)]}


def bookkeeping_lines(name: str, ours: list[dict], median_step: float) -> list[str]:
    total: dict[str, list] = {}
    for r in ours:
        for k, (n, wall, own) in r["bookkeeping"].items():
            cell = total.setdefault(k, [0, 0.0, 0.0])
            cell[0] += n
            cell[1] += wall
            cell[2] += own
    steps = sum(r["steps"] for r in ours)
    lines = [f"- {name} ({steps} steps over {len(ours)} runs, warm-up included; median step "
             f"{median_step * 1000:.0f} ms own time):"]
    for k, (n, wall, own) in total.items():
        lines.append(f"  - {k}: {n} calls, {own * 1000 / max(n, 1):.2f} ms a call own time "
                     f"({wall * 1000 / max(n, 1):.2f} wall), {own * 1000 / steps:.2f} ms a step")
    hooks = sum(v[2] for k, v in total.items() if k.startswith("RunRecorder.") or k.startswith("trainer."))
    lines.append(f"  - the recorder's hooks and the samples event in all: {hooks * 1000 / steps:.2f} ms "
                 f"a step = {hooks / steps / median_step:.2%} of the median step")
    ev = ours[0].get("events", {})
    if ev:
        lines.append("  - events.jsonl of one run: " + ", ".join(
            f"{k} {n} ({size / 1024:.1f} KiB)" for k, (n, size) in sorted(ev.items())))
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="tiny,smollm2-360m",
                    help="comma-separated: tiny and/or names under assets/configs (random init)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps a run (tiny model)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed first steps a run (tiny)")
    ap.add_argument("--repeats", type=int, default=5, help="runs an arm (tiny model)")
    ap.add_argument("--big-steps", type=int, default=2, help="timed steps a run (random-init models)")
    ap.add_argument("--big-warmup", type=int, default=1, help="untimed steps (random-init models)")
    ap.add_argument("--big-repeats", type=int, default=3, help="runs an arm (random-init models)")
    ap.add_argument("--big-completion-len", type=int, default=8,
                    help="grpo.max_completion_len for the random-init models")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads a run (OMP_NUM_THREADS); 1 by default: 2 shared cores")
    ap.add_argument("--cprofile", type=Path,
                    help="a folder: each run also writes a cProfile of trainer.train() there "
                         "(ARM-MODEL-RUN.prof; the profiler's overhead is in the timings)")
    ap.add_argument("--quick", action="store_true",
                    help="the smallest run (tests): tiny, 2 timed steps after 1, one run an arm")
    ap.add_argument("--write", type=Path)
    ap.add_argument("--save-results", type=Path,
                    help="also write every measurement as JSON (to re-render with --report-from)")
    ap.add_argument("--report-from", type=Path,
                    help="measure nothing: render the report from a --save-results file")
    ap.add_argument("--child", choices=("ours", "trl"), help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    ap.add_argument("--data-file", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--settings", help=argparse.SUPPRESS)
    ap.add_argument("--completion-len", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--turn-mine", help=argparse.SUPPRESS)
    ap.add_argument("--turn-other", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.child:
        sys.path.insert(0, str(ROOT))
        a.cprofile = str(a.cprofile) if a.cprofile else None
        out = (child_trl if a.child == "trl" else child_ours)(a)
        Path(a.result).write_text(json.dumps(out))
        return 0
    if a.report_from:
        saved = json.loads(a.report_from.read_text())
        text = report(**saved)
        print(text)
        if a.write:
            a.write.write_text(text)
        return 0
    if a.quick:
        a.models, a.steps, a.warmup, a.repeats = "tiny", 2, 1, 1
    if min(a.warmup, a.big_warmup) < 1 or min(a.steps, a.big_steps, a.repeats, a.big_repeats) < 1:
        ap.error("warm-up, steps and repeats must be at least 1")
    if a.cprofile:
        a.cprofile.mkdir(parents=True, exist_ok=True)

    command = "HF_HUB_OFFLINE=1 python bench/grpo_step.py " + " ".join(sys.argv[1:])
    started = time.time()
    settings = demo_settings()
    results = []
    with tempfile.TemporaryDirectory(prefix="grpo-bench-") as tmp:
        folder = Path(tmp)
        data_file, data_what = prepare_prompts(folder)
        for name in [m.strip() for m in a.models.split(",") if m.strip()]:
            if name == "tiny":
                model_dir, what = TINY, "assets/tiny-model (bundled)"
                steps, warmup, repeats, clen = a.steps, a.warmup, a.repeats, None
            else:
                print(f"building {name} ...", flush=True)
                model_dir, what = random_model_dir(name, folder)
                _enable_cache(model_dir)
                steps, warmup, repeats, clen = a.big_steps, a.big_warmup, a.big_repeats, a.big_completion_len
            runs: dict[str, list] = {"ours": [], "trl": []}
            for rep in range(repeats):
                order = ("ours", "trl") if rep % 2 == 0 else ("trl", "ours")
                prof = ({arm: str(a.cprofile / f"{arm}-{name}-{rep + 1}.prof") for arm in order}
                        if a.cprofile else None)
                done = run_pair(order, model_dir, data_file, steps, warmup, clen, a.threads,
                                settings, prof)
                for arm in ("ours", "trl"):
                    r = done[arm]
                    runs[arm].append(r)
                    p = per_step(r)
                    print(f"{name} {arm} #{rep + 1} (load {r['load'][0]:.1f}): {p['own']:.3f} s/step own "
                          f"({p['wall']:.3f} wall), generation {p['gen']:.3f} s = {p['gen'] / p['own']:.0%}, "
                          f"training {p['training']:.3f} s, peak RSS +{p['mem'] or 0:.0f} MiB",
                          flush=True)
            results.append({
                "name": name, "what": what, "steps": steps, "warmup": warmup,
                "completion_len": clen or settings["max_completion_len"],
                "ours": summarize(runs["ours"]), "trl": summarize(runs["trl"]),
                "paired": paired(runs["ours"], runs["trl"]),
                "same": same_training(runs["ours"], runs["trl"]),
                "diff": args_diff(runs["ours"][0]["args"], runs["trl"][0]["args"]),
                "raw": runs})
        fetch = hidden_column_cost(data_file)
    saved = dict(results=results, s=settings, command=command, data_what=data_what,
                 wall=time.time() - started, fetch=fetch,
                 date=f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    if a.save_results:
        a.save_results.write_text(json.dumps(saved))
    text = report(**saved)
    print(text)
    if a.write:
        a.write.write_text(text)
    ok = all(r["paired"]["step"] <= TARGET and memory_ok(r["ours"], r["trl"], r["paired"])[0]
             for r in results)
    return 0 if ok else 1


def _unset(value) -> str:
    return "unset (generate's default: True)" if value is None else str(value)


def report(results: list[dict], s: dict, command: str, data_what: str, wall: float,
           fetch: list[dict], date: str) -> str:
    from _shared import cpu_machine

    versions = ", ".join(f"{n} {metadata.version(n)}" for n in
                         ("torch", "transformers", "trl", "peft", "accelerate", "datasets"))
    loads = [x for r in results for arm in ("ours", "trl") for x in r[arm]["loads"]]
    threads = results[0]["raw"]["ours"][0]["threads"] if results else "?"
    lines = [
        "# GRPO step: the workbench's trainer vs TRL's GRPOTrainer used directly",
        "",
        f"- date: {date}",
        f"- machine: {cpu_machine()}, no GPU; torch threads a run: {threads}; other engineers' "
        f"tests shared the two cores (1-minute load average {min(loads, default=0):.1f} to "
        f"{max(loads, default=0):.1f} at the runs' starts, each run's below)",
        f"- Python {platform.python_version()}; {versions}",
        f"- command: `{command}` (wall {wall / 60:.1f} min)",
        f"- data: {data_what}; the demo's settings for both (profiles/grpo-demo.toml): batch "
        f"{s['batch_size']} x grad_accum {s['grad_accum']} = "
        f"{s['batch_size'] * s['grad_accum'] // s['num_generations']} "
        f"prompts x {s['num_generations']} completions a step, one generation a step, "
        f"{s['precision']}, LoRA r {s['lora_r']} alpha {s['lora_alpha']} dropout {s['lora_dropout']} on "
        f"{', '.join(s['targets'])}, lr {s['learning_rate']} {s['scheduler']} (warmup {s['warmup_ratio']}), "
        f"{s['optimizer']}, temperature {s['temperature']}, top_p {s['top_p']}, beta {s['beta']}, loss "
        f"{s['loss']}, scale_rewards {s['scale_rewards']}, rewards "
        f"{', '.join(f.replace(str(ROOT) + os.sep, '') for f in s['reward_functions'])} "
        f"weighted {s['reward_weights']}, logging every {s['logging_steps']} steps (and step 1), no "
        "eval, no checkpoint inside the run, gradient checkpointing off",
        "- arms, one process a run; a repeat runs one of each, both alive at once but taking turns "
        "a step each (ours, trl, ours, trl ...; the first arm alternates between repeats), so the "
        "two never compete for the cores and each pair of steps meets the same outside load: "
        "**ours** = the workbench's build_trainer (TRL's GRPOTrainer under RunDirTrainer, "
        "pre-tokenized prompts, checked reward wrapper, RunRecorder, samples event); **trl** = "
        "GRPOTrainer + GRPOConfig + peft_config used directly on conversational prompts, the same "
        "reward functions as plain functions",
        "- s/step: mean over a run's steady-state steps (each from getting the turn at "
        "`on_step_begin` to handing it over at the next: the step, its logging and the next "
        "batch's fetch; warm-up and last step left out), median over the runs. **own** = wall "
        "less the time the "
        "training loop's thread waited for a core (/proc/thread-self/schedstat): what the step "
        "takes alone on its core, the figure compared; wall: the raw clock; CPU: process CPU time",
        "- generation = own time in `_generate_and_score_completions` (prompt ids, `_generate`, "
        "decoding, `_calculate_rewards`, advantages and metrics); of which `_generate` (sampling) and "
        "`_calculate_rewards`; training = the step less generation: `compute_loss` (forward), "
        "backward (`training_step` less `_prepare_inputs` and `compute_loss`), the optimizer's "
        "`step`, `log` (logging, our `on_log` and samples event), other (clipping, scheduler, "
        "step-end callbacks, data loader)",
        "- peak memory: peak RSS during `trainer.train()` above the RSS just before it (VmHWM reset "
        "through /proc/self/clear_refs)",
        "",
        "| model | arm | timed steps (warm-up) x runs | s/step own | s/step wall | s/step CPU | "
        "generation s (share) | of which sampling s | of which rewards ms | training s (share) | "
        "fwd / bwd / optimizer / log / other s | peak RSS delta | vs trl: s/step | vs trl: generation | "
        "vs trl: training | vs trl: peak RSS |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for arm in ("ours", "trl"):
            o, pr = r[arm], r["paired"]
            vs = ("- | - | - | -" if arm == "trl" else
                  f"**{pr['step']:.3f}x** | {pr['gen']:.3f}x | {pr['train']:.3f}x | "
                  + (f"{pr['mem']:.2f}x" if pr["mem"] else "n/a"))
            mem = f"{o['mem']:.0f} MiB" if o["mem"] is not None else "n/a"
            label = r["what"] + (f", completions up to {r['completion_len']} tokens")
            lines.append(
                f"| {label} | {arm} | {r['steps']} ({r['warmup']}) x {len(o['all'])} | {o['own']:.3f} | "
                f"{o['wall']:.3f} | {o['cpu']:.3f} | {o['gen']:.3f} ({o['gen'] / o['own']:.0%}) | "
                f"{o['generate']:.3f} | {o['rewards'] * 1000:.1f} | {o['training']:.3f} "
                f"({o['training'] / o['own']:.0%}) | {o['fwd']:.3f} / {o['bwd']:.3f} / "
                f"{o['optimizer']:.3f} / {o['log']:.3f} / {o['other']:.3f} | {mem} | {vs} |")
    lines += ["", "The vs-trl columns are medians of the paired ratios (run i of ours against run i "
              "of trl, the two runs of a repeat); the other columns are medians over the runs, each "
              "column on its own (so the parts need not add up to the median step).", "",
              "Every run, in the order run (s/step own; wall; generation share; peak RSS delta MiB; "
              "1-minute load average at its start):", ""]
    for r in results:
        for arm in ("ours", "trl"):
            x = r[arm]
            lines.append(f"- {r['name']} {arm}: " + "; ".join([
                ", ".join(f"{s['own']:.3f}" for s in x["all"]),
                ", ".join(f"{s['wall']:.3f}" for s in x["all"]),
                ", ".join(f"{s['gen'] / s['own']:.0%}" for s in x["all"]),
                ", ".join(f"{s['mem']:.0f}" if s["mem"] is not None else "n/a" for s in x["all"]),
                "load " + ", ".join(f"{v:.1f}" for v in x["loads"])]))
        lines.append(f"- {r['name']} ours / trl, pair by pair: s/step "
                     + ", ".join(f"{v:.3f}" for v in r["paired"]["all_step"]) + "; peak RSS "
                     + ", ".join(f"{v:.2f}" for v in r["paired"]["all_mem"]))
        d = r["paired"]["delta"]
        lines.append(f"- {r['name']} where the difference is, ours - trl in ms a step (median over the "
                     "pairs, each part on its own): "
                     + ", ".join(f"{label} {d[k] * 1000:+.1f}" for k, label in (
                         ("own", "the step"), ("gen", "generation"), ("generate", "of which sampling"),
                         ("rewards", "of which rewards"), ("training", "training"), ("fwd", "forward"),
                         ("bwd", "backward"), ("optimizer", "optimizer"), ("log", "log"),
                         ("other", "other"))))
    lines += ["", "## Do the two train the same thing?", ""]
    for r in results:
        sm = r["same"]
        o, t = r["raw"]["ours"][0], r["raw"]["trl"][0]
        fmt = lambda xs: ", ".join("?" if v is None else f"{v:.3f}" for v in xs[:8])
        lines.append(
            f"- {r['name']}: prompt token ids of the first generation batch "
            f"{'identical' if sm['prompt_ids_same'] else 'DIFFER'} (ours {sm['prompt_ids_o'][:20]}, "
            f"trl {sm['prompt_ids_t'][:20]}); logged mean reward at steps {sm['steps'][:8]}: ours "
            f"[{fmt(sm['reward_o'])}], trl [{fmt(sm['reward_t'])}] "
            f"({'identical' if sm['same_rewards'] else 'differ'} in the first pair of runs; identical "
            f"in {sum(sm['runs_same'])} of {len(sm['runs_same'])} pairs); completion length ours "
            f"[{fmt(sm['len_o'])}], trl [{fmt(sm['len_t'])}]; loss ours [{fmt(sm['loss_o'])}], trl "
            f"[{fmt(sm['loss_t'])}]; attention ours {o['attn']}, trl {t['attn']}; torch threads ours "
            f"{o['threads']}, trl {t['threads']}; model.config.use_cache ours {o['use_cache']}, trl "
            f"{t['use_cache']}; generation_config.use_cache (sampling with the KV cache) ours "
            f"{_unset(o['sample_cache'])}, trl {_unset(t['sample_cache'])}; adapters ours {o['adapters']}, trl "
            f"{t['adapters']}; callbacks ours {o['callbacks']}, trl {t['callbacks']}")
    lines += ["", "## What ours does that TRL used directly does not", "",
              "Timed inside our runs (RunRecorder's hooks, the samples event and the run folder's "
              "writes wrapped; the writes are inside the hooks' time, the hooks and the samples event "
              "inside the steps'):", ""]
    for r in results:
        lines += bookkeeping_lines(r["name"], r["raw"]["ours"], r["ours"]["own"])
    if fetch:
        lines += ["", "Fetching one generation batch (16 rows: 4 prompts x 4) from each arm's dataset and "
                  "through accelerate's `send_to_device`, as the data loader does "
                  f"{s['grad_accum']} times a step (grad_accum), by prompt length (own time, median "
                  "of 20, ms): " + "; ".join(
                      f"{x['length']} tokens: ours {x['ours_ms']:.2f}, trl {x['trl_ms']:.2f}, ours with "
                      f"the ids as one JSON string (decoded after the fetch) {x['ours-ids-as-text_ms']:.2f}"
                      for x in fetch) + ". Ours carries each prompt's token ids as a list column "
                  "(`_wb_prompt_ids`, `to_dataset` in workbench/train/methods/grpo_trainer.py), and "
                  "send_to_device walks a list element by element."]
    if results:
        lines += ["", "GRPOConfig fields that differ (ours / trl), from the first model's runs:", ""]
        lines += [f"- {d}" for d in results[0]["diff"]] or ["- none"]
    lines += ["", "## Verdict", "",
              f"Target: ours no slower than {TARGET}x TRL used directly, by own time a step and by "
              "peak memory (peak RSS delta); medians of the paired ratios.", ""]
    for r in results:
        pr = r["paired"]
        mem_ok, note = memory_ok(r["ours"], r["trl"], pr)
        ok = pr["step"] <= TARGET and mem_ok
        mem = f"peak RSS {pr['mem']:.2f}x{note}" if pr["mem"] else "memory n/a"
        lines.append(f"- {r['name']}: {pr['step']:.3f}x TRL's time a step (generation "
                     f"{pr['gen']:.3f}x, training {pr['train']:.3f}x), {mem}: "
                     f"**{'within' if ok else 'MISSES'} the {TARGET}x target**")
    lines += findings(results, fetch, s)
    return "\n".join(lines) + "\n"


def _hooks(ours: list[dict]) -> tuple[float, int, int]:
    """The recorder's hooks and the samples event, own seconds a step over all our runs' steps;
    the status writes and the steps."""
    steps = sum(r["steps"] for r in ours)
    own = sum(v[2] for r in ours for k, v in r["bookkeeping"].items()
              if k.startswith("RunRecorder.") or k.startswith("trainer."))
    writes = sum(r["bookkeeping"].get("RunDir.write_status", [0])[0] for r in ours)
    return own / max(steps, 1), writes, steps


def findings(results: list[dict], fetch: list[dict], s: dict) -> list[str]:
    """Where ours differs from TRL used directly, from what was measured, and what to change."""
    out = ["", "## Where ours differs, and what to change", ""]
    if not results:
        return out
    gen = "; ".join(f"{r['name']} {r['paired']['gen']:.3f}x (ours - trl {r['paired']['delta']['gen'] * 1000:+.1f} "
                    f"ms a step)" for r in results)
    same = all(r["same"]["prompt_ids_same"] and all(r["same"]["runs_same"]) for r in results)
    out.append("1. **Generation: the same samples, no extra cost.** "
               + ("In every pair the two arms logged the same rewards, completion lengths and losses "
                  "step by step: the same prompt ids, the same sampled tokens, the same updates. "
                  if same else "The two arms did NOT sample the same things in every pair (see above). ")
               + "Ours hands TRL the ids the run's chat format rendered once (`_tokenize_prompts` "
               "returns them), where TRL used directly renders the chat template for every "
               f"generation batch; generation time ours / trl: {gen}.")
    r = results[0]
    hooks, writes, steps = _hooks(r["raw"]["ours"])
    d = r["paired"]["delta"]
    out.append(f"2. **Our bookkeeping: {hooks * 1000:.1f} ms a step on {r['name']} "
               f"({hooks / r['ours']['own']:.1%} of its step), within the target.** The RunRecorder's "
               "hooks and the samples event (timed above), nearly all of it status.json writes, "
               f"each fsynced ({writes} in {steps} steps: one at every log from `on_log`, and at most "
               "one a second from `on_step_end`). Ours - trl on the same pairs: the step "
               f"{d['own'] * 1000:+.1f} ms, of which logging {d['log'] * 1000:+.1f} ms and other "
               f"(step-end callbacks, clipping, data loader) {d['other'] * 1000:+.1f} ms; the forward "
               f"{d['fwd'] * 1000:+.1f} ms and backward {d['bwd'] * 1000:+.1f} ms are the same "
               "computation (identical losses), their difference is noise. Nothing has to change for "
               "the target; to trim it, as bench/preference_step.md says for DPO: in "
               "`RunRecorder.on_log` (workbench/train/trainer.py) keep the loss for the throttled "
               "status write of `on_step_end` instead of writing status.json at every log.")
    if fetch and not fetch[0].get("stored_as_text"):
        big = fetch[-1]
        per_step = big["ours_ms"] * s["grad_accum"]
        out.append(
            f"3. **The prompt ids ride in the dataset as a list column, and cost with the prompt's "
            f"length.** `to_dataset` (workbench/train/methods/grpo_trainer.py) stores each prompt's "
            "ids as `_wb_prompt_ids`; the data loader's device placement (accelerate's "
            "`send_to_device`) walks every list element of every fetched row, "
            f"{s['grad_accum']} fetches a step (grad_accum). Measured above: "
            f"{fetch[0]['ours_ms']:.2f} ms a fetch on the demo's {fetch[0]['length']}-token prompts "
            f"(trl {fetch[0]['trl_ms']:.2f}), but {big['ours_ms']:.1f} ms at {big['length']} tokens "
            f"(trl {big['trl_ms']:.2f}): {per_step:.0f} ms a step of Python on the training loop's "
            "thread, growing with the prompt length and the batch, on a GPU as on the CPU. Change: "
            "in `to_dataset` store the ids as one string (`json.dumps(r[\"prompt_ids\"])`, as "
            "`_wb_columns` already is) and decode it in "
            "`_PretokenizedGRPOTrainer._generate_and_score_completions` (`json.loads(x[PROMPT_IDS])` "
            f"instead of `list(x[PROMPT_IDS])`): {big['ours-ids-as-text_ms']:.2f} ms a fetch at "
            f"{big['length']} tokens, decoding included. (Or keep {{row: ids}} on the trainer, looked "
            "up by `_wb_row`, and drop the column.) Nothing else reads the column: the reward "
            "wrapper pops it.")
    return out


if __name__ == "__main__":
    sys.exit(main())
