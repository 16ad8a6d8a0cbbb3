"""What sampled completions' rewards say about a GRPO run before it starts.

GRPO learns from differences inside a group (the completions of one prompt): each
completion's advantage is its reward minus its group's mean. So a run learns nothing from a
group whose completions all score the same, from a reward that is the same everywhere, or from
one that never fires; and completions cut at max_completion_len are scored on half an answer.
`diagnose` finds each of these in a table of scores and says in plain words what to change.

Pure Python: used by `workbench rewards test`, the app's reward test, and tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import mean, pstdev

SAME = 1e-9  # rewards closer than this are the same for a group's advantage


@dataclass
class Group:
    """One prompt's sampled completions: scores[i][j] is function j on completion i."""

    prompt: str
    completions: list[str]
    scores: list[list[float]]
    totals: list[float]
    truncated: list[bool] = field(default_factory=list)
    row: str = ""

    @property
    def has_signal(self) -> bool:
        return len(self.totals) > 1 and max(self.totals) - min(self.totals) > SAME


@dataclass
class Flag:
    kind: str  # "constant" | "never_fires" | "zero_variance" | "truncated" | "no_signal"
    message: str
    function: str = ""  # the reward function it is about, "" for the whole run

    def to_dict(self) -> dict:
        return {"kind": self.kind, "message": self.message, "function": self.function}


def diagnose(groups: list[Group], names: list[str], max_completion_len: int) -> dict:
    """{"flags": [...], "first_steps": {...}, "verdict": {"ok": bool, "text": str}}."""
    flags: list[Flag] = []
    if not groups or not any(g.totals for g in groups):
        return {"flags": [], "first_steps": {}, "per_function": [],
                "verdict": {"ok": False, "text": "no completions were scored"}}
    per_function = []
    for j, name in enumerate(names):
        values = [s[j] for g in groups for s in g.scores]
        fired = sum(v != 0 for v in values)
        varied = sum(1 for g in groups if len(g.scores) > 1
                     and max(s[j] for s in g.scores) - min(s[j] for s in g.scores) > SAME)
        per_function.append({"function": name, "mean": round(mean(values), 4),
                             "std": round(pstdev(values), 4), "fired": fired, "of": len(values),
                             "groups_with_variance": varied})
        if max(values) - min(values) <= SAME:
            if all(v == 0 for v in values):
                flags.append(Flag("never_fires", f"{name} never fires: 0 on all {len(values)} "
                                  "completions, so it adds nothing to learn from", name))
            else:
                flags.append(Flag("constant", f"{name} is {values[0]:g} on every one of the "
                                  f"{len(values)} completions: a constant reward teaches nothing "
                                  "(check that it reads the right column and that its test is "
                                  "not always true)", name))
    with_signal = sum(g.has_signal for g in groups)
    flat = len(groups) - with_signal
    if flat:
        flags.append(Flag("zero_variance", f"{flat} of {len(groups)} groups have completions that "
                          "all score the same: no advantage to learn from in those groups"))
    cut = sum(sum(g.truncated) for g in groups)
    total = sum(len(g.totals) for g in groups)
    if cut:
        flags.append(Flag("truncated", f"{cut} of {total} completions were cut off at "
                          f"grpo.max_completion_len = {max_completion_len} tokens: they are "
                          "scored on an unfinished answer (raise max_completion_len, or set "
                          "grpo.mask_truncated = true to leave them out of the loss)"))
    totals = [t for g in groups for t in g.totals]
    first = {"mean_reward": round(mean(totals), 4), "reward_std": round(pstdev(totals), 4),
             "groups": len(groups), "groups_with_signal": with_signal,
             "fraction_with_signal": round(with_signal / len(groups), 4),
             "truncated": cut, "completions": total}
    return {"flags": [f.to_dict() for f in flags], "first_steps": first,
            "per_function": per_function, "verdict": _verdict(first, flags)}


def _verdict(first: dict, flags: list[Flag]) -> dict:
    share = first["fraction_with_signal"]
    kinds = {f.kind for f in flags}
    if first["groups_with_signal"] == 0:
        if first["mean_reward"] <= 0 or "never_fires" in kinds:
            why = "no completion earns any reward: the task is out of the model's reach now"
        else:
            why = "every completion of each prompt earns the same reward"
        return {"ok": False, "text": f"no group has any reward variance ({why}): GRPO would learn "
                "nothing. Raise grpo.temperature, make the reward partial (credit for part of "
                "the answer or the format), or start from an SFT adapter (model.adapter)"}
    parts = [f"{first['groups_with_signal']} of {first['groups']} groups ({share:.0%}) have reward "
             f"variance to learn from, mean reward {first['mean_reward']:g}"]
    ok = True
    if share < 0.25:
        ok = False
        parts.append("few groups teach anything: expect slow progress; raise grpo.temperature or "
                     "grpo.num_generations, or make the reward partial")
    useless = [f.function for f in flags if f.kind in ("constant", "never_fires")]
    if useless:
        parts.append(f"{', '.join(useless)} add{'s' if len(useless) == 1 else ''} nothing (see "
                     "above)")
    if "truncated" in kinds:
        parts.append("some completions are cut off (see above)")
    if ok and not useless:
        parts.append("ready to train")
    return {"ok": ok, "text": "; ".join(parts)}
