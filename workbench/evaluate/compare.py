"""The comparison engine: one base model in memory, the run's adapters loaded on top of it
(PEFT multi-adapter), every system's answers generated in a few batched `generate` calls.

How rows are batched (issue 12; measured in bench/eval_speed.md): rows are sorted by prompt
length, longest first, and cut into calls of `batch_size`, so the rows of one call need little
left padding. Few-shot rows carry k worked examples (about 600 tokens on Alpaca against about
50 for the question alone) and get calls of their own: a short prompt is never padded to a
few-shot one. Base and fine-tuned rows ask the same question, so their prompts are equally
long, and they share calls, each row naming its adapter (`adapter_names`, PEFT's mixed-batch
inference; "__base__" means no adapter): one read of the weights per step serves both. On a
2-core CPU this measured 3-9% faster than one adapter a call (and on a GPU, where a decoding
step is bound by reading the weights, sharing it matters more); a call whose rows all use one
adapter switches it for the whole call instead (`using`). Each row stops at its own
end-of-turn token; a call ends when its last row has. Before this, every call mixed all three
systems in prompt order and padded every row to the longest few-shot prompt: 844 s for 100
Alpaca rows x 3 systems on SmolLM2-135M, against 29.9 s for one plain sorted pass.

Same decoding settings and seed for every row; greedy by default. Answers come back in the
order of the rows given, whatever order they were generated in.

Per-system latency is summed over the calls holding that system's rows: each from the call's
start until that system's last row in it stopped (its end-of-turn token, or max_new_tokens);
tokens/s is that system's generated tokens over its latency. Base and fine-tuned share calls,
so their latencies overlap by design.

Each row that stops is reported as it stops (`RowDone`, with rows done / total so far): a
suite of 60 prompts x 3 systems takes minutes on a CPU, and a person should see it move.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from workbench.evaluate.errors import EvaluateError, stop_requested
from workbench.fmt import fmt_bytes

BASE = "__base__"  # PEFT's name for "this row uses no adapter"
TUNED = "tuned"
# End-of-turn markers of common chat templates; whichever the tokenizer knows are stop tokens.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                      "</s>", "<|end_of_text|>", "[/INST]")


@dataclass(frozen=True)
class System:
    name: str           # "base", "few-shot", "fine-tuned", or a checkpoint's name
    adapter: str = BASE  # adapter name loaded in the engine, or BASE
    shots: int = 0


def default_systems(shots: int, adapter: str = TUNED) -> list[System]:
    return [System("base"), System("few-shot", BASE, shots), System("fine-tuned", adapter)]


@dataclass
class Row:
    system: System
    prompt_index: int
    messages: list[dict]


@dataclass
class Answer:
    system: str
    prompt_index: int
    text: str
    token_ids: list[int]
    latency_s: float
    prompt_tokens: int


@dataclass
class SystemTiming:
    tokens: int = 0
    latency_s: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.latency_s if self.latency_s else 0.0

    def to_dict(self) -> dict:
        return {"tokens": self.tokens, "latency_s": round(self.latency_s, 3),
                "tokens_per_s": round(self.tokens_per_s, 1)}


@dataclass
class Generations:
    answers: list[Answer]
    timing: dict[str, SystemTiming] = field(default_factory=dict)
    wall_s: float = 0.0

    def text(self, system: str, prompt_index: int) -> str:
        for a in self.answers:
            if a.system == system and a.prompt_index == prompt_index:
                return a.text
        raise KeyError((system, prompt_index))


@dataclass
class Delta:
    """A piece of one system's answer to one prompt, as it is generated."""
    system: str
    prompt_index: int
    text: str


@dataclass(frozen=True)
class RowDone:
    """One row stopped (its end-of-turn token, max_new_tokens, or a cancel): `done` of the
    call's `total` rows have stopped so far."""
    system: str
    prompt_index: int
    done: int
    total: int


# ---------------------------------------------------------------------------------------------
# Loading and checking adapters


