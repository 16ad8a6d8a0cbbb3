"""TOML profiles: the schema, its defaults, validation with file:line errors, overrides,
lookup by name, saving, showing and diffing.

A profile is everything a run needs to be repeated. People write them by hand, so every
mistake is reported at once (not one per attempt), with the file, the line, the key, what was
expected and, where we can guess, what they meant.

Pure Python on purpose: the app imports this at start, so no torch/transformers/textual here.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10 only
    import tomli as tomllib

__all__ = [
    "BudgetSection",
    "CleanSection",
    "DataSection",
    "DistributedSection",
    "EvalSection",
    "ExportSection",
    "LoraSection",
    "ModelSection",
    "GrpoSection",
    "PreferenceSection",
    "Profile",
    "ProfileError",
    "ProfileIssue",
    "RewardsSection",
    "TrainSection",
    "check_hub_ids",
    "check_paths",
    "default_search_dirs",
    "diff_profiles",
    "find_profile",
    "format_diff",
    "format_profile",
    "iter_schema",
    "list_profiles",
    "load_profile",
    "parse_override",
    "profile_from_dict",
    "save_profile",
    "shipped_profiles_dir",
    "user_profiles_dir",
]

OVERRIDE = "--set"  # the "file" of an issue that came from a command-line override


# ---------------------------------------------------------------------------------------------
# Issues


@dataclass(frozen=True)
class ProfileIssue:
    """One problem, located. `line` is None when there is no line to point at (overrides,
    dicts); `column` is only known for TOML syntax errors."""

    file: str
    line: int | None
    key: str
    message: str
    column: int | None = None

    def __str__(self) -> str:
        if self.file == OVERRIDE:
            # "--set train.batch_size: expected ..." reads like the command the user typed.
            return f"{OVERRIDE} {self.key}: {self.message}"
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ProfileError(Exception):
    """All the problems found in one profile; str() gives one line per issue."""

    def __init__(self, issues: Iterable[ProfileIssue]):
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


# ---------------------------------------------------------------------------------------------
# Value checks. Each check returns the (possibly coerced) value or raises _Invalid, which says
# what was expected; the caller adds the key and location.


class _Invalid(Exception):
    def __init__(self, expected: str, got: Any, *, wrong_type: bool = False, hint: str = "",
                 at: str = ""):
        self.expected, self.got, self.wrong_type, self.hint, self.at = (
            expected, got, wrong_type, hint, at)

    def message(self) -> str:
        got = _show(self.got) + (f" ({_type_name(self.got)})" if self.wrong_type else "")
        text = f"expected {self.expected}, got {got}"
        return f"{text}; {self.hint}" if self.hint else text


def _type_name(v: Any) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a float"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, dict):
        return "a table"
    return "a date/time" if hasattr(v, "isoformat") else type(v).__name__


def _show(v: Any) -> str:
    """A value the way it would be written in TOML, so messages quote what the user wrote."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_show(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_show(x)}" for k, x in v.items()) + "}"
    return str(v)


def _closest(word: str, options: Iterable[str]) -> str | None:
    """The option closest to a typo, compared case-insensitively so "BF16" finds "bf16"."""
    lowered = {o.lower(): o for o in options}
    match = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[match[0]] if match else None


def _suggest(word: str, options: Iterable[str], quote: str = '"') -> str:
    """'did you mean "x"?', or '' when nothing is close."""
    match = _closest(word, options)
    return f"did you mean {quote}{match}{quote}?" if match else ""


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


Check = Callable[[Any], Any]


def _string(nonempty: bool = False, what: str = "a string") -> Check:
    def check(v):
        if not isinstance(v, str):
            raise _Invalid(what, v, wrong_type=True)
        if nonempty and not v.strip():
            raise _Invalid(what, v)
        return v
    return check


def _boolean(v):
    if not isinstance(v, bool):
        raise _Invalid("true or false", v, wrong_type=True)
    return v


def _integer(lo: int | None = None) -> Check:
    expected = "an integer" + (f" >= {lo}" if lo is not None else "")

    def check(v):
        # bool is a subclass of int in Python; `true` for a count is always a mistake.
        if type(v) is not int:
            raise _Invalid(expected, v, wrong_type=True)
        if lo is not None and v < lo:
            raise _Invalid(expected, v)
        return v
    return check


def _number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
            hi_open: bool = False) -> Check:
    if lo is not None and hi is not None:
        expected = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    elif lo is not None:
        expected = f"a number {'>' if lo_open else '>='} {lo:g}"
    else:
        expected = "a number"

    def check(v):
        if not _is_number(v):
            raise _Invalid(expected, v, wrong_type=True)
        v = float(v)  # integers are fine where floats are expected: `epochs = 3`
        if not math.isfinite(v):
            raise _Invalid(expected, v)
        if lo is not None and (v <= lo if lo_open else v < lo):
            raise _Invalid(expected, v)
        if hi is not None and (v >= hi if hi_open else v > hi):
            raise _Invalid(expected, v)
        return v
    return check


def _quoted(options: Iterable[str]) -> str:
    return ", ".join(f'"{o}"' for o in options)


def _choice(*options: str) -> Check:
    expected = f"one of {_quoted(options)}"

    def check(v):
        if not isinstance(v, str):
            raise _Invalid(expected, v, wrong_type=True)
        if v not in options:
            raise _Invalid(expected, v, hint=_suggest(v, options))
        return v
    check.choices = options  # type: ignore[attr-defined]  # read by iter_schema for the app
    return check


def _list_of(*options: str) -> Check:
    expected = f"a list of {_quoted(options)} (may be empty)"

    def check(v):
        if not isinstance(v, list):
            raise _Invalid(expected, v, wrong_type=True)
        for i, item in enumerate(v):
            if not isinstance(item, str):
                raise _Invalid(f"one of {_quoted(options)}", item, wrong_type=True, at=f"[{i}]")
            if item not in options:
                raise _Invalid(f"one of {_quoted(options)}", item, hint=_suggest(item, options),
                               at=f"[{i}]")
        return list(v)
    check.choices = options  # type: ignore[attr-defined]
    return check


def _target_modules(v):
    expected = 'a non-empty list of module names (e.g. ["q_proj", "v_proj"]) or "all-linear"'
    if isinstance(v, str):
        if v == "all-linear":
            return v
        hint = _suggest(v, ["all-linear"]) or 'a single module still needs a list: ["q_proj"]'
        raise _Invalid(expected, v, hint=hint)
    if not isinstance(v, list):
        raise _Invalid(expected, v, wrong_type=True)
    if not v:
        raise _Invalid(expected, v, hint='use "all-linear" to adapt every linear layer')
    for i, item in enumerate(v):
        if not isinstance(item, str):
            raise _Invalid("a module name (a string)", item, wrong_type=True, at=f"[{i}]")
        if not item.strip():
            raise _Invalid("a non-empty module name", item, at=f"[{i}]")
    return list(v)


def _string_table(what: str) -> Check:
    expected = f"a table of {what}, e.g. {{ instruction = \"question\" }}"

    def check(v):
        if not isinstance(v, dict):
            raise _Invalid(expected, v, wrong_type=True)
        for key, item in v.items():
            if not isinstance(item, str):
                raise _Invalid("a string", item, wrong_type=True, at=f".{key}")
        return dict(v)
    return check


def _fractions(v):
    expected = "three fractions [train, validation, test] that add up to 1, e.g. [0.8, 0.1, 0.1]"
    if not isinstance(v, list) or len(v) != 3 or not all(_is_number(x) for x in v):
        raise _Invalid(expected, v, wrong_type=not isinstance(v, list))
    values = [float(x) for x in v]
    if any(x < 0 for x in values) or values[0] <= 0 or abs(sum(values) - 1) > 1e-6:
        raise _Invalid(expected, v)
    return values


def _max_steps(v):
    expected = "-1 (train for `epochs`) or an integer >= 1"
    if type(v) is not int:
        raise _Invalid(expected, v, wrong_type=True)
    if v != -1 and v < 1:
        raise _Invalid(expected, v)
    return v


def _auto_or_bool(v):
    if isinstance(v, bool) or v == "auto":
        return v
    hint = _suggest(v, ["auto"]) if isinstance(v, str) else ""
    raise _Invalid('"auto", true or false', v, wrong_type=not isinstance(v, str), hint=hint)


# [[data.sources]]: where each source's rows come from and how they join the mixture.
SOURCE_KEYS = {
    "path": "a local file or folder (relative to the profile's folder)",
    "name": "a Hugging Face Hub dataset id, e.g. \"tatsu-lab/alpaca\"",
    "config": "the dataset's configuration (subset) name",
    "split": "the split to read (default \"train\")",
    "revision": "a Hub branch, tag or commit; the run records the commit it read",
    "data_files": "a file name or glob (or a list) inside the dataset",
    "format": "the row schema (as data.format)",
    "columns": "your column names for the schema's (as data.columns)",
    "system_prompt": "a system prompt for this source's conversations",
    "train_on": "\"assistant\" or \"all\" (as data.train_on)",
    "encoding": "the text encoding of a local file",
    "weight": "this source's share of the mixture (any positive number; shares are normalised)",
    "rows": "a fixed number of rows from this source instead of a weight",
    "held_out": "false = no validation or test rows come from this source",
    "label": "how reports name this source (default: its file or dataset name)",
}
SOURCE_FORMATS = ("auto", "alpaca", "sharegpt", "messages", "prompt_completion", "text")


