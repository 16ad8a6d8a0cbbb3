"""Everything decided and checked before a run folder is written: device, precision, the
tokenizer, the data rendered exactly as it will be trained. A mistake in the profile, the
model path or the data ends here, with a message for people, and leaves nothing on disk."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from workbench.profile import Profile
from workbench.train.packing import PackingChoice


class RunError(Exception):
    """A problem a person can fix; `hint` says how."""

    def __init__(self, message: str, hint: str = "", kind: str = "config"):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.kind = kind

    def __str__(self) -> str:
        return self.message + (f"\n  hint: {self.hint}" if self.hint else "")


class NonFiniteLoss(RuntimeError):
    def __init__(self, step: int, value: float):
        super().__init__(f"the training loss became {value} at step {step}")
        self.step = step
        self.value = value


@dataclass
class Plan:
    profile: Profile
    device: str  # "cpu" | "cuda"
    precision: str  # "bf16" | "fp16" | "fp32"
    gradient_checkpointing: bool
    tokenizer: Any
    train_rows: list[dict]
    eval_rows: list[dict]
    dataset_hash: str
    manifest_hash: str | None = None  # when data.train is a folder saved by `workbench data clean`
    notes: list[str] = field(default_factory=list)  # things a person should know, shown once
    start_adapter: str | None = None  # model.adapter resolved: the adapter training starts from
    # Where the tokenized data came from: tokenized now, or read back from the tokenized-data
    # cache (train/data_cache.py); said in the console and the run's log, not a note.
    data_source: str = ""
    # How supervised rows are batched (train/packing.py); confirmed on the loaded model.
    packing: PackingChoice = field(default_factory=lambda: PackingChoice("padded"))
    kernels: Any = None  # train/kernels.py KernelChoice for this device: `kernel_choice()`
    # data.streaming: the training rows are read as training goes (train/streaming.py
    # StreamingData); train_rows then holds only a sample rendered at plan time.
    stream: Any = None
    sources: list[dict] = field(default_factory=list)  # a mixture's sources (data/mixture.py)

    @property
    def method(self):
        from workbench.train.methods import get_method

        return get_method(self.profile.train.method)

    def kernel_choice(self):
        """Attention, kernels and optimizer for this run's device, resolved once."""
        if self.kernels is None:
            self.kernels = kernels_for_run(self.profile, self.device)
        return self.kernels

    @property
    def evaluates(self) -> bool:
        return bool(self.eval_rows) and self.profile.train.eval_steps > 0


def resolve_hardware(profile: Profile) -> tuple[str, str, bool]:
    import torch

    t = profile.train
    has_cuda = torch.cuda.is_available()
    if t.device == "cuda" and not has_cuda:
        raise RunError("train.device = \"cuda\" but torch sees no CUDA GPU",
                       hint="check `nvidia-smi` and that torch is a CUDA build "
                            "(`python -c 'import torch; print(torch.version.cuda)'`), "
                            "or set train.device = \"auto\"")
    device = "cuda" if t.device == "cuda" or (t.device == "auto" and has_cuda) else "cpu"
    if profile.lora.method == "qlora" and device != "cuda":
        raise RunError("lora.method = \"qlora\" needs an NVIDIA GPU: bitsandbytes 4-bit "
                       "training does not run on the CPU",
                       hint="use lora.method = \"lora\" on this machine (e.g. --set lora.method=lora)")
    precision = t.precision
    if precision == "auto":
        if device == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "fp32"
    if precision == "fp16" and device == "cpu":
        raise RunError("train.precision = \"fp16\" is not supported on the CPU",
                       hint="use \"fp32\" (or \"bf16\" on CPUs that support it), or \"auto\"")
    if precision == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported():
        raise RunError("train.precision = \"bf16\" but this GPU has no bf16 support",
                       hint="use \"fp16\" or \"auto\"")
    gc = t.gradient_checkpointing
    gradient_checkpointing = (device == "cuda") if gc == "auto" else bool(gc)
    return device, precision, gradient_checkpointing