def read_adapter_config(adapter_dir: Path) -> dict:
    path = Path(adapter_dir) / "adapter_config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvaluateError(f"{adapter_dir} has no adapter_config.json: not a PEFT adapter folder",
                            hint="pass the run's adapter/ folder or a checkpoints/checkpoint-N folder") from None
    except ValueError as exc:
        raise EvaluateError(f"{path}: not valid JSON ({exc})",
                            hint="the adapter was not written completely; train or resume the run again") from exc


def _same_model(a: str, b: str) -> bool:
    if a == b:
        return True
    pa, pb = Path(a), Path(b)
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return a.rstrip("/") == b.rstrip("/")


def check_adapter(adapter_dir: Path, profile) -> dict:
    """The adapter must belong to this run's base model and LoRA settings; say which part
    differs rather than letting PEFT fail on a tensor shape deep inside loading."""
    cfg = read_adapter_config(adapter_dir)
    base = cfg.get("base_model_name_or_path") or ""
    model = profile.model.name_or_path
    if base and not _same_model(base, model):
        raise EvaluateError(
            f"the adapter in {adapter_dir} was trained on {base!r}, but this run's model is {model!r}",
            hint="compare it against the run it came from, or set model.name_or_path to its base model")
    lo = profile.lora
    if cfg.get("r") is not None and int(cfg["r"]) != lo.r:
        raise EvaluateError(f"the adapter in {adapter_dir} has rank r={cfg['r']}, the run's profile "
                            f"says lora.r={lo.r}", hint="the adapter comes from another run; use that run")
    want = lo.target_modules
    got = cfg.get("target_modules")
    if isinstance(want, list) and isinstance(got, list) and sorted(want) != sorted(got):
        raise EvaluateError(f"the adapter in {adapter_dir} targets {sorted(got)}, the run's profile "
                            f"says lora.target_modules = {sorted(want)}",
                            hint="the adapter comes from another run; use that run")
    return cfg


def run_adapters(run, checkpoints: bool = False) -> dict[str, Path]:
    """The run's final adapter as "tuned" (and with `checkpoints`, each complete checkpoint
    as "step-N"). No adapter yet is a clear error, not a crash."""
    adapters: dict[str, Path] = {}
    if (run.adapter_dir / "adapter_config.json").is_file():
        adapters[TUNED] = run.adapter_dir
    if checkpoints:
        for step, path in run.checkpoints():
            if (path / "adapter_config.json").is_file():
                adapters[f"step-{step}"] = path
    if TUNED not in adapters:
        state = run.effective_state()
        last = run.last_checkpoint()
        if state in ("running", "starting"):
            hint = f"the run is still {state}: wait for it to finish (`workbench attach {run.name}`)"
        elif last is not None:
            hint = (f"the run is {state}; `workbench resume {run.name}` finishes it and saves the "
                    f"adapter (the last checkpoint is {last.name})")
        else:
            hint = f"the run is {state} with no checkpoint; train it again"
        raise EvaluateError(f"run {run.name} has no adapter yet ({run.adapter_dir} is missing)", hint=hint)
    return adapters


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise EvaluateError("--device cuda, but torch sees no CUDA GPU", hint="use --device cpu")
    return device


def load_base_model(profile, device: str):
    """The base model for inference: bf16 on a GPU that supports it (fp16 otherwise), fp32 on
    the CPU; 4-bit NF4 when the run trained QLoRA, so the adapter sees the weights it learned on."""
    import torch
    from transformers import AutoModelForCausalLM

    m = profile.model
    if device == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        dtype = torch.float32
    from workbench.train.plan import attention_implementation

    kwargs: dict[str, Any] = dict(revision=m.revision, trust_remote_code=m.trust_remote_code,
                                  attn_implementation=attention_implementation(profile)[0],
                                  use_safetensors=True, dtype=dtype)
    if profile.lora.method == "qlora" and device == "cuda":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype)
        kwargs["device_map"] = {"": 0}
    try:
        model = AutoModelForCausalLM.from_pretrained(m.name_or_path, **kwargs)
    except OSError as exc:
        raise EvaluateError(f"could not load the base model {m.name_or_path!r}: {str(exc).splitlines()[0]}",
                            hint="the run's profile.toml names it in model.name_or_path") from exc
    if "device_map" not in kwargs:
        model.to(device)
    model.config.use_cache = True
    model.eval()
    return model