def _sources(v):
    expected = ('a list of [[data.sources]] tables, each with `path` (a local file or folder) or '
                '`name` (a Hub dataset id) and a `weight` or `rows`')
    if not isinstance(v, list):
        raise _Invalid(expected, v, wrong_type=True)
    out, labels = [], set()
    for i, item in enumerate(v):
        at = f"[{i}]"
        if not isinstance(item, dict):
            raise _Invalid("a table, e.g. { path = \"data.jsonl\", weight = 0.7 }", item,
                           wrong_type=True, at=at)
        for key in item:
            if key not in SOURCE_KEYS:
                raise _Invalid("a source key", key, at=f"{at}.{key}",
                               hint=_suggest(key, SOURCE_KEYS, "'")
                               or "source keys are " + ", ".join(SOURCE_KEYS))
        if ("path" in item) == ("name" in item):
            raise _Invalid("exactly one of `path` (a local file or folder) or `name` (a Hub "
                           "dataset id)", item, at=at)
        checks = {"path": _string(True, "a path"), "name": _string(True, "a dataset id"),
                  "config": _string(), "split": _string(True, "a split name"),
                  "revision": _string(), "format": _choice(*SOURCE_FORMATS),
                  "columns": _string_table("schema field = your column name"),
                  "system_prompt": _string(), "train_on": _choice("assistant", "all"),
                  "encoding": _string(), "weight": _number(0, lo_open=True),
                  "rows": _integer(1), "held_out": _boolean, "label": _string(True, "a name")}
        spec = {}
        for key, value in item.items():
            if key == "data_files":
                files = [value] if isinstance(value, str) else value
                if not isinstance(files, list) or not files or not all(
                        isinstance(f, str) and f for f in files):
                    raise _Invalid("a file name or glob, or a list of them", value,
                                   at=f"{at}.{key}")
                spec[key] = list(files)
                continue
            try:
                spec[key] = checks[key](value)
            except _Invalid as e:
                e.at = f"{at}.{key}{e.at}"
                raise
        if "weight" in spec and "rows" in spec:
            raise _Invalid("a `weight` or a fixed number of `rows`, not both", item, at=at)
        label = spec.get("label") or spec.get("name") or Path(spec["path"]).name
        if label in labels:
            raise _Invalid("a distinct label per source", label, at=f"{at}.label",
                           hint="two sources would both be called this in reports; give one "
                                "a `label`")
        labels.add(label)
        out.append(spec)
    weighted = [s for s in out if "weight" in s]
    if weighted and any("weight" not in s and "rows" not in s for s in out):
        raise _Invalid("a `weight` (or `rows`) on every source once one has a weight", v,
                       hint="without weights every source gives all its rows once")
    return out


STREAMING_AUTO_BYTES = 2 * 1024**3  # data.streaming = "auto": local data above this streams

LORA_INITS = ("default", "gaussian", "pissa", "pissa_niter_N", "olora", "loftq")


def _lora_init(v):
    expected = f"one of {_quoted(LORA_INITS)} (N a whole number of subspace iterations >= 1)"
    if not isinstance(v, str):
        raise _Invalid(expected, v, wrong_type=True)
    if v.startswith("pissa_niter_"):  # peft's fast (randomized) SVD with N iterations
        n = v[len("pissa_niter_"):]
        if not (n.isdigit() and int(n) >= 1):
            raise _Invalid(expected, v, hint='e.g. "pissa_niter_4"; N counts iterations, >= 1')
        return v
    if v not in LORA_INITS or v == "pissa_niter_N":
        raise _Invalid(expected, v, hint=_suggest(v, LORA_INITS))
    return v


_lora_init.choices = LORA_INITS  # type: ignore[attr-defined]  # the app's select offers these

# model.attn_implementation: kept in step with workbench/train/kernels.py (ATTENTION_CHOICES),
# which resolves "auto" and falls back on a CPU. A Hub kernel id ("kernels-community/flash-attn2")
# is accepted too: transformers loads it with the `kernels` package.
ATTENTION_CHOICES = ("auto", "sdpa", "eager", "flash_attention_2", "flash_attention_3")
_HUB_KERNEL_ID = re.compile(r"^[^/:@\s]+/[^/:@\s]+(?:@[^/:\s]+)?(?::[^/:\s]+)?$")


def _attention(v):
    expected = (f"one of {_quoted(ATTENTION_CHOICES)} or a Hub kernel id such as "
                '"kernels-community/flash-attn2"')
    if not isinstance(v, str):
        raise _Invalid(expected, v, wrong_type=True)
    if v in ATTENTION_CHOICES or _HUB_KERNEL_ID.match(v):
        return v
    raise _Invalid(expected, v, hint=_suggest(v, ATTENTION_CHOICES))


_attention.choices = ATTENTION_CHOICES  # type: ignore[attr-defined]


def _profile_name(v):
    # The name becomes part of a run folder name (runs/<name>-<timestamp>), so no separators.
    expected = "a non-empty name without '/' or '\\' (it names run folders)"
    if not isinstance(v, str):
        raise _Invalid(expected, v, wrong_type=True)
    if not v.strip() or "/" in v or "\\" in v:
        raise _Invalid(expected, v)
    return v


# ---------------------------------------------------------------------------------------------
# The schema: one dataclass per section. Field metadata carries the check, whether the key is
# required, and whether it is a path resolved relative to the profile file.


def _f(default: Any, check: Check, *, required: bool = False, path: bool = False) -> Any:
    meta = {"check": check, "required": required, "path": path}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelSection:
    # Required; "" only as a placeholder before validation.
    name_or_path: str = _f("", _string(True, "a Hugging Face hub id or a local model folder"),
                           required=True, path=True)
    revision: str = _f("main", _string(True, "a non-empty string (branch, tag or commit)"))
    trust_remote_code: bool = _f(False, _boolean)
    # "auto": FlashAttention 3 / 2 when installed on a GPU that runs it, else sdpa
    attn_implementation: str = _f("sdpa", _attention)
    chat_template: str = _f("", _string(), path=True)  # "" = the tokenizer's own template
    # A LoRA adapter to start from: a finished run (its name or folder) or an adapter folder;
    # how SFT then DPO is chained. "" = a fresh adapter on the base model.
    adapter: str = _f("", _string(), path=True)


@dataclass
class DataSection:
    # One source: a file, a folder (saved splits, `save_to_disk` output, parquet / arrow shards
    # in the Hub's layout) or a Hub dataset id. Several sources: [[data.sources]] tables instead.
    train: str = _f("", _string(True, "a path to a training data file"), required=True,
                    path=True)
    validation: str = _f("", _string(), path=True)
    validation_split: float = _f(0.1, _number(0, 0.5))  # used when `validation` is ""
    # Conversations for SFT; pairs (or labelled single answers, KTO) for preference methods;
    # prompts (with reference columns the rewards read) for GRPO.
    format: str = _f("auto", _choice("auto", "alpaca", "sharegpt", "messages",
                                      "prompt_completion", "text", "sharegpt_pairs",
                                      "alpaca_pairs", "pairs", "hh", "kto_messages", "unpaired",
                                      "prompts"))
    # Your column names for the schema's, e.g. { instruction = "question", output = "answer" }.
    columns: dict[str, str] = _f({}, _string_table("schema field = your column name"))
    on_bad_rows: str = _f("error", _choice("error", "skip"))  # skipped rows are counted, listed
    encoding: str = _f("", _string())  # "" = UTF-8 (a byte-order mark is handled); e.g. "latin-1"
    system_prompt: str = _f("", _string())
    # System messages: keep, fold into the first user turn, drop; auto folds for templates
    # without a system role (Gemma 2). Reasoning (reasoning_content / <think>): keep or drop.
    system: str = _f("auto", _choice("auto", "keep", "fold", "drop"))
    reasoning: str = _f("keep", _choice("keep", "drop"))
    train_on: str = _f("assistant", _choice("assistant", "all"))
    split: list[float] = _f([0.8, 0.1, 0.1], _fractions)  # for `workbench data clean / split`
    # Several sources mixed by weight, each a [[data.sources]] table (keys: SOURCE_KEYS); given
    # instead of `train`. The mixture is drawn with train.seed.
    sources: list[dict] = _f([], _sources)
    # Rows drawn for the weighted sources together; 0 = as many as they hold together.
    mix_rows: int = _f(0, _integer(0))
    # Read rows one by one instead of loading them all (data larger than memory); "auto" streams
    # data above STREAMING_AUTO_BYTES.
    streaming: bool | str = _f(False, _auto_or_bool)