def _resolve_hub(profile: Profile, needs: tuple[str, ...]) -> None:
    """Before transformers touches the hub: without a network it would retry for about a
    minute; this decides offline in one short probe and fails at once if nothing is cached."""
    from workbench.hub import HubUnavailable, resolve_offline

    m = profile.model
    try:
        resolve_offline(m.name_or_path, m.revision, needs,
                        label=f"model.name_or_path = {m.name_or_path!r}")
    except HubUnavailable as exc:
        raise RunError(exc.message, hint=f"{exc.hint}; or point model.name_or_path at a local "
                                         "model folder") from None


def load_tokenizer(profile: Profile):
    from workbench.hub import TOKENIZER

    _resolve_hub(profile, TOKENIZER)
    from transformers import AutoTokenizer

    m = profile.model
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            m.name_or_path, revision=m.revision, trust_remote_code=m.trust_remote_code)
    except (OSError, ValueError) as exc:
        raise RunError(
            f"could not load the tokenizer of model.name_or_path = {m.name_or_path!r}: "
            f"{str(exc).splitlines()[0]}",
            hint="point model.name_or_path at a local model folder, or a hub id that is in the "
                 "Hugging Face cache (with HF_HUB_OFFLINE=1 nothing is downloaded)") from exc
    if m.chat_template:
        tokenizer.chat_template = Path(m.chat_template).read_text(encoding="utf-8")
        # Named in every template message, so an error points at the file the user chose.
        tokenizer.workbench_template_source = f"in {m.chat_template} (model.chat_template)"
    if tokenizer.pad_token is None:
        # Padding positions are masked out of attention and loss, so any token id will do;
        # eos is the conventional choice and needs no new embedding row.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def check_model_config(profile: Profile) -> None:
    """Read config.json only (no weights): a wrong path or an architecture this
    transformers does not know fails here, before anything is written."""
    from workbench.hub import CONFIG

    _resolve_hub(profile, CONFIG)
    from transformers import AutoConfig

    m = profile.model
    try:
        AutoConfig.from_pretrained(m.name_or_path, revision=m.revision,
                                   trust_remote_code=m.trust_remote_code)
    except (OSError, ValueError, KeyError) as exc:
        hint = "point model.name_or_path at a folder with config.json, or a cached hub id"
        if "trust_remote_code" in str(exc):
            hint = ("this model ships its own code; read it, then set "
                    "model.trust_remote_code = true in the profile if you trust it")
        raise RunError(f"could not read the model config of {m.name_or_path!r}: "
                       f"{str(exc).splitlines()[0]}", hint=hint) from exc


def attention_implementation(profile: Profile, requested: str | None = None) -> tuple[str, str]:
    """(the attention to load the model with, a note when it is not the profile's). Asking
    transformers 5 for "sdpa" on a model without an SDPA path (Gemma-2) is an error, and
    eager attention is what that model runs; the estimate counts the same. `requested`: the
    attention train/kernels.py resolved (default: the profile's)."""
    from workbench.estimate.memory import runs_eager

    requested = requested or profile.model.attn_implementation
    if requested != "sdpa":
        return requested, ""
    from transformers import AutoConfig

    m = profile.model
    model_type = AutoConfig.from_pretrained(m.name_or_path, revision=m.revision,
                                            trust_remote_code=m.trust_remote_code).model_type
    if runs_eager(model_type):
        return "eager", (f"attention: {model_type} has no SDPA path in transformers, so the model "
                         "runs eager attention (model.attn_implementation = \"sdpa\" is not possible)")
    return requested, ""


REPORTER_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",),
                     "mlflow": ("mlflow",)}


def check_reporters(report_to: list[str]) -> None:
    """transformers fails deep inside Trainer set-up when a reporting package is missing;
    say so up front. Their credentials (WANDB_API_KEY, ...) stay in the environment."""
    import importlib.util

    for name in report_to:
        packages = REPORTER_PACKAGES.get(name, ())
        if packages and not any(importlib.util.find_spec(p) for p in packages):
            raise RunError(f"train.report_to includes {name!r} but the {packages[0]!r} package "
                           "is not installed",
                           hint=f"pip install {packages[0]}, or remove it from train.report_to")