def weights_size(name_or_path: str) -> int | None:
    """Bytes of safetensors weights in a local model folder (None for a hub id)."""
    folder = Path(name_or_path)
    if not folder.is_dir():
        return None
    return sum(f.stat().st_size for f in folder.glob("*.safetensors")) or None


def attach_adapters(base, adapters: dict[str, Path], profile=None):
    """Load each adapter by name onto the one base model."""
    from peft import PeftModel

    model = None
    for name, path in adapters.items():
        if profile is not None:
            check_adapter(path, profile)
        try:
            if model is None:
                model = PeftModel.from_pretrained(base, str(path), adapter_name=name)
            else:
                model.load_adapter(str(path), adapter_name=name)
        except (ValueError, RuntimeError, KeyError) as exc:
            raise EvaluateError(f"could not load the adapter {path} onto the base model: "
                                f"{str(exc).splitlines()[0]}",
                                hint="the adapter's target modules or shapes do not fit this model; "
                                     "it probably comes from another run") from exc
    model.eval()
    return model


# ---------------------------------------------------------------------------------------------
# The engine


class _RowStreamer:
    """A transformers streamer for a whole batch. `put` receives the batch's prompt first,
    then one new token per row each step; each row is decoded incrementally until its stop
    token, and the new text goes to `on_delta(row, text)`. It also stamps when each row
    stopped, which is where per-system latency comes from, and tells `on_stop(row)`."""

    def __init__(self, tokenizer, n_rows: int, stop_ids: set[int],
                 on_delta: Callable[[int, str], None] | None, start: float,
                 on_stop: Callable[[int], None] | None = None):
        self.tokenizer, self.stop_ids, self.on_delta, self.start = tokenizer, stop_ids, on_delta, start
        self.on_stop = on_stop
        self.tokens: list[list[int]] = [[] for _ in range(n_rows)]
        self.text = [""] * n_rows
        self.done_at: list[float | None] = [None] * n_rows
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:  # generate hands over the prompt first
            self._prompt_seen = True
            return
        now = time.perf_counter() - self.start
        ids = value.reshape(-1).tolist()
        for row, tok in enumerate(ids):
            if self.done_at[row] is not None:
                continue
            if tok in self.stop_ids:
                self._stopped(row, now)
                continue
            self.tokens[row].append(tok)
            if self.on_delta is not None:
                text = self.tokenizer.decode(self.tokens[row], skip_special_tokens=True)
                # Half a multi-byte character decodes to U+FFFD; wait for the rest of it.
                if not text.endswith("\ufffd") and len(text) > len(self.text[row]):
                    self.on_delta(row, text[len(self.text[row]):])
                    self.text[row] = text

    def end(self) -> None:
        """generate returned: rows still open ran to max_new_tokens (or were cancelled)."""
        now = time.perf_counter() - self.start
        for row, at in enumerate(self.done_at):
            if at is None:
                self._stopped(row, now)

    def _stopped(self, row: int, now: float) -> None:
        self.done_at[row] = now
        if self.on_stop is not None:
            self.on_stop(row)