@dataclass
class LoraSection:
    method: str = _f("lora", _choice("lora", "qlora", "dora"))
    r: int = _f(16, _integer(1))
    alpha: float = _f(32.0, _number(0, lo_open=True))
    dropout: float = _f(0.05, _number(0, 1, hi_open=True))
    target_modules: list[str] | str = _f(["q_proj", "k_proj", "v_proj", "o_proj"],
                                         _target_modules)
    bias: str = _f("none", _choice("none", "all", "lora_only"))
    # Rank-stabilized LoRA (peft use_rslora): scale alpha / sqrt(r) instead of alpha / r, so
    # higher ranks keep learning instead of fading out.
    rslora: bool = _f(False, _boolean)
    # How the adapter starts (peft init_lora_weights): "pissa" / "olora" start from the base
    # weights' principal directions and subtract them from the base; "loftq" starts from
    # the 4-bit quantization error. Checked against the other keys in _lora_checks.
    init: str = _f("default", _lora_init)
    # Fully train the input embedding and the output layer too (peft modules_to_save): for
    # new tokens or a new chat format; their learning rate is train.embedding_learning_rate.
    train_embeddings: bool = _f(False, _boolean)


TRAIN_METHODS = ("sft", "dpo", "orpo", "kto", "simpo", "grpo")
PREFERENCE_METHODS = ("dpo", "orpo", "kto", "simpo")


@dataclass
class TrainSection:
    # How to train: supervised fine-tuning, preference tuning (settings in [preference]), or
    # reinforcement learning with rewards you write ("grpo": settings in [grpo] and [rewards]).
    method: str = _f("sft", _choice(*TRAIN_METHODS))
    epochs: float = _f(3.0, _number(0, lo_open=True))
    max_steps: int = _f(-1, _max_steps)
    batch_size: int = _f(4, _integer(1))
    grad_accum: int = _f(4, _integer(1))
    learning_rate: float = _f(2e-4, _number(0, lo_open=True))
    # With lora.train_embeddings: the embeddings' own learning rate (usually 2-10x lower than
    # the adapters'); 0 = the same as learning_rate.
    embedding_learning_rate: float = _f(0.0, _number(0))
    scheduler: str = _f("cosine", _choice("cosine", "linear", "constant", "constant_with_warmup",
                                          "cosine_with_restarts", "polynomial"))
    warmup_ratio: float = _f(0.03, _number(0, 1, hi_open=True))
    weight_decay: float = _f(0.0, _number(0))
    max_grad_norm: float = _f(0.3, _number(0))
    # "auto": fused AdamW (one CUDA kernel, adamw_torch_fused) on a GPU, adamw_torch on the CPU
    optimizer: str = _f("adamw_torch", _choice("adamw_torch", "auto", "adamw_torch_fused",
                                               "adamw_8bit", "paged_adamw_8bit",
                                               "paged_adamw_32bit", "adafactor", "sgd"))
    # GPU kernels (workbench/train/kernels.py): "liger" (Triton RMSNorm / RoPE / SwiGLU), "hub"
    # (Hugging Face Hub kernels, from the local HF cache), "none"; "auto" = liger when on CUDA
    # and liger-kernel is installed. On a CPU a named kernel falls back with a note.
    kernels: str = _f("auto", _choice("auto", "none", "liger", "hub"))
    # "auto": bf16 where the GPU supports it, fp16 on older GPUs, fp32 on CPU.
    precision: str = _f("auto", _choice("auto", "bf16", "fp16", "fp32"))
    gradient_checkpointing: bool | str = _f("auto", _auto_or_bool)  # "auto" = on with a GPU
    max_seq_len: int = _f(2048, _integer(16))
    # "auto": supervised fine-tuning packs rows into padding-free batches where the attention
    # keeps packed rows apart exactly (else batches of similar lengths; the run log says which);
    # false: every batch padded to its longest row, as trl does by default.
    packing: bool | str = _f("auto", _auto_or_bool)
    neftune_alpha: float = _f(0.0, _number(0))  # 0 = off
    seed: int = _f(42, _integer())
    logging_steps: int = _f(10, _integer(1))
    eval_steps: int = _f(50, _integer(0))  # 0 = no evaluation
    save_steps: int = _f(100, _integer(1))
    save_total_limit: int = _f(3, _integer(1))
    early_stopping_patience: int = _f(0, _integer(0))  # 0 = off; needs eval_steps > 0
    report_to: list[str] = _f([], _list_of("tensorboard", "wandb", "mlflow"))
    device: str = _f("auto", _choice("auto", "cpu", "cuda"))
    # Kept as written: relative to the current directory when the run starts, not the profile.
    runs_dir: str = _f("runs", _string(True, "a folder path"))
    # When a foreground run's terminal goes away (SSH dropped): keep training, output going to
    # stdout.log only ("continue"), or checkpoint and stop ("stop").
    on_hangup: str = _f("continue", _choice("continue", "stop"))


def _auto_or_positive(v):
    if v == "auto":
        return v
    if not _is_number(v):
        raise _Invalid('"auto" or a number > 0', v, wrong_type=not isinstance(v, str))
    if v <= 0:
        raise _Invalid('"auto" or a number > 0', v)
    return float(v)


@dataclass
class PreferenceSection:
    # For train.method = "dpo", "orpo", "kto" or "simpo" (TRL's trainers; SimPO is TRL's CPO
    # with its SimPO loss). beta: how far from the reference the policy may move; "auto" =
    # each method's usual value (0.1; SimPO 2.0).
    beta: float | str = _f("auto", _auto_or_positive)
    loss: str = _f("sigmoid", _choice("sigmoid", "ipo", "hinge", "robust"))  # DPO's loss variant
    label_smoothing: float = _f(0.0, _number(0, 0.5, hi_open=True))  # DPO: noisy-label robustness
    gamma: float = _f(0.5, _number(0))  # SimPO's target reward margin
    desirable_weight: float = _f(1.0, _number(0, lo_open=True))  # KTO
    undesirable_weight: float = _f(1.0, _number(0, lo_open=True))  # KTO
    # DPO / KTO: score the reference once before training (one pass over the data) instead of
    # a reference forward in every step: faster steps, a little less memory.
    precompute_ref: bool = _f(False, _boolean)


def _reward_specs(v):
    expected = ('a non-empty list of reward functions: built-ins such as "format:answer_tags", '
                '"answer:exact", "regex:PATTERN", or your own as "FILE.py:FUNCTION"')
    if not isinstance(v, list):
        raise _Invalid(expected, v, wrong_type=True)
    for i, item in enumerate(v):
        if not isinstance(item, str):
            raise _Invalid("a reward function name (a string)", item, wrong_type=True, at=f"[{i}]")
        if not item.strip():
            raise _Invalid("a reward function name", item, at=f"[{i}]")
        if ".py:" in item or item.endswith(".py"):
            file, _, func = item.rpartition(":") if not item.endswith(".py") else (item, "", "")
            if not func.isidentifier():
                raise _Invalid('"FILE.py:FUNCTION" with a Python function name after the colon',
                               item, at=f"[{i}]")
            continue
        from workbench.rewards.builtin import builtin_for, BUILTINS  # pure Python, no torch

        if builtin_for(item) is None:
            raise _Invalid("a built-in reward or \"FILE.py:FUNCTION\"", item, at=f"[{i}]",
                           hint=_suggest(item, BUILTINS) or "`workbench rewards list` shows the "
                                                            "built-ins")
    return list(v)


def _weights(v):
    expected = "a list of numbers, one per reward function ([] = all 1.0)"
    if not isinstance(v, list) or not all(_is_number(x) for x in v):
        raise _Invalid(expected, v, wrong_type=not isinstance(v, list))
    return [float(x) for x in v]


@dataclass
class RewardsSection:
    # For train.method = "grpo": what earns reward. Built-ins (`workbench rewards list`) and
    # your own functions ("rewards.py:my_reward", TRL's signature; the file is run as Python,
    # like trust_remote_code). The total is the weighted sum.
    functions: list[str] = _f([], _reward_specs)
    weights: list[float] = _f([], _weights)  # [] = every function weighs 1.0
    answer_column: str = _f("answer", _string(True, "a column name"))  # answer:* compare with it
    answer_tag: str = _f("answer", _string(True, "a tag name, e.g. \"answer\""))  # <answer>...</answer>
    tolerance: float = _f(1e-6, _number(0))  # answer:numeric, relative
    schema_column: str = _f("schema", _string(True, "a column name"))  # json:schema
    tools_column: str = _f("tools", _string(True, "a column name"))  # tool_call:valid
    test_prompts: int = _f(8, _integer(1))  # `workbench rewards test`: prompts sampled


GRPO_LOSSES = ("dapo", "grpo", "dr_grpo", "bnpo", "cispo", "sapo")