@dataclass
class TrainingData:
    train: list[dict]
    validation: list[dict]
    dataset_hash: str
    manifest_hash: str | None
    notes: list[str]
    # A mixture's sources as the run records them (mixture.SourceDraw.to_dict); [] for one source.
    sources: list[dict] = field(default_factory=list)


def load_training_data(profile: Profile, log: Callable[[str], None] = lambda s: None) -> TrainingData:
    """The records a run trains and evaluates on, through the data engine: a folder saved by
    `workbench data clean` (its train / validation splits), or a file / dataset id with a
    validation file or a held-out share split off without near-duplicate leakage; or the
    mixture of a profile's [[data.sources]] (data/mixture.py: held out per source, then drawn
    to the weights with train.seed)."""
    from workbench.data import LoadReport, dataset_hash, load_records
    from workbench.data.sources import is_mixture

    if is_mixture(profile):
        return _load_mixture(profile, log)
    from workbench.data.save import is_saved_dataset, manifest_hash
    from workbench.data.split import split_records

    d, t = profile.data, profile.train
    report = LoadReport()
    kw = dict(format=d.format, system_prompt=d.system_prompt, on_bad_line=d.on_bad_rows,
              report=report, columns=d.columns or None, encoding=d.encoding or None)
    notes: list[str] = []
    manifest = None
    if is_saved_dataset(d.train):
        folder = Path(d.train)
        manifest = manifest_hash(folder)
        log(f"loading the saved splits in {folder} (manifest {manifest[:12]})")
        train = load_records(folder / "train.jsonl", **kw)
        hashed = [folder / "manifest.json"]
        val_file = Path(d.validation) if d.validation else folder / "validation.jsonl"
        validation = load_records(val_file, **kw) if val_file.exists() else []
        notes.append(f"data: saved dataset {folder.name} (manifest sha256 {manifest[:12]}...)")
    else:
        log(f"loading {d.train}")
        train = load_records(d.train, **kw)
        hashed = [d.train]
        if d.validation:
            validation = load_records(d.validation, **kw)
            hashed.append(d.validation)
        elif d.validation_split > 0 and len(train) > 1:
            # Held out whatever train.eval_steps is: the evaluation after training scores them.
            result = split_records(train, fractions=(1 - d.validation_split, d.validation_split, 0.0),
                                   seed=t.seed)
            train, validation = result.train, result.validation
        else:
            validation = []
    if report.skipped:
        shown = "; ".join(f"{report.location(f, r)}: {why}" for f, r, why in report.skipped[:5])
        notes.append(f"data: skipped {len(report.skipped)} bad rows (data.on_bad_rows = \"skip\"): "
                     f"{shown}{' ...' if len(report.skipped) > 5 else ''}")
    # A Hub dataset is pinned by the commit its rows came from: hashed with it, and recorded.
    sources = [{"label": name, "name": name, "revision_resolved": commit}
               for name, commit in report.revisions.items() if commit]
    for source in sources:
        notes.append(f"data: {source['name']} read at commit {source['revision_resolved']}")
    return TrainingData(train, validation, dataset_hash(hashed, revisions=report.revisions),
                        manifest, notes, sources=sources)


def _load_mixture(profile: Profile, log: Callable[[str], None]) -> TrainingData:
    from workbench.data import load_records
    from workbench.data.mixture import load_mixture

    d = profile.data
    mixture = load_mixture(profile, log)
    validation, data_hash = mixture.validation, mixture.dataset_hash
    if d.validation:  # one validation file for the whole mixture, in the [data] section's format
        import hashlib

        from workbench.data import dataset_hash

        validation = load_records(d.validation, format=d.format, system_prompt=d.system_prompt,
                                  on_bad_line=d.on_bad_rows, columns=d.columns or None,
                                  encoding=d.encoding or None)
        data_hash = hashlib.sha256(f"{data_hash} {dataset_hash(d.validation)}".encode()).hexdigest()
    return TrainingData(mixture.train, validation, data_hash, None, mixture.notes,
                        sources=mixture.manifest())