class ComparisonEngine:
    def __init__(self, model, tokenizer, device: str, system_prompt: str = "", fmt=None):
        from workbench.data.chat_format import chat_format

        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.system_prompt = system_prompt
        # The run's ChatFormat: prompts are rendered exactly as training rendered them.
        self.fmt = fmt or chat_format(tokenizer)
        self.tuned_adapter = TUNED  # the adapter the "fine-tuned" system uses
        self.stop_ids = stop_token_ids(tokenizer, getattr(model, "generation_config", None))

    @property
    def adapters(self) -> list[str]:
        return list(getattr(self.model, "peft_config", {}) or {})

    @classmethod
    def from_run(cls, run, profile, *, checkpoints: bool = False, device: str = "auto",
                 adapters: dict[str, Path] | None = None,
                 progress: Callable[[str], None] | None = None) -> "ComparisonEngine":
        """`progress(stage)` is told each loading stage as it starts (the app shows it: loading
        a 7-8B model takes long enough that "what is it doing" matters)."""
        from workbench.train.plan import RunError, load_tokenizer, profile_chat_format

        say = progress or (lambda _stage: None)
        adapters = adapters or run_adapters(run, checkpoints=checkpoints)
        for path in adapters.values():  # before loading gigabytes of weights
            check_adapter(path, profile)
        device = resolve_device(device)
        say("loading the tokenizer")
        try:
            tokenizer = load_tokenizer(profile)
        except RunError as exc:
            raise EvaluateError(exc.message, exc.hint) from exc
        size = weights_size(profile.model.name_or_path)
        say(f"loading the base model {profile.model.name_or_path} onto {device}"
            + (f" ({fmt_bytes(size)} of weights)" if size else ""))
        base = load_base_model(profile, device)
        say(f"attaching the adapter{'s' if len(adapters) > 1 else ''} {', '.join(adapters)}")
        model = attach_adapters(base, adapters)
        return cls(model, tokenizer, device, profile.data.system_prompt,
                   profile_chat_format(tokenizer, profile))

    def using(self, adapter: str | None):
        """A context in which the whole model runs as one system: adapter off for BASE,
        else that adapter active (cheaper than per-row selection when all rows agree).
        None changes nothing: the rows name their adapters themselves."""
        import contextlib

        if adapter is None or not hasattr(self.model, "peft_config"):
            return contextlib.nullcontext()
        if adapter == BASE:
            return self.model.disable_adapter()
        self.model.set_adapter(adapter)
        return contextlib.nullcontext()

    # ---- prompts ------------------------------------------------------------------------
    def chat_text(self, messages: list[dict]) -> str:
        return self.fmt.prompt(messages)

    def rows(self, prompts: Sequence[str | list[dict]], systems: Sequence[System],
             picker=None) -> list[Row]:
        """One row per (prompt, system). A prompt is a question or a conversation ending in a
        user turn; few-shot rows get their examples from `picker` (a FewShotPicker over the
        train split), placed after any system message and before the conversation."""
        from workbench.evaluate.fewshot import prompt_of, shot_messages

        out = []
        for i, prompt in enumerate(prompts):
            convo = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
            head = [m for m in convo if m["role"] == "system"] or (
                [{"role": "system", "content": self.system_prompt}] if self.system_prompt else [])
            body = [m for m in convo if m["role"] != "system"]
            for s in systems:
                shots = picker.pick(prompt_of({"messages": convo}))[: s.shots] if (s.shots and picker) else []
                out.append(Row(s, i, head + shot_messages(shots) + body))
        return out

    # ---- generation ---------------------------------------------------------------------
    def prompt_lengths(self, rows: Sequence[Row]) -> list[int]:
        """Each row's prompt in tokens, as `generate` feeds it (no padding)."""
        if not rows:
            return []
        texts = [self.chat_text(r.messages) for r in rows]
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]

    def generate(self, rows: Sequence[Row], *, batch_size: int = 48, **kwargs) -> Generations:
        """Every row, in calls of at most `batch_size` rows planned by `plan_batches` (see the
        module's docstring). Keywords as `generate_in`."""
        return self.generate_in(rows, plan_batches(rows, self.prompt_lengths(rows), batch_size),
                                **kwargs)

    def generate_separately(self, rows: Sequence[Row], *, batch_size: int = 48,
                            **kwargs) -> Generations:
        """The reference the batched plan is checked against: each system's rows on their own,
        in the order given, the adapter switched on (or off) for the whole call."""
        by_system: dict[System, list[int]] = {}
        for i, r in enumerate(rows):
            by_system.setdefault(r.system, []).append(i)
        calls = [idx[lo:lo + batch_size] for idx in by_system.values()
                 for lo in range(0, len(idx), batch_size)]
        return self.generate_in(rows, calls, **kwargs)

    def generate_in(self, rows: Sequence[Row], calls: Sequence[Sequence[int]], *,
                    max_new_tokens: int = 128, seed: int = 42, do_sample: bool = False,
                    temperature: float = 1.0, on_delta: Callable[[Delta], None] | None = None,
                    on_row_done: Callable[[RowDone], None] | None = None,
                    cancel=None) -> Generations:
        """`rows` answered in the given `calls` (lists of indices into `rows`, one `generate`
        call each), the answers in the order of `rows`. A call whose rows all use one adapter
        runs with that adapter switched for the whole call; a call mixing adapters names each
        row's. `on_row_done` hears each row as it stops, with the count over all calls; after
        a cancel, rows of calls not started yet have no answer."""
        result = Generations([])
        started = time.perf_counter()
        stopped = 0

        def row_done(row: Row) -> None:
            nonlocal stopped
            stopped += 1
            on_row_done(RowDone(row.system.name, row.prompt_index, stopped, len(rows)))

        answered: list[tuple[int, Answer]] = []
        for call in calls:
            chunk = [rows[i] for i in call]
            adapters = {r.system.adapter for r in chunk}
            whole = adapters.pop() if len(adapters) == 1 else None  # None: each row names its own
            before = len(result.answers)
            with self.using(whole):
                self._generate_chunk(chunk, result, max_new_tokens=max_new_tokens, seed=seed,
                                     do_sample=do_sample, temperature=temperature,
                                     on_delta=on_delta, on_row_done=row_done if on_row_done else None,
                                     cancel=cancel, adapter_names=None if whole is not None
                                     else [r.system.adapter for r in chunk])
            answered += zip(call, result.answers[before:])
            if stop_requested(cancel):
                break
        result.answers = [a for _, a in sorted(answered, key=lambda pair: pair[0])]
        result.wall_s = time.perf_counter() - started
        return result

    def stream(self, rows: Sequence[Row], cancel=None,
               **kwargs) -> Iterator[Delta | RowDone | Generations]:
        """Yield Delta and RowDone events while `generate` runs in a thread, then the
        Generations. For the app: the three columns drawn live as the calls run."""
        events: queue.Queue = queue.Queue()
        done = object()

        def work():
            try:
                events.put(self.generate(rows, on_delta=events.put, on_row_done=events.put,
                                         cancel=cancel, **kwargs))
            except BaseException as exc:  # handed to the consumer, raised there
                events.put(exc)
            finally:
                events.put(done)

        thread = threading.Thread(target=work, name="workbench-compare", daemon=True)
        thread.start()
        while True:
            ev = events.get()
            if ev is done:
                break
            if isinstance(ev, BaseException):
                raise ev
            yield ev
        thread.join()

    def _generate_chunk(self, chunk: list[Row], result: Generations, *, adapter_names,
                        max_new_tokens: int, seed: int = 42, do_sample: bool = False,
                        temperature: float = 1.0, on_delta=None, on_row_done=None,
                        cancel=None) -> None:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        tok = self.tokenizer
        texts = [self.chat_text(r.messages) for r in chunk]
        side = tok.padding_side
        tok.padding_side = "left"  # decoder-only models continue from the right edge
        try:
            enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        finally:
            tok.padding_side = side
        enc = {k: v.to(self.device) for k, v in enc.items()}
        start = time.perf_counter()

        def delta(row: int, text: str) -> None:
            on_delta(Delta(chunk[row].system.name, chunk[row].prompt_index, text))

        streamer = _RowStreamer(tok, len(chunk), self.stop_ids, delta if on_delta else None, start,
                                on_stop=(lambda row: on_row_done(chunk[row])) if on_row_done else None)
        criteria = StoppingCriteriaList()
        if cancel is not None:
            # Asked after every token: a stop ends even a long generate call within one step.
            class Cancelled(StoppingCriteria):
                def __call__(self, input_ids, scores, **kw):
                    return torch.full((input_ids.shape[0],), stop_requested(cancel),
                                      dtype=torch.bool, device=input_ids.device)
            criteria.append(Cancelled())
        gen_kwargs = dict(max_new_tokens=max_new_tokens, do_sample=do_sample,
                          eos_token_id=sorted(self.stop_ids), pad_token_id=tok.pad_token_id,
                          streamer=streamer, stopping_criteria=criteria)
        if do_sample:
            gen_kwargs["temperature"] = temperature
        else:  # silence "temperature is set but do_sample is False" from generation_config
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)
        if adapter_names is not None:
            gen_kwargs["adapter_names"] = adapter_names
        torch.manual_seed(seed)
        with torch.inference_mode():
            out = self.model.generate(**enc, **gen_kwargs)
        streamer.end()
        width = enc["input_ids"].shape[1]
        prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
        for i, row in enumerate(chunk):
            ids = []
            for t in out[i, width:].tolist():
                if t in self.stop_ids:
                    break
                ids.append(t)
            text = tok.decode(ids, skip_special_tokens=True).strip()
            latency = streamer.done_at[i]
            result.answers.append(Answer(row.system.name, row.prompt_index, text, ids, latency,
                                         int(prompt_lens[i])))
            timing = result.timing.setdefault(row.system.name, SystemTiming())
            timing.tokens += len(ids)
        # A system's latency in this call: until its last row stopped.
        for name in {r.system.name for r in chunk}:
            result.timing[name].latency_s += max(streamer.done_at[i] for i, r in enumerate(chunk)
                                                 if r.system.name == name)