@dataclass
class GrpoSection:
    # For train.method = "grpo" (TRL's GRPOTrainer). train.batch_size counts completions: each
    # optimizer step sees batch_size * grad_accum / num_generations prompts.
    num_generations: int = _f(8, _integer(2))  # completions sampled per prompt (the group)
    max_prompt_len: int = _f(512, _integer(1))  # longer prompts are dropped, each named
    max_completion_len: int = _f(256, _integer(1))
    temperature: float = _f(1.0, _number(0, lo_open=True))
    top_p: float = _f(1.0, _number(0, 1, lo_open=True))
    beta: float = _f(0.0, _number(0))  # KL to the starting model; 0 = no reference pass
    loss: str = _f("dapo", _choice(*GRPO_LOSSES))  # TRL's loss_type
    scale_rewards: str = _f("group", _choice("group", "batch", "none"))
    mask_truncated: bool = _f(False, _boolean)  # completions cut at max_completion_len: no loss
    # Who samples the completions: transformers' generate, or vLLM colocated on the GPU.
    generation: str = _f("transformers", _choice("transformers", "vllm"))


CLEAN_STEPS = ("drop_empty", "drop_short", "normalize_whitespace", "dedup_exact", "dedup_near",
               "length_filter", "fill_placeholders", "drop_secrets")


@dataclass
class CleanSection:
    # Applied in this order by `workbench data clean --profile`; none by default.
    steps: list[str] = _f([], _list_of(*CLEAN_STEPS))
    min_answer_chars: int = _f(2, _integer(0))
    near_dup_threshold: float = _f(0.85, _number(0, 1, lo_open=True))
    max_tokens: int = _f(0, _integer(0))  # length_filter; 0 = train.max_seq_len
    placeholders: dict[str, str] = _f({}, _string_table("placeholder = value"))
    drop_pii: bool = _f(False, _boolean)


@dataclass
class EvalSection:
    prompts: str = _f("", _string(), path=True)  # JSONL/TOML prompt suite; "" = none
    max_new_tokens: int = _f(128, _integer(1))
    shots: int = _f(3, _integer(0))
    # Test rows scored (a seeded sample above this; 0 = all): keeps the evaluation that ends
    # every run to minutes on a 7B model with a large test split.
    max_test_rows: int = _f(200, _integer(0))
    after_training: bool = _f(True, _boolean)  # evaluate when a run ends (`workbench eval` later)
    time_budget_s: float = _f(0.0, _number(0))  # cap the evaluation: rows sampled to fit; 0 = none
    # The primary metric decides the verdict; "auto" chooses it from the references (closed
    # answers: exact match; short: token F1; long-form: ROUGE-L). `metrics` are reported
    # beside it ([] = the primary's companions).
    metric: str = _f("auto", _choice("auto", "exact_match", "token_f1", "rouge_l", "chrf", "bleu"))
    metrics: list[str] = _f([], _list_of("exact_match", "token_f1", "rouge_l", "chrf", "bleu"))


@dataclass
class ExportSection:
    formats: list[str] = _f(["merged"], _list_of("merged", "bnb4", "ollama", "vllm", "gguf"))
    ollama_quantize: str = _f("q4_K_M", _string(True, "a quantization name like \"q4_K_M\""))


@dataclass
class BudgetSection:
    gpu_hourly_usd: float = _f(0.0, _number(0))
    gpu: str = _f("", _string())  # name of a GPU to price against; "" = the one found


def _gpus(v):
    # "auto" = every visible GPU; N = the first N; "0,3,5" = exactly those (CUDA indices).
    expected = '"auto", a number of GPUs (>= 1) or a list of GPU indices like "0,3,5"'
    if type(v) is int:
        if v < 1:
            raise _Invalid(expected, v)
        return v
    if not isinstance(v, str):
        raise _Invalid(expected, v, wrong_type=True)
    if v == "auto":
        return v
    parts = [p.strip() for p in v.split(",")]
    if not all(p.isdigit() for p in parts):
        raise _Invalid(expected, v, hint=_suggest(v, ["auto"]))
    if len(set(parts)) != len(parts):
        raise _Invalid(expected, v, hint="a GPU is listed twice")
    return ",".join(str(int(p)) for p in parts)


def _zero_stage(v):
    if type(v) is not int or v not in (2, 3):
        raise _Invalid("2 or 3 (DeepSpeed ZeRO stage)", v, wrong_type=type(v) is not int)
    return v


def _port(v):
    if type(v) is not int:
        raise _Invalid("a TCP port in [1, 65535]", v, wrong_type=True)
    if not 1 <= v <= 65535:
        raise _Invalid("a TCP port in [1, 65535]", v)
    return v


@dataclass
class DistributedSection:
    # Several processes for one run, launched by torchrun (workbench/pipeline/launch.py).
    gpus: int | str = _f("auto", _gpus)
    # "auto": DDP when a full replica fits each GPU (the estimator says), FSDP2 otherwise.
    strategy: str = _f("auto", _choice("auto", "ddp", "fsdp", "deepspeed"))
    zero_stage: int = _f(3, _zero_stage)  # DeepSpeed only
    cpu_offload: bool = _f(False, _boolean)  # FSDP / DeepSpeed: optimizer states (and params) in RAM
    processes: int = _f(1, _integer(1))  # CPU processes (gloo) on a machine without GPUs
    nnodes: int = _f(1, _integer(1))
    node_rank: int = _f(0, _integer(0))
    master_addr: str = _f("127.0.0.1", _string(True, "a host name or IP address of node 0"))
    master_port: int = _f(29500, _port)


SECTIONS: dict[str, type] = {
    "model": ModelSection, "data": DataSection, "clean": CleanSection, "lora": LoraSection,
    "train": TrainSection, "preference": PreferenceSection, "rewards": RewardsSection,
    "grpo": GrpoSection, "eval": EvalSection, "export": ExportSection, "budget": BudgetSection,
    "distributed": DistributedSection,
}
TOP_LEVEL_KEYS = ("name", "description")
RESOLVED = "resolved"  # free-form record a run adds to its profile.toml; never validated
SWEEP = "sweep"  # axes for `workbench sweep`; checked by _check_sweep, kept out of SECTIONS
SWEEP_OPTIONS = ("grid", "ranges", "trials", "parallel", "prune")


def _section_fields(section: str) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(SECTIONS[section])}


def _home_of(key: str) -> str | None:
    """The section a key belongs to, for 'did you put it in the wrong section?' hints."""
    for section in SECTIONS:
        if key in _section_fields(section):
            return section
    return None


def iter_schema() -> Iterator[tuple[str, Any, bool, tuple[str, ...]]]:
    """(dotted key, default, required, choices) for every key, in file order. For forms in
    the app and for docs, so neither has to duplicate the schema."""
    yield "name", "", False, ()
    yield "description", "", False, ()
    for section, cls in SECTIONS.items():
        instance = cls()
        for f in dataclasses.fields(cls):
            yield (f"{section}.{f.name}", getattr(instance, f.name), f.metadata["required"],
                   tuple(getattr(f.metadata["check"], "choices", ())))


@dataclass
class Profile:
    name: str
    description: str = ""
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    clean: CleanSection = field(default_factory=CleanSection)
    lora: LoraSection = field(default_factory=LoraSection)
    train: TrainSection = field(default_factory=TrainSection)
    preference: PreferenceSection = field(default_factory=PreferenceSection)
    rewards: RewardsSection = field(default_factory=RewardsSection)
    grpo: GrpoSection = field(default_factory=GrpoSection)
    eval: EvalSection = field(default_factory=EvalSection)
    export: ExportSection = field(default_factory=ExportSection)
    budget: BudgetSection = field(default_factory=BudgetSection)
    distributed: DistributedSection = field(default_factory=DistributedSection)
    # Library versions, dataset hash, seed... as recorded by a run. Free-form.
    resolved: dict[str, Any] = field(default_factory=dict)
    # The [sweep] section (axes of `workbench sweep`), validated; empty for most profiles.
    sweep: dict[str, Any] = field(default_factory=dict)
    # Where the profile came from and where each key was written, for later messages
    # (check_paths). Not part of the profile's identity.
    source: str = field(default="<dict>", compare=False, repr=False)
    locations: dict[str, tuple[str, int | None]] = field(default_factory=dict, compare=False,
                                                          repr=False)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "description": self.description}
        for section in SECTIONS:
            out[section] = dataclasses.asdict(getattr(self, section))
        if self.data.sources and not self.data.train:  # [[data.sources]] stand in for `train`
            del out["data"]["train"]
        if self.resolved:
            out[RESOLVED] = dict(self.resolved)
        if self.sweep:
            out[SWEEP] = dict(self.sweep)
        return out

    def to_toml(self) -> str:
        import tomli_w  # only needed when writing; keeps the read path dependency-free
        return tomli_w.dumps(self.to_dict())

    def get(self, dotted: str) -> Any:
        """`profile.get("train.learning_rate")`; KeyError (with a suggestion) if unknown."""
        head, _, rest = dotted.partition(".")
        if not rest and head in TOP_LEVEL_KEYS:
            return getattr(self, head)
        if rest and head in SECTIONS and rest in _section_fields(head):
            return getattr(getattr(self, head), rest)
        if rest and head == RESOLVED and rest in self.resolved:
            return self.resolved[rest]
        known = [k for k, *_ in iter_schema()]
        raise KeyError(f"unknown key {dotted!r}; " + (_suggest(dotted, known, "'")
                                                      or "see `workbench profile show`"))

    def with_overrides(self, overrides: Iterable[str]) -> Profile:
        """A validated copy with "section.key=value" overrides applied (relative paths in
        overrides are relative to the current directory, as the user typed them there)."""
        raw = self.to_dict()
        issues: list[ProfileIssue] = []
        overridden = _apply_overrides(raw, overrides, issues)
        return _build(raw, label=self.source, base_dir=None, locator=None,
                      overridden=overridden, default_name=self.name, issues=issues)


