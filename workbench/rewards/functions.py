"""The reward functions a profile names, loaded and made safe to call.

`[rewards] functions` lists built-ins ("answer:exact", see builtin.py) and the user's own
functions as "FILE.py:FUNCTION". A user's function has TRL's reward signature
(`f(prompts, completions, completion_ids=None, **columns) -> list[float]`), so the same file
works with TRL used directly. Loading a reward file runs it as Python: it is the user's code,
like a model's remote code, and the README says so.

Every call goes through `RewardSet.score`, which turns a reward's mistakes into a RewardError
naming the file, the function, the data row and the completion that caused it: a function that
raises, returns the wrong number of values, or a value that is not a finite number. TRL would
otherwise fail with a bare traceback from inside its trainer, or turn None into NaN silently.

Pure Python: the app and `workbench rewards list` import this without torch.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from workbench.rewards.builtin import builtin_for, text_of

# Keyword arguments TRL passes that are not data columns.
TRL_EXTRAS = ("trainer_state", "log_extra", "log_metric", "environments")


class RewardError(Exception):
    """A reward function that cannot be used, or that misbehaved on a completion."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message, self.hint = message, hint


@dataclass(frozen=True)
class RewardFunction:
    spec: str  # as written in the profile ("answer:exact", "/abs/rewards.py:my_reward")
    fn: Callable[..., Sequence[Any]]
    weight: float
    file: str = ""  # the user's file, "" for a built-in
    columns: tuple[str, ...] = ()  # reference columns a built-in reads

    @property
    def name(self) -> str:
        """What logs and tables call it: the spec, a user's function by FILE:FUNCTION."""
        if not self.file:
            return self.spec
        return f"{Path(self.file).name}:{self.spec.rpartition(':')[2]}"

    @property
    def where(self) -> str:
        if not self.file:
            return f"built-in reward {self.spec!r}"
        func = self.spec.rpartition(":")[2]
        try:
            line = inspect.getsourcelines(self.fn)[1]
            return f"{self.file}:{line}: {func}()"
        except (OSError, TypeError):
            return f"{self.file}: {func}()"


@dataclass
class RewardSet:
    functions: list[RewardFunction]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.functions]

    @property
    def weights(self) -> list[float]:
        return [f.weight for f in self.functions]

    def total(self, scores: Sequence[float]) -> float:
        """The weighted sum of one completion's rewards (TRL's default aggregation)."""
        return sum(w * s for w, s in zip(self.weights, scores))

    def missing_columns(self, columns: set[str]) -> list[str]:
        """Reference columns a built-in reads that the data does not have, said for people."""
        return [f"{f.name} reads column {c!r}" for f in self.functions for c in f.columns
                if c not in columns]

    def score(self, prompts: list, completions: list, columns: dict[str, list],
              rows: Sequence[str], completion_ids: list | None = None,
              extras: dict | None = None) -> list[list[float]]:
        """scores[i][j]: function j on completion i; `rows` names each completion's data row
        (file:row) for errors."""
        out = [[0.0] * len(self.functions) for _ in completions]
        for j, f in enumerate(self.functions):
            for i, value in enumerate(call(f, prompts, completions, columns, rows,
                                           completion_ids, extras)):
                out[i][j] = value
        return out


def call(f: RewardFunction, prompts: list, completions: list, columns: dict[str, list],
         rows: Sequence[str], completion_ids: list | None = None,
         extras: dict | None = None) -> list[float]:
    """One reward function on a batch, checked: a list of finite floats, one per completion."""
    n = len(completions)
    try:
        values = f.fn(prompts=prompts, completions=completions, completion_ids=completion_ids,
                      **columns, **(extras or {}))
    except Exception as exc:  # noqa: BLE001 - the user's code: any failure is reported, located
        i = _failing_row(f, prompts, completions, columns, completion_ids, extras)
        at = f" on {rows[i]}, completion {_show(completions[i])}" if i is not None else ""
        where = f.where
        if f.file and (line := _traceback_line(exc, str(Path(f.file).resolve()))):
            where = f"{f.file}{line}: {f.spec.rpartition(':')[2]}()"  # where it raised
        raise RewardError(f"{where} raised {type(exc).__name__}: {exc}{at}",
                          hint=_fix_hint(f)) from exc
    try:
        values = list(values)
    except TypeError:
        raise RewardError(f"{f.where} returned {type(values).__name__}, expected a list of "
                          f"{n} numbers (one per completion)", hint=_fix_hint(f)) from None
    if len(values) != n:
        raise RewardError(f"{f.where} returned {len(values)} values for {n} completions "
                          f"(the batch starts at {rows[0] if rows else '?'}): a reward function "
                          "returns one number per completion", hint=_fix_hint(f))
    checked = []
    for i, v in enumerate(values):
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) or _is_numpy_number(v)
        if not ok or not math.isfinite(float(v)):
            raise RewardError(f"{f.where} returned {v!r} ({type(v).__name__}) for {rows[i]}, "
                              f"completion {_show(completions[i])}: expected a finite number",
                              hint=_fix_hint(f))
        checked.append(float(v))
    return checked