def plan_batches(rows: Sequence[Row], lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """The generate calls for `rows` (each a list of indices into `rows`), `lengths` being
    their prompts in tokens. Rows with the same number of few-shot examples share calls, base
    and fine-tuned alike (their prompts are equally long); within each such group the rows go
    longest prompt first, `batch_size` to a call, so a call's rows are of similar length. The
    calls run longest first: an out-of-memory error shows in the first call rather than
    minutes in, and the progress ETA errs long, not short."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    groups: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row.system.shots, []).append(i)
    calls = []
    for idx in groups.values():
        idx.sort(key=lambda i: (-lengths[i], i))
        calls += [idx[lo:lo + batch_size] for lo in range(0, len(idx), batch_size)]
    calls.sort(key=lambda call: -lengths[call[0]])  # stable: a group's calls stay in order
    return calls


def stop_token_ids(tokenizer, generation_config=None) -> set[int]:
    """eos, the generation config's eos list, and every end-of-turn marker the tokenizer
    knows: a model stops at the end of its turn whatever template it was trained with."""
    ids: set[int] = set()
    for source in (tokenizer.eos_token_id, getattr(generation_config, "eos_token_id", None)):
        if isinstance(source, int):
            ids.add(source)
        elif isinstance(source, (list, tuple)):
            ids.update(i for i in source if isinstance(i, int))
    vocab = tokenizer.get_vocab()
    for marker in END_OF_TURN_TOKENS:
        if marker in vocab and marker in (tokenizer.all_special_tokens + _added(tokenizer)):
            ids.add(vocab[marker])
    return ids


def _added(tokenizer) -> list[str]:
    try:
        return [t.content if hasattr(t, "content") else str(t)
                for t in tokenizer.added_tokens_decoder.values()]
    except AttributeError:
        return []