def plan_run(profile: Profile, log: Callable[[str], None] = lambda s: None) -> Plan:
    from workbench.data.render import check_template
    from workbench.profile import ProfileError, check_paths, paths_hint
    from workbench.train.data_cache import prepare_data_cached
    from workbench.train.methods import get_method

    issues = check_paths(profile)
    if issues:
        raise RunError(str(ProfileError(issues)), hint=paths_hint(issues))
    t = profile.train
    method = get_method(t.method)
    check_reporters(t.report_to)
    device, precision, gc = resolve_hardware(profile)
    check_model_config(profile)
    adapter = resolve_start_adapter(profile)
    tokenizer = load_tokenizer(profile)
    fmt = profile_chat_format(tokenizer, profile)
    notes = [f"chat template: {p}" for p in check_template(tokenizer, fmt)]
    from workbench.train.streaming import streams

    stream = None
    if streams(profile):  # rows read one by one as training goes: nothing to cache
        from workbench.train.streaming import StreamingError, prepare_stream

        try:
            data, stream, (held, scanned) = prepare_stream(method, profile, tokenizer, fmt, log)
        except StreamingError as exc:
            raise RunError(exc.message, hint=exc.hint, kind=exc.kind) from None
        data_source = "streaming: rows are rendered and tokenized as training reads them"
    else:
        data, data_source = prepare_data_cached(method, profile, tokenizer, fmt, log)
    notes += [f"chat template: {n}" for n in fmt.notes]
    kernels = kernels_for_run(profile, device)
    notes += kernels.notes  # kernels, attention, optimizer fallbacks
    if method.name != "sft":
        notes.append(f"method: {method.title}: {method.summary}")
    if adapter:
        notes.append(f"starting from the adapter in {adapter}")
    notes += data.notes
    packing = choose_packing(profile, data.train_rows, kernels.attn_implementation)
    if stream is not None:
        stream.packed = packing.packed  # said in its note; the model's proof may turn it off
        notes.append(stream.describe(held, scanned))
        if not packing.packed and packing.why:
            notes.append(packing.why)
    elif packing.why or packing.packed:
        notes.append(packing.why)
    notes.append(_describe_evaluation(profile, data.held_out, method.evaluation))
    return Plan(profile=profile, device=device, precision=precision, gradient_checkpointing=gc,
                tokenizer=tokenizer, train_rows=data.train_rows, eval_rows=data.eval_rows,
                dataset_hash=data.dataset_hash, manifest_hash=data.manifest_hash, notes=notes,
                start_adapter=adapter, packing=packing, kernels=kernels, data_source=data_source,
                sources=data.sources, stream=stream)


def kernels_for_run(profile: Profile, device: str):
    """Attention, kernels and optimizer (train/kernels.py) for a run on `device`; a kernel the
    GPU lacks is a RunError, and a model without an SDPA path loads eager."""
    from dataclasses import replace

    from workbench.train.kernels import KernelError, resolve_for_profile

    try:
        choice = resolve_for_profile(profile, device)
    except KernelError as exc:
        raise RunError(exc.message, hint=exc.hint) from None
    if choice.attn_implementation == "sdpa":
        attn, note = attention_implementation(profile, requested="sdpa")
        if attn != "sdpa":
            choice = replace(choice, attn_implementation=attn, notes=choice.notes + (note,))
    return choice


def choose_packing(profile: Profile, rows: list[dict], attn: str) -> PackingChoice:
    """train.packing for this model and the attention it loads with (`attn`, resolved by
    train/kernels.py); `why` says what the run does and why."""
    from workbench.profile import packs_rows
    from workbench.train.packing import choose, modeling_source, pack_stats

    t, m = profile.train, profile.model
    if not packs_rows(t):
        return PackingChoice("padded")
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(m.name_or_path, revision=m.revision,
                                        trust_remote_code=m.trust_remote_code)
    choice = choose(t.packing, t.method, attn, modeling_source(config), m.trust_remote_code)
    if choice.packed:
        stats = pack_stats([len(r["input_ids"]) for r in rows], t.max_seq_len)
        return replace(choice, why=stats.describe())
    return replace(choice, why=f"packing: off; batches of similar lengths instead, because "
                               f"{choice.why}")