def _failing_row(f, prompts, completions, columns, completion_ids, extras) -> int | None:
    """Which completion makes the function raise: each is tried alone (after the batch failed)."""
    for i in range(len(completions)):
        try:
            f.fn(prompts=prompts[i:i + 1], completions=completions[i:i + 1],
                 completion_ids=completion_ids[i:i + 1] if completion_ids else None,
                 **{k: v[i:i + 1] for k, v in columns.items()}, **(extras or {}))
        except Exception:  # noqa: BLE001
            return i
    return None


def _is_numpy_number(v: Any) -> bool:
    return type(v).__module__ == "numpy" and hasattr(v, "dtype") and v.dtype.kind in "iuf"


def _show(completion: Any, limit: int = 120) -> str:
    text = text_of(completion)
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _fix_hint(f: RewardFunction) -> str:
    if f.file:
        return (f"fix {f.file} and try it with `workbench rewards test PROFILE` before training "
                "(it calls each reward on sampled completions)")
    return "check the reward's settings in [rewards] (`workbench rewards list` describes them)"


def load_rewards(section) -> RewardSet:
    """The profile's [rewards] as callables. Raises RewardError for a built-in with a bad
    argument, a file that does not import, or a name that is not a function in it."""
    specs = list(section.functions)
    weights = list(section.weights) or [1.0] * len(specs)
    out = []
    for spec, weight in zip(specs, weights):
        found = builtin_for(spec)
        if found is not None:
            builtin, argument = found
            try:
                fn = builtin.make(argument, section)
            except ValueError as exc:
                raise RewardError(f"rewards.functions: {exc}",
                                  hint="`workbench rewards list` shows each built-in's argument"
                                  ) from None
            out.append(RewardFunction(spec, fn, weight, columns=tuple(builtin.columns(section))))
        else:
            file, _, func = spec.rpartition(":")
            out.append(RewardFunction(spec, load_user_function(file, func), weight, file=file))
    return RewardSet(out)


_MODULES: dict[tuple[str, int], Any] = {}


def load_user_function(file: str, func: str) -> Callable:
    """FUNCTION from the Python file FILE (imported once a process, and again once it has
    changed; importing runs the file)."""
    path = Path(file)
    if not path.is_file():
        raise RewardError(f"reward file not found: {file}",
                          hint="rewards.functions names it as \"FILE.py:FUNCTION\", relative to "
                               "the profile's folder")
    key = str(path.resolve())
    # Keyed by the file's modification time too: a file edited since (the app's `e`) is
    # imported again by the next reward test.
    module = _MODULES.get((key, path.stat().st_mtime_ns))
    if module is None:
        name = f"workbench_rewards_{abs(hash(key))}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and pickling look modules up by name
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - the user's file; say where it broke
            del sys.modules[name]
            line = _traceback_line(exc, key)
            raise RewardError(f"{file}{line}: importing the reward file raised "
                              f"{type(exc).__name__}: {exc}",
                              hint="fix the file; `python FILE` shows the full traceback") from None
        _MODULES[(key, path.stat().st_mtime_ns)] = module
    fn = getattr(module, func, None)
    if not callable(fn):
        defined = [n for n, v in vars(module).items() if inspect.isfunction(v)
                   and getattr(v, "__module__", "") == module.__name__ and not n.startswith("_")]
        raise RewardError(f"{file}: no function {func!r}" + (
            f" (it defines {', '.join(defined)})" if defined else " (it defines no functions)"),
            hint="name it in rewards.functions as \"FILE.py:FUNCTION\"")
    return fn


def _traceback_line(exc: BaseException, file: str) -> str:
    line = getattr(exc, "lineno", None) if isinstance(exc, SyntaxError) else None
    tb = exc.__traceback__
    while tb is not None:
        if Path(tb.tb_frame.f_code.co_filename).resolve() == Path(file):
            line = tb.tb_lineno
        tb = tb.tb_next
    return f":{line}" if line else ""