# ---------------------------------------------------------------------------------------------
# Locating keys in the raw text. tomllib gives no positions for keys, so we scan lines for
# table headers and `key =` statements. Good enough for hand-written profiles: headers,
# plain and dotted keys, quoted keys, and keys inside one-line inline tables point at the
# line of their table.

_BARE_OR_QUOTED = r'(?:[A-Za-z0-9_-]+|"[^"\n]*"|\'[^\'\n]*\')'
_KEY_PATH = rf"{_BARE_OR_QUOTED}(?:\s*\.\s*{_BARE_OR_QUOTED})*"
_HEADER_RE = re.compile(rf"^\s*\[\[?\s*({_KEY_PATH})\s*\]\]?\s*(?:#.*)?$")
_ASSIGN_RE = re.compile(rf"^\s*({_KEY_PATH})\s*=")
_PART_RE = re.compile(_BARE_OR_QUOTED)


def _split_key(text: str) -> list[str]:
    return [p.strip("\"'") for p in _PART_RE.findall(text)]


class _Locator:
    def __init__(self, text: str):
        self.lines: dict[str, int] = {}
        self.duplicates: dict[str, int] = {}  # second occurrence, for "Cannot overwrite" errors
        self.last_line = max(1, text.count("\n") + (0 if text.endswith("\n") else 1))
        table: list[str] = []
        array = False
        in_multiline: str | None = None
        for number, line in enumerate(text.splitlines(), start=1):
            if in_multiline:  # inside a """...""" string: nothing here is a key
                if line.count(in_multiline) % 2 == 1:
                    in_multiline = None
                continue
            header = _HEADER_RE.match(line)
            if header:
                table = _split_key(header.group(1))
                # [[x]] repeats by design; its keys are not duplicates of each other.
                array = line.lstrip().startswith("[[")
                self._record(".".join(table), number, allow_repeat=array)
                continue
            assign = _ASSIGN_RE.match(line)
            if assign:
                parts = table + _split_key(assign.group(1))
                for i in range(len(table) + 1, len(parts) + 1):  # `lora.r = 8` also locates lora
                    # Dotted keys legitimately repeat their prefix (lora.r, lora.alpha).
                    self._record(".".join(parts[:i]), number, allow_repeat=i < len(parts) or array)
                rest = line[assign.end():]
                for quote in ('"""', "'''"):
                    if rest.count(quote) % 2 == 1:
                        in_multiline = quote

    def _record(self, dotted: str, number: int, allow_repeat: bool = False) -> None:
        if dotted in self.lines:
            if not allow_repeat:
                self.duplicates.setdefault(dotted, number)
        else:
            self.lines[dotted] = number

    def line(self, dotted: str) -> int:
        """The line of a key, else of its nearest written parent, else 1."""
        dotted = re.sub(r"\[\d+\]$", "", dotted)
        while dotted:
            if dotted in self.lines:
                return self.lines[dotted]
            dotted = dotted.rpartition(".")[0]
        return 1


# ---------------------------------------------------------------------------------------------
# Overrides