def resolve_start_adapter(profile: Profile) -> str | None:
    """model.adapter as a folder holding adapter_config.json: a path, a run folder (its
    adapter/), or a run's name looked up in train.runs_dir. None when the profile has none."""
    ref = profile.model.adapter
    if not ref:
        return None
    from workbench.rundir import RunNotFound, find_run

    candidates = [Path(ref)]
    if not Path(ref).exists():
        try:
            candidates.append(find_run(ref, Path(profile.train.runs_dir)).path)
        except RunNotFound as exc:
            raise RunError(f"model.adapter = {ref!r}: {exc}",
                           hint="finish an SFT run first, or give the adapter folder's path",
                           kind="config") from exc
    for folder in candidates:
        for inner in (folder, folder / "adapter"):
            if (inner / "adapter_config.json").is_file():
                return str(inner.resolve())
    raise RunError(f"model.adapter = {ref!r}: no LoRA adapter there (no adapter_config.json "
                   f"in it or in its adapter/ folder)",
                   hint="name a finished run (its folder, or its name under train.runs_dir) or an "
                        "adapter folder; `workbench runs` lists the runs", kind="config")


def profile_chat_format(tokenizer, profile: Profile):
    """The one ChatFormat of a run: training, evaluation, comparison and export all use it."""
    from workbench.data.chat_format import chat_format

    return chat_format(tokenizer, profile.data.system, profile.data.reasoning)


def _describe_evaluation(profile: Profile, n_validation: int, kind: str = "generation") -> str:
    """What the evaluation after training will do, said before training starts."""
    from workbench.data.save import is_saved_dataset

    e, d = profile.eval, profile.data
    if not e.after_training:
        return "evaluation after training: skipped (eval.after_training = false)"
    from workbench.data.raw_text import is_text_data

    if kind == "generation" and is_text_data(profile):  # continued pretraining on raw text
        return (f"evaluation after training: perplexity on the text of {n_validation} held-out "
                "documents, base against fine-tuned, with 95% intervals (nothing generated: "
                "raw text has no prompts)")
    if kind == "preference":
        return (f"evaluation after training: {n_validation} held-out preference rows scored by "
                "the base and the fine-tuned model (how often the chosen answer is the likelier "
                "one), and their prompts answered side by side")
    if kind == "rewards":
        g = profile.grpo
        from workbench.train.methods import reward_eval_samples

        samples = reward_eval_samples(profile)
        rows = (f"{e.max_test_rows} of {n_validation}" if e.max_test_rows
                and n_validation > e.max_test_rows else f"{n_validation}")
        return (f"evaluation after training: {rows} held-out prompts answered by the base and "
                f"the fine-tuned model, greedily and {samples} times sampled at "
                f"temperature {g.temperature:g}, up to {g.max_completion_len} tokens "
                "(grpo.max_completion_len), every answer scored by the reward functions; the "
                "weighted total and each reward's pass rate compared with 95% intervals, and "
                "the answer lengths"
                + (f"; capped at {e.time_budget_s:g} s (eval.time_budget_s)" if e.time_budget_s
                   else ""))
    saved_test = is_saved_dataset(d.train) and (Path(d.train) / "test.jsonl").is_file()
    rows = "the saved test split" if saved_test else f"{n_validation} held-out rows"
    if not saved_test and e.max_test_rows and n_validation > e.max_test_rows:
        rows = f"{e.max_test_rows} of {n_validation} held-out rows"
    systems = 3 if e.shots else 2
    parts = [f"evaluation after training: {rows} x {systems} systems (base, "
             f"{'few-shot, ' if e.shots else ''}fine-tuned), up to {e.max_new_tokens} new tokens "
             "each, plus perplexity"]
    if e.prompts:
        parts.append(f"and the prompt suite {e.prompts}")
    parts.append(f"capped at {e.time_budget_s:g} s (eval.time_budget_s)" if e.time_budget_s
                 else "progress and ETA show while it runs; eval.time_budget_s caps it, "
                      "eval.after_training = false skips it")
    return "; ".join(parts)