def parse_override(text: str) -> tuple[str, Any]:
    """"train.learning_rate=1e-4" -> ("train.learning_rate", 0.0001). The value is read as a
    TOML value, else taken as a plain string so `model.name_or_path=org/model` works unquoted."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"expected section.key=value, got {text!r}")
    try:
        parsed = tomllib.loads("v = " + value.strip())["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return key, parsed


def _apply_overrides(raw: dict, overrides: Iterable[str],
                     issues: list[ProfileIssue]) -> dict[str, str]:
    """Write overrides into the raw dict before validation, so one pass reports file and
    override problems together. Returns {dotted key: override text} for every key (and every
    section) the overrides introduced, so issues about them point at --set, not the file."""
    overridden: dict[str, str] = {}
    for text in overrides:
        try:
            key, value = parse_override(text)
        except ValueError as e:
            issues.append(ProfileIssue(OVERRIDE, None, text, str(e)))
            continue
        parts = key.split(".")
        if len(parts) > 2 or not all(parts):
            issues.append(ProfileIssue(OVERRIDE, None, key,
                                       "expected section.key=value (or name=/description=)"))
            continue
        if len(parts) == 1:
            raw[key] = value
        else:
            section, name = parts
            if section not in raw:
                raw[section] = {}
                overridden[section] = key
            if not isinstance(raw[section], dict):
                issues.append(ProfileIssue(OVERRIDE, None, key,
                                           f"the profile's {section!r} is not a table"))
                continue
            raw[section][name] = value
        overridden[key] = key
    return overridden


# ---------------------------------------------------------------------------------------------
# Building a Profile from a raw dict: the one place where validation happens.


# Keys that hold either a local path (resolved against the profile's folder) or a hub id.
HUB_OR_PATH = ("model.name_or_path", "data.train", "data.validation")
# Keys that hold a local path or the name of a run (looked up in the runs folder at plan time).
PATH_OR_RUN = ("model.adapter",)
DATA_SUFFIXES = (".json", ".jsonl", ".ndjson", ".csv", ".tsv", ".parquet")


def _looks_local(value: str, base: Path | None) -> bool:
    """A model reference is a local folder if it is written like a path or exists next to the
    profile; otherwise it is a hub id ("meta-llama/Llama-3.1-8B") and must stay as written."""
    if value.startswith((".", "/", "~")) or os.path.isabs(value):
        return True
    if base is None:
        return False
    if (base / value).exists():
        return True
    from workbench.hub import mistyped_local  # light: the standard library only

    # "assets/tiny-modle" next to assets/tiny-model: a typo of a local folder, reported as a
    # missing folder (check_paths), never sent to the hub as "hf download assets/tiny-modle".
    return mistyped_local(value, base) is not None


def _resolve(value: str, base: Path | None) -> str:
    if not value:
        return value
    path = Path(value).expanduser()
    if path.is_absolute() or base is None:
        return str(path)
    return os.path.normpath(base / path)


def _build(raw: dict, *, label: str, base_dir: Path | None, locator: _Locator | None,
           overridden: dict[str, str], default_name: str,
           issues: list[ProfileIssue] | None = None) -> Profile:
    issues = list(issues or [])
    locations: dict[str, tuple[str, int | None]] = {}

    def where(dotted: str) -> tuple[str, int | None]:
        if dotted in overridden or re.sub(r"\[\d+\]$", "", dotted) in overridden:
            return OVERRIDE, None
        return label, (locator.line(dotted) if locator else None)

    def report(dotted: str, message: str) -> None:
        file, line = where(dotted)
        issues.append(ProfileIssue(file, line, overridden.get(dotted, dotted), message))

    invalid: set[str] = set()  # keys given with a bad value: no cross-check reports them again

    def check(dotted: str, checker: Check, value: Any) -> tuple[bool, Any]:
        try:
            return True, checker(value)
        except _Invalid as e:
            report(dotted + e.at, e.message())
            invalid.add(dotted)
            return False, None

    raw = dict(raw)
    sweep = _check_sweep(raw.pop(SWEEP, {}), report)
    resolved = raw.pop(RESOLVED, {})
    if not isinstance(resolved, dict):
        report(RESOLVED, f"expected a table [resolved], got {_show(resolved)}")
        resolved = {}

    top: dict[str, Any] = {"name": default_name, "description": ""}
    for key, value in raw.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                hint = (f'; write it as a table: [{key}] then name_or_path = {_show(value)}'
                        if key == "model" and isinstance(value, str) else "")
                report(key, f"expected a table [{key}], got {_show(value)} "
                            f"({_type_name(value)}){hint}")
        elif key in TOP_LEVEL_KEYS:
            ok, value = check(key, _profile_name if key == "name" else _string(), value)
            if ok:
                top[key] = value
        elif isinstance(value, dict):
            match = _closest(key, list(SECTIONS) + [RESOLVED])
            hint = f"did you mean [{match}]?" if match else "sections are " + ", ".join(
                f"[{s}]" for s in SECTIONS)
            report(key, f"unknown section [{key}]; {hint}")
        else:
            home = _home_of(key)
            hint = (f"it belongs under [{home}]" if home else
                    _suggest(key, TOP_LEVEL_KEYS, "'")
                    or "top-level keys are 'name' and 'description'; the rest goes in sections")
            report(key, f"unknown top-level key; {hint}")

    sections: dict[str, Any] = {}
    valid: dict[str, Any] = {}  # dotted -> value, only for values that passed their check
    for section, cls in SECTIONS.items():
        given = raw.get(section, {})
        if not isinstance(given, dict):  # already reported; don't add "missing key" noise
            sections[section] = cls()
            continue
        fields = _section_fields(section)
        values: dict[str, Any] = {}
        for key, value in given.items():
            dotted = f"{section}.{key}"
            if key not in fields:
                home = _home_of(key)
                hint = (_suggest(key, fields, "'")
                        or (f"'{key}' belongs under [{home}]" if home else
                            f"keys in [{section}] are: " + ", ".join(fields)))
                report(dotted, f"unknown key; {hint}")
                continue
            ok, value = check(dotted, fields[key].metadata["check"], value)
            if not ok:
                continue
            if fields[key].metadata["path"]:
                # Paths typed on the command line are relative to where they were typed.
                base = Path.cwd() if dotted in overridden else base_dir
                # A model without a slash ("gpt2") is still a hub id; a data value is a
                # path unless it reads "owner/name" and names nothing local.
                if dotted in PATH_OR_RUN:
                    value = _resolve(value, base) if _looks_local(value, base) else value
                elif (dotted not in HUB_OR_PATH or _looks_local(value, base)
                        or (dotted != "model.name_or_path" and not _looks_like_hub_id(value))):
                    value = _resolve(value, base)
            if dotted == "data.sources":  # each source's `path` is relative to the profile
                base = Path.cwd() if dotted in overridden else base_dir
                value = [{**spec, "path": _resolve(spec["path"], base)} if "path" in spec
                         else spec for spec in value]
            if dotted == "rewards.functions":  # "rewards.py:f": the file is relative too
                base = Path.cwd() if dotted in overridden else base_dir
                value = [_resolve_reward_file(spec, base) for spec in value]
            values[key] = value
            valid[dotted] = value
            locations[dotted] = where(dotted)
        for key, f in fields.items():
            if f.metadata["required"] and key not in values and key not in given:
                if (section, key) == ("data", "train") and "sources" in given:
                    continue  # [[data.sources]] stand in for `train`
                dotted = f"{section}.{key}"
                if section in raw:
                    report(dotted, f'required key is missing; add `{key} = "..."` under '
                                   f"[{section}]")
                else:
                    report(dotted, f"required key is missing; add a [{section}] section with "
                                   f'`{key} = "..."`')
        sections[section] = cls(**values)

    _cross_checks(valid, report, invalid)
    if issues:
        # File order reads best; override issues come last, in the order typed.
        order = {id(i): n for n, i in enumerate(issues)}
        issues.sort(key=lambda i: (i.file == OVERRIDE, i.line or 0, order[id(i)]))
        raise ProfileError(issues)
    return Profile(**top, **sections, resolved=resolved, sweep=sweep, source=label,
                   locations=locations)


def _check_sweep(value: Any, report: Callable[[str, str], None]) -> dict[str, Any]:
    """[sweep]: grid = { "lora.r" = [8, 16], "lora.r+lora.alpha" = [[8, 16], [16, 32]] },
    ranges = { "train.learning_rate" = "log:1e-5..1e-3" }, trials, parallel, prune.
    Axis keys must be profile keys (with a did-you-mean); the values themselves are checked
    against the schema when the sweep starts (workbench/sweep/definition.py)."""
    if not isinstance(value, dict):
        report(SWEEP, f"expected a table [sweep], got {_show(value)} ({_type_name(value)})")
        return {}
    known = [k for k, *_ in iter_schema()]
    out: dict[str, Any] = {}
    for key, item in value.items():
        dotted = f"{SWEEP}.{key}"
        if key not in SWEEP_OPTIONS:
            report(dotted, "unknown key; " + (_suggest(key, SWEEP_OPTIONS, "'")
                                              or "keys in [sweep] are: " + ", ".join(SWEEP_OPTIONS)))
            continue
        if key in ("grid", "ranges"):
            if not isinstance(item, dict):
                report(dotted, f"expected a table of axes, e.g. {key} = "
                               + ('{ "lora.r" = [8, 16] }' if key == "grid"
                                  else '{ "train.learning_rate" = "log:1e-5..1e-3" }')
                               + f", got {_show(item)}")
                continue
            good = {}
            for axis, choices in item.items():
                bad = [k for k in axis.split("+") if k not in known]
                for k in bad:
                    report(f"{dotted}.{axis}", f"{k!r} is not a profile key; "
                           + (_suggest(k, known, "'") or "see `workbench profile show`"))
                if bad:
                    continue
                if key == "grid" and (not isinstance(choices, list) or not choices):
                    report(f"{dotted}.{axis}", f"expected a non-empty list of values, got {_show(choices)}")
                elif key == "ranges" and not isinstance(choices, str):
                    report(f"{dotted}.{axis}", 'expected a range like "log:1e-5..1e-3", '
                                               f"got {_show(choices)}")
                else:
                    good[axis] = choices
            out[key] = good
            continue
        checker = {"trials": _integer(0), "parallel": _integer(1), "prune": _boolean}[key]
        try:
            out[key] = checker(item)
        except _Invalid as e:
            report(dotted, e.message())
    return out


def _cross_checks(valid: dict[str, Any], report: Callable[[str, str], None],
                  invalid: set[str] = frozenset()) -> None:
    """Rules between keys. Only values that passed their own check take part, so one mistake
    is not reported twice."""
    def v(dotted: str) -> Any:
        if dotted in valid:
            return valid[dotted]
        section, _, key = dotted.partition(".")
        return getattr(SECTIONS[section](), key)

    patience = v("train.early_stopping_patience")
    if patience > 0:
        if v("train.eval_steps") == 0:
            report("train.early_stopping_patience",
                   "early stopping needs evaluation; set train.eval_steps > 0 "
                   "or early_stopping_patience = 0")
        elif v("train.save_steps") % v("train.eval_steps") != 0:
            # Early stopping restores the best checkpoint, which transformers only allows
            # when every evaluation step is also a save step.
            report("train.save_steps",
                   f"with early stopping, save_steps must be a multiple of eval_steps "
                   f"({v('train.eval_steps')}), got {v('train.save_steps')}")
    _distributed_checks(v, report)
    if v("train.method") != "sft" and v("train.packing") is True:
        report("train.packing", f"packing is for supervised fine-tuning; train.method = "
                                f"\"{v('train.method')}\" does not pack rows, so set packing = "
                                "\"auto\" or false")
    if v("train.method") == "grpo":
        _grpo_checks(v, report, invalid)
    if v("data.sources") and "data.train" in valid:
        report("data.sources", "give either data.train (one source) or [[data.sources]] tables "
                               "(a mixture), not both; a single source can be one "
                               "[[data.sources]] table")
    if v("data.streaming") is True and v("train.max_steps") <= 0:
        # A stream has no length, so epochs cannot be counted (train/streaming.py).
        report("train.max_steps", "data.streaming = true reads rows one by one and cannot count "
                                  "epochs: set train.max_steps to the number of optimizer steps "
                                  "(e.g. max_steps = 1000), or data.streaming = false")
    if v("data.sources") and v("train.method") not in ("sft",):
        report("data.sources", f"a mixture of [[data.sources]] is for supervised fine-tuning; "
                               f"train.method = \"{v('train.method')}\" reads one source: set "
                               "data.train")
    if v("lora.method") == "qlora" and v("train.device") == "cpu":
        report("lora.method", 'QLoRA needs a CUDA GPU (bitsandbytes 4-bit); use method = '
                              '"lora" on CPU or set train.device = "auto"')
    _lora_checks(v, report)


# Inits that move part of the base weights into the adapter (W = W_res + B0 A0): the run saves
# the adapter converted to a plain LoRA of the original base (workbench/train/lora_setup.py).
BASE_CHANGING_INITS = ("pissa", "olora", "loftq")


def _lora_checks(v: Callable[[str], Any], report: Callable[[str, str], None]) -> None:
    init = v("lora.init")
    family = "pissa" if init.startswith("pissa") else init
    if v("model.adapter"):
        for key, default in (("lora.init", "default"), ("lora.rslora", False),
                             ("lora.train_embeddings", False)):
            if v(key) != default:
                report(key, f"model.adapter continues an existing adapter, which keeps its own "
                            f"settings: {key} only applies to a fresh adapter; remove it, or "
                            f"set model.adapter = \"\" to start a new one")
        return
    if family in BASE_CHANGING_INITS:
        what = {"pissa": "PiSSA", "olora": "OLoRA", "loftq": "LoftQ"}[family]
        if v("lora.method") == "qlora":
            why = ("LoftQ quantizes a full-precision base itself: use lora.method = \"lora\" "
                   "(or init = \"default\" with QLoRA)" if family == "loftq" else
                   f"{what} rewrites the base weights (base minus the adapter's start), which a "
                   "4-bit base cannot hold: use lora.method = \"lora\" or \"dora\"")
            report("lora.init", why)
        if v("train.method") != "sft":
            report("lora.init", f"{what} changes the base weights, so the adapter switched off "
                                f"is no longer the base model that train.method = "
                                f"\"{v('train.method')}\" uses as its reference: use "
                                f"init = \"default\" or \"gaussian\", or train.method = \"sft\"")
        gpus = v("distributed.gpus")
        if v("distributed.processes") > 1 or (gpus > 1 if isinstance(gpus, int)
                                              else "," in gpus):
            report("lora.init", f"{what} adapters are converted to a plain LoRA when saved, "
                                "which a run split over several processes cannot do yet: train "
                                "on one GPU, or use init = \"default\" or \"gaussian\"")
        if family == "loftq" and v("train.device") == "cpu":
            report("lora.init", 'LoftQ quantizes with bitsandbytes on a CUDA GPU: set '
                                'train.device = "auto" on a GPU machine, or choose another init')
        if family == "loftq" and v("lora.method") == "dora":
            report("lora.init", 'LoftQ is for plain LoRA adapters: use lora.method = "lora"')
    if v("train.embedding_learning_rate") and not v("lora.train_embeddings"):
        report("train.embedding_learning_rate",
               "embedding_learning_rate is the learning rate of trained embeddings: set "
               "lora.train_embeddings = true, or embedding_learning_rate = 0")


def _grpo_checks(v: Callable[[str], Any], report: Callable[[str, str], None],
                 invalid: set[str]) -> None:
    functions, weights = v("rewards.functions"), v("rewards.weights")
    if not functions and "rewards.functions" not in invalid:
        report("rewards.functions", 'train.method = "grpo" learns from rewards: name at least '
                                    'one, e.g. functions = ["format:answer_tags", "answer:exact"] '
                                    "(`workbench rewards list` shows the built-ins)")
    elif weights and len(weights) != len(functions) and "rewards.functions" not in invalid:
        report("rewards.weights", f"{len(weights)} weights for {len(functions)} reward functions: "
                                  "give one weight per function, or [] for all 1.0")
    group, per_step = v("grpo.num_generations"), v("train.batch_size") * v("train.grad_accum")
    if per_step % group:
        report("train.batch_size", f"GRPO samples groups of grpo.num_generations = {group} "
               f"completions, and batch_size * grad_accum = {per_step} completions a step must "
               f"hold whole groups: make it a multiple of {group} (e.g. batch_size = {group})")
    if v("grpo.generation") == "vllm" and v("train.device") == "cpu":
        report("grpo.generation", 'vLLM generation needs a CUDA GPU; use generation = '
                                  '"transformers" on the CPU')


def _distributed_checks(v: Callable[[str], Any], report: Callable[[str, str], None]) -> None:
    if v("distributed.node_rank") >= v("distributed.nnodes"):
        report("distributed.node_rank",
               f"node_rank counts from 0 and must be below nnodes ({v('distributed.nnodes')}), "
               f"got {v('distributed.node_rank')}")
    if v("distributed.processes") > 1 and v("train.device") == "cuda":
        report("distributed.processes",
               "processes is for CPU runs (gloo); on GPUs use distributed.gpus (one process "
               "per GPU)")
    if v("distributed.processes") > 1 and v("distributed.strategy") in ("fsdp", "deepspeed"):
        report("distributed.strategy",
               f'{v("distributed.strategy")} needs GPUs; CPU processes run "ddp" (or "auto")')
    if v("distributed.cpu_offload") and v("distributed.strategy") == "ddp":
        report("distributed.cpu_offload",
               'cpu_offload needs strategy = "fsdp" or "deepspeed" (DDP keeps a full replica '
               "on each GPU)")


# ---------------------------------------------------------------------------------------------
# Finding, loading, saving


def _resolve_reward_file(spec: str, base: Path | None) -> str:
    """"rewards.py:f" with the file resolved like every path in a profile."""
    if ".py:" not in spec:
        return spec
    file, _, func = spec.rpartition(":")
    return f"{_resolve(file, base)}:{func}"


def shipped_profiles_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "profiles"


def user_profiles_dir() -> Path:
    if os.environ.get("WORKBENCH_PROFILE_DIR"):
        return Path(os.environ["WORKBENCH_PROFILE_DIR"]).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "workbench" / "profiles"


def default_search_dirs() -> list[Path]:
    """Where names are looked up, in order: shipped presets first, then the user's own."""
    return [shipped_profiles_dir(), user_profiles_dir()]


def list_profiles(search_dirs: Iterable[Path] | None = None) -> dict[str, Path]:
    """{name: path} of every profile found; an earlier folder wins a name clash."""
    found: dict[str, Path] = {}
    for folder in search_dirs if search_dirs is not None else default_search_dirs():
        if Path(folder).is_dir():
            for path in sorted(Path(folder).glob("*.toml")):
                found.setdefault(path.stem, path)
    return found


def _display(path: Path) -> str:
    """Paths in messages: relative to the current directory when under it, as people see
    them in their shell."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _looks_like_path(ref: str) -> bool:
    return ref.endswith(".toml") or "/" in ref or os.sep in ref or ref.startswith(("~", "."))


def find_profile(ref: str | Path, search_dirs: Iterable[Path] | None = None) -> Path:
    """A path to an existing profile file, for a path or a name; ProfileError otherwise."""
    path = Path(ref).expanduser()
    # A bare word is a name unless such a file exists here; a folder called "demo" in the
    # current directory must not shadow the "demo" preset.
    if isinstance(ref, Path) or _looks_like_path(str(ref)) or path.is_file():
        if path.is_dir():
            inside = ", ".join(p.name for p in sorted(path.glob("*.toml"))) or "none"
            raise ProfileError([ProfileIssue(
                _display(path), None, "", f"is a folder, not a profile file; give a .toml "
                                          f"file (profiles in it: {inside})")])
        if path.is_file():
            return path
        raise ProfileError([ProfileIssue(_display(path), None, "", "no such file; check the path")])
    dirs = [Path(d) for d in (search_dirs if search_dirs is not None else default_search_dirs())]
    for folder in dirs:
        candidate = folder / f"{ref}.toml"
        if candidate.is_file():
            return candidate
    available = list_profiles(dirs)
    looked = ", ".join(str(d) + ("" if d.is_dir() else " (missing)") for d in dirs)
    message = f"no profile named {str(ref)!r}; looked in {looked}; available: " + (
        ", ".join(available) or "none")
    hint = _suggest(str(ref), available, "'")
    raise ProfileError([ProfileIssue(str(ref), None, "",
                                     message + (f"; {hint}" if hint else ""))])


_HINTS = {  # tomllib's words -> what to do about it
    "Cannot overwrite a value": "a key is set twice; keep one of them",
    "Cannot declare": "a [section] appears twice; merge the two into one",
    "Invalid value": 'text values need quotes (key = "text"); true/false are lowercase',
    "Expected newline or end of document": "one `key = value` per line; "
                                          "quote text that contains spaces",
    "Expected '=' after a key": "each setting is written `key = value`",
    "Unterminated string": "a string is missing its closing quote",
    "Unclosed array": "a list is missing its closing ]",
    "Expected ']' at the end of a table declaration": "a [section] header is missing its ]",
}


def _syntax_issue(label: str, error: tomllib.TOMLDecodeError, locator: _Locator) -> ProfileIssue:
    text = str(error)
    match = re.search(r"\(at line (\d+), column (\d+)\)", text)
    line, column = (int(match.group(1)), int(match.group(2))) if match else (None, None)
    reason = re.sub(r"\s*\(at [^)]*\)$", "", text)
    if reason.startswith("Cannot overwrite a value") and locator.duplicates:
        # tomllib often says "at end of document"; our scan knows the repeated key.
        key, line = min(locator.duplicates.items(), key=lambda kv: kv[1])
        return ProfileIssue(label, line, key, "set twice (invalid TOML); keep one of them")
    if line is None:  # "at end of document"
        line = locator.last_line
    hint = next((h for start, h in _HINTS.items() if reason.startswith(start)),
                "see https://toml.io for the syntax")
    declared = re.match(r"Cannot declare \((.*)\) twice", reason)
    if declared:  # "Cannot declare ('train',) twice" -> "[train] is declared twice"
        reason = "[" + ".".join(re.findall(r"'([^']*)'", declared.group(1))) + "] is declared twice"
    return ProfileIssue(label, line, "", f"invalid TOML: {reason}; {hint}", column)


def load_profile(ref: str | Path, overrides: Iterable[str] = (),
                 search_dirs: Iterable[Path] | None = None) -> Profile:
    """Read, check and resolve a profile given as a path or a name (see find_profile).
    Raises ProfileError listing every problem found."""
    path = find_profile(ref, search_dirs)
    label = _display(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ProfileError([ProfileIssue(label, line, "", (
            f"not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
            "save the file as UTF-8"))]) from None
    locator = _Locator(text)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ProfileError([_syntax_issue(label, e, locator)]) from None
    issues: list[ProfileIssue] = []
    overridden = _apply_overrides(raw, overrides, issues)
    return _build(raw, label=label, base_dir=path.absolute().parent, locator=locator,
                  overridden=overridden, default_name=path.stem, issues=issues)


def profile_from_dict(d: dict, source: str = "<dict>",
                      base_dir: str | Path | None = None) -> Profile:
    """Validate a dict the way a file is validated (used to reload a run's profile.toml,
    whose [resolved] table is kept as is). Relative paths are resolved against `base_dir`,
    else left as written."""
    name = Path(source).stem if source and not source.startswith("<") else "profile"
    return _build(d, label=source, base_dir=Path(base_dir) if base_dir else None,
                  locator=None, overridden={}, default_name=name)


def save_profile(profile: Profile, path: str | Path) -> None:
    """Write the full profile atomically: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = profile.to_toml()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_paths(profile: Profile) -> list[ProfileIssue]:
    """Local files the profile names but that are missing, each at the line of its key.
    Separate from loading because a profile may be written before its data exists; the
    runner calls this before creating anything. Empty list = all good."""
    issues: list[ProfileIssue] = []

    def report(dotted: str, message: str) -> None:
        file, line = profile.locations.get(dotted, (profile.source, None))
        issues.append(ProfileIssue(file, line, dotted, message))

    def relative_to(dotted: str) -> str:
        # Where a relative path was looked for: the profile's folder, or for a --set value
        # the folder the command was typed in (Profile.with_overrides, _build).
        if profile.locations.get(dotted, ("",))[0] == OVERRIDE:
            return f"a relative path given with --set is relative to the current folder, {Path.cwd()}"
        return "relative paths are relative to the profile's folder"

    def closest(value: str) -> str:
        from workbench.hub import closest_entry

        near = closest_entry(Path(value))
        return f"; did you mean {near}?" if near is not None else ""

    model = profile.model.name_or_path
    if _looks_local(model, None):
        if not Path(model).exists():
            report("model.name_or_path", f"model folder not found: {model}{closest(model)} "
                   f"({relative_to('model.name_or_path')}); fix the path or use a hub id")
        elif not Path(model).is_dir():
            report("model.name_or_path", f"expected a model folder, got a file: {model}")
        elif not (Path(model) / "config.json").is_file():
            report("model.name_or_path", f"no config.json in {model}; is this a model folder?")
    for dotted in ("data.train", "data.validation"):
        # A data file, a folder (saved splits or a `save_to_disk` dataset) or a hub dataset id.
        value = profile.get(dotted)
        if value and not Path(value).exists() and not _looks_like_hub_id(value):
            report(dotted, f"file not found: {value}{closest(value)} ({relative_to(dotted)})")
    for i, source in enumerate(profile.data.sources):
        path = source.get("path")
        if path and not Path(path).exists():
            report("data.sources", f"[{i}]: source file not found: {path}{closest(path)} "
                                   f"({relative_to('data.sources')})")
    for i, spec in enumerate(profile.rewards.functions):
        file = spec.rpartition(":")[0] if ".py:" in spec else ""
        if file and not Path(file).is_file():
            report("rewards.functions", f"[{i}]: reward file not found: {file} (relative paths "
                                        "are relative to the profile's folder)")
    for dotted in ("model.chat_template", "eval.prompts"):
        value = profile.get(dotted)
        if value and not Path(value).is_file():
            what = "folder, expected a file" if Path(value).is_dir() else "file not found"
            report(dotted, f"{what}: {value} ({relative_to(dotted)})")
    return issues


def paths_hint(issues: Iterable[ProfileIssue]) -> str:
    """What to do about check_paths' issues, naming only the keys that are wrong."""
    keys = list(dict.fromkeys(i.key for i in issues))
    return ("fix the path in the profile, or override it, e.g. "
            + " or ".join(f"--set {key}=PATH" for key in keys))


def check_hub_ids(profile: Profile) -> list[ProfileIssue]:
    """Warnings, not errors: what the profile would fetch from the Hugging Face Hub. A model
    id that is not (fully) in the local cache is downloaded by `workbench run`, which needs a
    network; so is a Hub dataset (data.train / data.validation naming no file, which may also
    be a mistyped path, or a [[data.sources]] `name`) that is not in the cache; a cached one
    loads offline too. Empty list = nothing to fetch."""
    from workbench import hub  # lazy: huggingface_hub is imported only for the cache look-up

    issues: list[ProfileIssue] = []

    def report(dotted: str, message: str) -> None:
        file, line = profile.locations.get(dotted, (profile.source, None))
        issues.append(ProfileIssue(file, line, dotted, message))

    model = profile.model.name_or_path
    if model and not _looks_local(model, None):
        missing = hub.missing_parts(model, profile.model.revision)
        if missing:
            where = ("is not in the Hugging Face cache" if len(missing) == len(hub.MODEL_PARTS)
                     else f"is only partly in the Hugging Face cache (no {', '.join(missing)})")
            then = ("with HF_HUB_OFFLINE=1 set, `workbench run` stops until it is downloaded"
                    if hub.is_offline() else "`workbench run` downloads it, which needs a network")
            report("model.name_or_path", f"{model!r} {where} ({hub.cache_dir()}); {then} "
                                         f"(or fetch it now: `hf download {model}`)")
    # Hub datasets: one in the cache loads offline too, so only an uncached one is worth saying.
    from workbench.data.hub_datasets import datasets_cache_dir, is_cached

    def uncached(dataset_id: str) -> str:
        caches = f"{datasets_cache_dir()} or {hub.cache_dir()}"
        if hub.is_offline():
            return (f"{dataset_id!r} is not in the Hugging Face cache ({caches}); with "
                    "HF_HUB_OFFLINE=1 set, reading it fails until it is cached (load it once where "
                    f"the Hub is reachable, or `hf download {dataset_id} --repo-type dataset`)")
        return (f"{dataset_id!r} is not in the Hugging Face cache ({caches}); it is downloaded "
                "when first read, which needs a network (then it is cached and loads offline)")

    for dotted in ("data.train", "data.validation"):
        value = profile.get(dotted)
        if value and not Path(value).exists() and _looks_like_hub_id(value) and not is_cached(value):
            report(dotted, f"no file {value!r} (relative paths are relative to the profile's "
                           "folder), so it is read as a Hugging Face Hub dataset id; "
                           f"{uncached(value)}; if it is a local file, fix the path")
    for i, source in enumerate(profile.data.sources):
        name = source.get("name")
        if name and not is_cached(name, source.get("revision")):
            report("data.sources", f"[{i}] {uncached(name)}")
    return issues


def _looks_like_hub_id(value: str) -> bool:
    """`owner/name` as written: one slash, no file extension, not a path."""
    return (re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", value) is not None
            and Path(value).suffix.lower() not in DATA_SUFFIXES)


# ---------------------------------------------------------------------------------------------
# Showing and comparing


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


_MISSING = object()


def diff_profiles(a: Profile, b: Profile) -> list[tuple[str, Any, Any]]:
    """(dotted key, value in a, value in b) for every key that differs, in schema order.
    A key present on one side only (in [resolved]) has None on the other."""
    fa, fb = _flatten(a.to_dict()), _flatten(b.to_dict())
    keys = list(fa) + [k for k in fb if k not in fa]
    out = []
    for key in keys:
        old, new = fa.get(key, _MISSING), fb.get(key, _MISSING)
        if old != new:
            out.append((key, None if old is _MISSING else old, None if new is _MISSING else new))
    return out


def format_diff(diff: list[tuple[str, Any, Any]], a_label: str = "a", b_label: str = "b") -> str:
    if not diff:
        return f"{a_label} and {b_label} are the same"

    def show(v: Any) -> str:
        return "(unset)" if v is None else _show(v)

    width = max(len(k) for k, _, _ in diff)
    lines = [f"{'key':<{width}}  {a_label} -> {b_label}"]
    for key, old, new in diff:
        lines.append(f"{key:<{width}}  {show(old)} -> {show(new)}")
    return "\n".join(lines)


def format_profile(profile: Profile, overrides: Iterable[str] = ()) -> str:
    """The full resolved profile as TOML (every key, defaults included), for `profile show`;
    the overrides applied are named in its header, so a changed value is not taken for the
    file's."""
    header = f"# profile {profile.name!r} from {profile.source}\n"
    for text in overrides:
        header += f"# with --set {text} (not saved in the file)\n"
    header += "# every key is shown, defaults included; paths are resolved\n\n"
    return header + profile.to_toml()


def packs_rows(train) -> bool:
    """Whether a run's [train] asks for packed, padding-free batches: "auto" and true pack
    supervised fine-tuning only (preference pairs and GRPO groups are whole rows). Whether
    the model's attention keeps packed rows apart is decided when the run starts
    (train/packing.py), with a fallback the log states."""
    return getattr(train, "method", "sft") == "sft" and train.packing in (True, "auto")

