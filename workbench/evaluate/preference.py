"""The evaluation of a preference run (DPO, ORPO, KTO, SimPO): does the model now prefer what
the data prefers?

Scored on the held-out preference rows, tokenized by the data room exactly as trained:

- paired rows `{"prompt_ids", "chosen_ids", "rejected_ids", ...}`: each answer's summed
  log-likelihood given the prompt (its answer tokens only), by the base (the adapter off) and by
  the fine-tuned model (the adapter on). Preference accuracy is the share of pairs in which the
  chosen answer is the more likely one, summed and length-normalized (mean per answer token;
  what SimPO optimizes, and fairer where chosen and rejected differ much in length). The change,
  fine-tuned minus base, gets a paired-bootstrap 95% interval over the pairs (verdict.py's
  `paired_bootstrap`, 2,000 resamples, seeded); it counts only when the interval excludes 0.
  The mean reward margin is DPO's implicit reward without beta: (log-ratio of the chosen answer
  fine-tuned vs base) - (the same for the rejected), in nats, with its interval.
- unpaired rows `{"prompt_ids", "completion_ids", "label", ...}` (KTO): the change (fine-tuned -
  base) in the mean per-token log-likelihood of desirable and of undesirable completions, and
  the difference of those changes with a bootstrap interval (rows resampled within each label).
  Accuracy is not defined: there is no pair whose two answers could be ranked.

The length-bias check: preference tuning is known to teach "longer is better" (the chosen
answers of most preference data are longer). The end-of-run evaluation generates base and
fine-tuned answers to the rows' prompts (evaluation.py, the SFT machinery unchanged, the chosen
answers as references), and this module compares their lengths in tokens. The rule: flagged as
a length bias when the fine-tuned answers are on average more than 20% longer than the base's
AND the paired-bootstrap 95% interval of the per-prompt difference (tokens) lies above 0.

Pure Python here apart from `score_rows` (torch, imported inside it): report.py and the app
import this module without loading torch.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Sequence

from workbench.evaluate.errors import EvaluateError, Stopped, stop_requested

LENGTH_BIAS_SHARE = 0.20  # fine-tuned answers this much longer than the base's (and CI > 0)
PAIRED_SIDES = ("chosen", "rejected")
UNPAIRED_SIDES = ("completion",)
PREFERENCE_METHODS = ("dpo", "orpo", "kto", "simpo")
ACCURACY_UNDEFINED = ("preference accuracy is not defined for unpaired (KTO) rows: each row has "
                      "one answer, so there is no pair to rank")


# ---------------------------------------------------------------------------------------------
# Which runs this is for


def training_method(profile) -> str:
    return getattr(getattr(profile, "train", None), "method", "sft") or "sft"


def is_preference_run(profile) -> bool:
    """The run's method is evaluated by preference (the method registry says so; before the
    registry knows the method, the preference methods' names decide)."""
    method = training_method(profile)
    if method == "sft":
        return False
    try:
        from workbench.train.methods import get_method

        return get_method(method).evaluation == "preference"
    except (ImportError, ValueError, AttributeError):
        return method in PREFERENCE_METHODS


# ---------------------------------------------------------------------------------------------
# Scoring


@dataclass(frozen=True)
class Scored:
    """One answer's summed log-likelihood (nats) over its `tokens` answer tokens."""

    logp: float
    tokens: int

    @property
    def mean(self) -> float:
        return self.logp / self.tokens if self.tokens else float("nan")

    def to_list(self) -> list:
        return [round(self.logp, 4), self.tokens]


def is_paired(row: dict) -> bool:
    return "chosen_ids" in row


def sides_of(row: dict) -> tuple[str, ...]:
    return PAIRED_SIDES if is_paired(row) else UNPAIRED_SIDES


def where(row: dict, index: int) -> str:
    src = row.get("source") or {}
    if src.get("file") is not None:
        return f"{src.get('file')}:{src.get('row')}"
    return f"held-out row {index + 1}"


def _check_row(row: dict, index: int) -> None:
    need = ("prompt_ids", "chosen_ids", "rejected_ids") if is_paired(row) else (
        "prompt_ids", "completion_ids", "label")
    missing = [k for k in need if k not in row]
    if missing:
        raise EvaluateError(
            f"{where(row, index)}: a preference row without {', '.join(missing)} "
            f"(it has {', '.join(sorted(row)) or 'nothing'})",
            hint="preference rows are {prompt_ids, chosen_ids, rejected_ids} or {prompt_ids, "
                 "completion_ids, label}, tokenized by the data room as trained")


def is_cancelled(cancel) -> bool:
    """A threading.Event or a callable returning True: both are used in the engine."""
    return stop_requested(cancel)


def score_rows(model, rows: Sequence[dict], *, batch_size: int = 8, device=None,
               progress: Callable[[int, int], None] | None = None, cancel=None,
               max_len: int | None = None) -> list[dict[str, Scored]]:
    """Each row's answers scored by `model` as it is (the caller turns the adapter on or off):
    `[{"chosen": Scored, "rejected": Scored}]` for paired rows, `[{"completion": Scored}]` for
    unpaired ones, in the order of `rows`.

    A side is scored as `prompt_ids + answer_ids` in one forward pass; its log-likelihood is
    the sum over the answer tokens of log p(token | everything before it). Sequences are
    batched with right padding (positions stay 0..n), longest rows first, a row's sides next to
    each other; no grad, eval mode (dropout off), the model's mode put back afterwards.
    `max_len` (None: no cut) keeps the end of a longer sequence: the prompt loses its start.
    `progress(rows done, rows)` after each batch; `cancel` (an Event or a callable) is checked
    before each batch and stops with an EvaluateError."""
    import torch

    seqs: list[tuple[int, str, list[int], list[int]]] = []
    for i, row in enumerate(rows):
        _check_row(row, i)
        for side in sides_of(row):
            prompt, answer = list(row["prompt_ids"]), list(row[f"{side}_ids"])
            if max_len and len(prompt) + len(answer) > max_len:
                answer = answer[:max_len]
                prompt = prompt[len(prompt) - (max_len - len(answer)):] if max_len > len(answer) else []
            seqs.append((i, side, prompt, answer))
    row_len = [0] * len(rows)
    for i, _, p, a in seqs:
        row_len[i] = max(row_len[i], len(p) + len(a))
    order = sorted(range(len(seqs)), key=lambda k: (-row_len[seqs[k][0]], seqs[k][0], k))

    if device is None:
        device = next(model.parameters()).device
    pad = _pad_id(model)
    out: list[dict[str, Scored]] = [{} for _ in rows]
    left = [len(sides_of(r)) for r in rows]
    done = 0
    keep_logits = [True]  # pass logits_to_keep until the model says it takes no such argument
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for lo in range(0, len(order), batch_size):
                if is_cancelled(cancel):
                    raise Stopped()
                chunk = [seqs[k] for k in order[lo:lo + batch_size]]
                width = max(len(p) + len(a) for _, _, p, a in chunk) or 1
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                attn = torch.zeros((len(chunk), width), dtype=torch.long)
                for b, (_, _, p, a) in enumerate(chunk):
                    n = len(p) + len(a)
                    if n:
                        ids[b, :n] = torch.tensor(p + a, dtype=torch.long)
                        attn[b, :n] = 1
                # Only the positions that predict answer tokens need logits: from the earliest
                # answer's previous position on (a vocabulary of 150k x a long prompt is GBs).
                first = min(max(len(p) - 1, 0) for _, _, p, _ in chunk)
                logits = _forward(model, ids.to(device), attn.to(device), width - first, keep_logits)
                offset = width - logits.shape[1]  # logits[:, j] is position offset + j
                for b, (i, side, p, a) in enumerate(chunk):
                    # Token t is predicted by the logits at t - 1; a first token with no
                    # prompt before it has nothing to be predicted from and is not scored.
                    start = max(len(p), 1)
                    end = len(p) + len(a)
                    if end <= start:
                        out[i][side] = Scored(0.0, 0)
                    else:
                        lg = logits[b, start - 1 - offset:end - 1 - offset].float()
                        target = torch.tensor((p + a)[start:end], dtype=torch.long,
                                              device=lg.device)
                        lp = torch.log_softmax(lg, dim=-1).gather(-1, target[:, None]).sum()
                        out[i][side] = Scored(float(lp), end - start)
                    left[i] -= 1
                    done += left[i] == 0
                if progress is not None:
                    progress(done, len(rows))
    finally:
        model.train(was_training)
    return out


def _pad_id(model) -> int:
    cfg = getattr(model, "config", None)
    pad = getattr(cfg, "pad_token_id", None)
    if isinstance(pad, int):
        return pad
    eos = getattr(cfg, "eos_token_id", None)
    return eos if isinstance(eos, int) else (eos[0] if isinstance(eos, (list, tuple)) and eos else 0)


def _forward(model, ids, attn, keep: int, keep_logits: list[bool]):
    """The logits of the last `keep` positions (all of them where the model cannot be asked)."""
    if keep_logits[0] and keep < ids.shape[1]:
        try:
            return model(input_ids=ids, attention_mask=attn, use_cache=False,
                         logits_to_keep=keep).logits
        except TypeError:  # an older or remote-code model without logits_to_keep
            keep_logits[0] = False
    return model(input_ids=ids, attention_mask=attn, use_cache=False).logits


# ---------------------------------------------------------------------------------------------
# Base against fine-tuned


def preference_evaluation(model, rows: Sequence[dict], *, adapter: str | None = None,
                          reference: str | None = None, batch_size: int = 8, device=None,
                          progress: Callable[[str, int, int], None] | None = None,
                          cancel=None, seed: int = 0, max_len: int | None = None) -> dict:
    """Base against fine-tuned (`adapter`, or the active adapter when None) on held-out
    preference rows: the dict `compare_scores` returns. The base is the model preference tuning
    started from: the adapter off (`model.disable_adapter()`), or the adapter named `reference`
    when the run trained on from an earlier adapter (SFT, then DPO). `progress(stage, done,
    total)` hears the stages "preference base" and "preference fine-tuned" (EvalProgress's
    signature, like `evaluate`)."""
    import contextlib

    if not hasattr(model, "disable_adapter"):
        raise EvaluateError("the preference evaluation compares the model with its adapter on and "
                            "off, but this model has no adapter (not a PEFT model)",
                            hint="evaluate the run's adapter (`workbench eval RUN`)")
    if not rows:
        raise EvaluateError("no held-out preference rows to evaluate on",
                            hint="keep data.validation_split above 0, or give data.validation")
    say = progress or (lambda stage, done, total: None)

    def scored(stage: str) -> list[dict[str, Scored]]:
        say(stage, 0, len(rows))
        return score_rows(model, rows, batch_size=batch_size, device=device, cancel=cancel,
                          max_len=max_len, progress=lambda d, t: say(stage, d, t))

    if reference is not None:
        model.set_adapter(reference)
    with model.disable_adapter() if reference is None else contextlib.nullcontext():
        base = scored("preference base")
    if adapter is not None and hasattr(model, "set_adapter"):
        model.set_adapter(adapter)
    tuned = scored("preference fine-tuned")
    return compare_scores(rows, base, tuned, seed=seed)


def compare_scores(rows: Sequence[dict], base: Sequence[dict[str, Scored]],
                   tuned: Sequence[dict[str, Scored]], seed: int = 0) -> dict:
    """The figures of the evaluation from the two systems' scores (no model needed):
    `{"paired": {...} | None, "unpaired": {...} | None, "rows": [per-row scores], "notes"}`.
    A row with an answer of no tokens cannot be ranked: it is left out, and the notes say so."""
    paired, unpaired, dropped = [], [], []
    for i, (row, b, t) in enumerate(zip(rows, base, tuned)):
        if any(b[s].tokens == 0 for s in sides_of(row)):
            dropped.append(where(row, i))
        elif is_paired(row):
            paired.append((row, b, t))
        else:
            unpaired.append((row, b, t))
    notes = []
    if dropped:
        notes.append(f"left out {len(dropped)} row(s) with an empty answer (nothing to score): "
                     + ", ".join(dropped[:5]) + (" ..." if len(dropped) > 5 else ""))
    return {
        "paired": _paired_summary(paired, seed) if paired else None,
        "unpaired": _unpaired_summary(unpaired, seed) if unpaired else None,
        "notes": notes,
        "rows": [{"source": row.get("source"),
                  **({"label": bool(row["label"])} if not is_paired(row) else {}),
                  "base": {s: b[s].to_list() for s in sides_of(row)},
                  "fine-tuned": {s: t[s].to_list() for s in sides_of(row)}}
                 for row, b, t in zip(rows, base, tuned)],
    }


def _paired_summary(pairs, seed: int) -> dict:
    from workbench.evaluate.verdict import paired_bootstrap

    def prefers(s: dict[str, Scored], normalized: bool) -> float:
        c, r = s["chosen"], s["rejected"]
        return 100.0 if (c.mean > r.mean if normalized else c.logp > r.logp) else 0.0

    out: dict = {"pairs": len(pairs)}
    for key, normalized in (("accuracy", False), ("accuracy_normalized", True)):
        d = paired_bootstrap("fine-tuned", [prefers(t, normalized) for _, _, t in pairs],
                             "base", [prefers(b, normalized) for _, b, _ in pairs],
                             key, seed=seed)
        out[key] = {"base": round(d.b_mean, 2), "fine-tuned": round(d.a_mean, 2),
                    "difference": d.to_dict()}
    margins = [(t["chosen"].logp - b["chosen"].logp) - (t["rejected"].logp - b["rejected"].logp)
               for _, b, t in pairs]
    m = paired_bootstrap("fine-tuned", margins, "base", [0.0] * len(margins), "reward margin",
                         seed=seed)
    out["margin"] = {"mean": round(m.delta, 4), "ci95": [round(m.low, 4), round(m.high, 4)],
                     "decided": m.decided}
    n = len(pairs)
    for side in PAIRED_SIDES:
        out[f"{side}_logp"] = {
            "base": round(sum(b[side].logp for _, b, _ in pairs) / n, 4),
            "fine-tuned": round(sum(t[side].logp for _, _, t in pairs) / n, 4)}
    flips = [(prefers(b, False), prefers(t, False)) for _, b, t in pairs]
    out["flipped"] = {"to_chosen": sum(1 for x, y in flips if y > x),
                      "to_rejected": sum(1 for x, y in flips if y < x)}
    return out


def _unpaired_summary(rows, seed: int) -> dict:
    from workbench.evaluate.verdict import RESAMPLES

    change = {True: [], False: []}
    means = {True: ([], []), False: ([], [])}
    for row, b, t in rows:
        label = bool(row["label"])
        change[label].append(t["completion"].mean - b["completion"].mean)
        means[label][0].append(b["completion"].mean)
        means[label][1].append(t["completion"].mean)

    def avg(xs):
        return sum(xs) / len(xs) if xs else None

    good, bad = change[True], change[False]
    out: dict = {"rows": len(rows), "desirable": len(good), "undesirable": len(bad),
                 "accuracy": None, "accuracy_note": ACCURACY_UNDEFINED}
    for label, name in ((True, "desirable"), (False, "undesirable")):
        out[f"{name}_mean_logp"] = {
            "base": _round(avg(means[label][0])), "fine-tuned": _round(avg(means[label][1])),
            "change": _round(avg(change[label]))}
    if good and bad:
        delta = avg(good) - avg(bad)
        rng = random.Random(seed)
        # Rows resampled within each label, so every resample has both kinds.
        boots = sorted(sum(good[rng.randrange(len(good))] for _ in good) / len(good)
                       - sum(bad[rng.randrange(len(bad))] for _ in bad) / len(bad)
                       for _ in range(RESAMPLES))
        low, high = boots[int(0.025 * (len(boots) - 1))], boots[int(0.975 * (len(boots) - 1))]
        out["difference"] = {"delta": round(delta, 4), "ci95": [round(low, 4), round(high, 4)],
                             "decided": low > 0 or high < 0}
    else:
        out["difference"] = None
    return out


def _round(x, nd: int = 4):
    return None if x is None else round(x, nd)


# ---------------------------------------------------------------------------------------------
# Length bias


def length_check(base_tokens: Sequence[int], tuned_tokens: Sequence[int], *, seed: int = 0,
                 max_new_tokens: int | None = None, against: str = "base") -> dict:
    """Generated answer lengths (tokens), fine-tuned against base, per prompt. `length_bias`
    is True when the fine-tuned answers are on average more than LENGTH_BIAS_SHARE (20%) longer
    AND the paired-bootstrap 95% interval of the per-prompt difference lies above 0. Answers
    that ran to `max_new_tokens` were cut, so their true length is longer: counted and said.
    `against` names what the fine-tuned answers are compared with: "base", or "start" (the
    adapter a chained run started from)."""
    from workbench.evaluate.verdict import paired_bootstrap

    n = len(base_tokens)
    if not n:
        return {"answers": 0, "length_bias": False, "rule": _LENGTH_RULE, "against": against}
    d = paired_bootstrap("fine-tuned", [float(x) for x in tuned_tokens], "base",
                         [float(x) for x in base_tokens], "answer tokens", seed=seed)
    change = d.delta / d.b_mean if d.b_mean else (math.inf if d.delta > 0 else 0.0)
    out = {"answers": n, "base_mean_tokens": round(d.b_mean, 2),
           "fine_tuned_mean_tokens": round(d.a_mean, 2), "delta_tokens": round(d.delta, 2),
           "ci95_tokens": [round(d.low, 2), round(d.high, 2)],
           "change_pct": None if math.isinf(change) else round(100 * change, 1),
           "length_bias": change > LENGTH_BIAS_SHARE and d.low > 0, "rule": _LENGTH_RULE,
           "against": against}
    if max_new_tokens:
        out["at_cap"] = {against: sum(1 for x in base_tokens if x >= max_new_tokens),
                         "fine-tuned": sum(1 for x in tuned_tokens if x >= max_new_tokens),
                         "max_new_tokens": max_new_tokens}
    return out


_LENGTH_RULE = (f"flagged when the fine-tuned answers are on average more than "
                f"{LENGTH_BIAS_SHARE:.0%} longer and the 95% interval of the per-prompt "
                f"difference lies above 0")
AGAINST = {"base": "the base's", "start": "the starting adapter's"}


def length_clause(length: dict | None) -> str:
    """"answers got 35% longer than the base's (length bias)", or "" when not flagged."""
    if not length or not length.get("length_bias"):
        return ""
    whose = AGAINST.get(length.get("against", "base"), "the base's")
    pct = length.get("change_pct")
    how = f"{pct:.0f}% longer" if pct is not None else f"longer ({whose} were empty)"
    return f"answers got {how} than {whose} (length bias)"


# ---------------------------------------------------------------------------------------------
# The verdict


def _num(x: float) -> str:
    """Points with a sign: whole numbers from 10 up, one decimal below (+0.4 is not +0)."""
    return f"{x:+.0f}" if abs(x) >= 10 or float(x).is_integer() else f"{x:+.1f}"


def _pct(x: float) -> str:
    return f"{x:.0f}%"


def preference_verdict(summary: dict, length: dict | None = None) -> dict:
    """{"text", "direction": "toward" | "away" | "none"} from `compare_scores`'s summary (and
    the length check). Decided on held-out preference accuracy for pairs; on the difference
    of the log-likelihood changes for unpaired rows. The numbers and the interval are kept in
    the sentence; a change counts only when the 95% interval excludes 0."""
    paired, unpaired = summary.get("paired"), summary.get("unpaired")
    if paired:
        text, direction = _paired_sentence(paired)
    elif unpaired and unpaired.get("difference"):
        text, direction = _unpaired_sentence(unpaired)
    elif unpaired:
        kinds = "desirable" if unpaired["desirable"] else "undesirable"
        text, direction = (f"No verdict on preferences: the {unpaired['rows']} held-out rows are "
                           f"all {kinds}, so there is nothing to compare them with; "
                           + ACCURACY_UNDEFINED), "none"
    else:
        text, direction = "No verdict on preferences: no held-out preference rows were scored", "none"
    clause = length_clause(length)
    if clause:
        text += "; " + clause
    return {"text": text, "direction": direction}


def _paired_sentence(p: dict) -> tuple[str, str]:
    acc = p["accuracy"]
    d = acc["difference"]
    low, high = d["ci95"]
    figures = (f"held-out preference accuracy {_pct(acc['base'])} -> {_pct(acc['fine-tuned'])} "
               f"({_num(d['delta'])} pts, 95% CI {_num(low)}..{_num(high)}, {p['pairs']} pairs)")
    if low > 0:
        return f"Preference tuning moved the model toward the data's preferences: {figures}", "toward"
    if high < 0:
        return f"Preference tuning moved the model away from the data's preferences: {figures}", "away"
    text = f"No significant change in the model's preferences: {figures}"
    if low == high == 0:
        text += "; no pair changed sides"
    else:
        need = d.get("rows_to_tell")
        if need and need > p["pairs"]:
            text += f"; about {need:,} pairs would tell a change of this size"
    m = p["margin"]
    if m["decided"]:
        way = "toward the chosen" if m["mean"] > 0 else "toward the rejected"
        text += (f"; the reward margin (log-ratio chosen - rejected vs the base) did move "
                 f"{m['mean']:+.2f} nats {way} answers (95% CI {m['ci95'][0]:+.2f}.."
                 f"{m['ci95'][1]:+.2f})")
    return text, "none"


def _unpaired_sentence(u: dict) -> tuple[str, str]:
    d = u["difference"]
    low, high = d["ci95"]
    figures = (f"mean per-token log-likelihood of desirable answers "
               f"{u['desirable_mean_logp']['change']:+.3f} and of undesirable ones "
               f"{u['undesirable_mean_logp']['change']:+.3f} nats vs the base (difference "
               f"{d['delta']:+.3f}, 95% CI {low:+.3f}..{high:+.3f}, {u['desirable']} desirable / "
               f"{u['undesirable']} undesirable rows; accuracy is not defined for unpaired rows)")
    if low > 0:
        return f"Preference tuning moved the model toward the data's preferences: {figures}", "toward"
    if high < 0:
        return f"Preference tuning moved the model away from the data's preferences: {figures}", "away"
    return f"No significant change in the model's preferences: {figures}", "none"


# ---------------------------------------------------------------------------------------------
# Held-out prompts for the side-by-side generations


def generation_records(rows: Sequence[dict]) -> tuple[list[dict], list[str]]:
    """The rows as conversation records for the existing generation / metrics machinery:
    `{"messages": prompt + chosen, "source"}` for pairs and `prompt + completion` for desirable
    unpaired rows (an undesirable answer is no reference). A prompt repeated in several rows is
    answered once (greedy answers to one prompt are the same), its first row's answer the
    reference. Returns (records, notes)."""
    import json

    out, seen, repeats, undesirable, no_messages = [], set(), 0, 0, 0
    for row in rows:
        prompt = row.get("prompt")
        answer = row.get("chosen") if is_paired(row) else row.get("completion")
        if not is_paired(row) and not row.get("label"):
            undesirable += 1
            continue
        if not prompt or not answer:
            no_messages += 1
            continue
        prompt = [prompt] if isinstance(prompt, dict) else list(prompt)
        answer = [answer] if isinstance(answer, dict) else list(answer)
        key = json.dumps(prompt, sort_keys=True, ensure_ascii=False)
        if key in seen:
            repeats += 1
            continue
        seen.add(key)
        out.append({"messages": prompt + answer, "source": row.get("source")})
    notes = []
    if repeats:
        notes.append(f"answers generated once per prompt: {repeats} row(s) repeat an earlier "
                     "row's prompt (the first row's chosen answer is the reference)")
    if undesirable:
        notes.append(f"{undesirable} undesirable row(s) are not among the generation prompts "
                     "(their answer is no reference)")
    if no_messages:
        notes.append(f"{no_messages} row(s) carry no prompt / answer messages, so they are not "
                     "among the generation prompts")
    return out, notes


def cap_rows(rows: Sequence[dict], cap: int, seed: int, what: str = "held-out preference rows"
             ) -> tuple[list[dict], str | None]:
    """At most `cap` rows, a seeded sample in order (eval.max_test_rows, as the SFT test split
    is sampled), and the note that says so; (rows, None) when nothing was left out."""
    if not cap or len(rows) <= cap:
        return list(rows), None
    keep = sorted(random.Random(seed).sample(range(len(rows)), cap))
    return ([rows[i] for i in keep],
            f"scored a seeded sample of {cap} of the {len(rows)} {what} "
            "(eval.max_test_rows; 0 scores every row)")


# ---------------------------------------------------------------------------------------------
# report.md


def report_lines(pref: dict) -> list[str]:
    """The "## Preference" section of report.md (without its heading)."""
    L: list[str] = []
    method = pref.get("method")
    paired, unpaired = pref.get("paired"), pref.get("unpaired")
    n = pref.get("rows_scored")
    L.append(f"{'' if n is None else f'{n} '}{pref.get('source') or 'held-out preference rows'}, "
             f"tokenized as trained{f' (method {method})' if method else ''}: base = "
             f"{pref.get('base') or 'the adapter off'}, fine-tuned = the adapter on; "
             "log-likelihoods in nats over the answer tokens given the prompt")
    L += [""] + [f"- note: {n}" for n in pref.get("notes", [])]
    if pref.get("notes"):
        L.append("")
    if paired:
        L += ["| measure | base | fine-tuned | change | 95% CI |", "|---|---|---|---|---|"]
        for key, label in (("accuracy", "preference accuracy (summed log-likelihood)"),
                           ("accuracy_normalized", "preference accuracy (mean per token)")):
            a = paired[key]
            d = a["difference"]
            L.append(f"| {label} | {a['base']:.1f}% | {a['fine-tuned']:.1f}% | "
                     f"{d['delta']:+.1f} pts | {d['ci95'][0]:+.1f}..{d['ci95'][1]:+.1f} |")
        for side in PAIRED_SIDES:
            s = paired[f"{side}_logp"]
            L.append(f"| mean log-likelihood of the {side} answers | {s['base']:.2f} | "
                     f"{s['fine-tuned']:.2f} | {s['fine-tuned'] - s['base']:+.2f} | |")
        m = paired["margin"]
        L.append(f"| reward margin: log-ratio vs base, chosen - rejected | | | {m['mean']:+.3f} | "
                 f"{m['ci95'][0]:+.3f}..{m['ci95'][1]:+.3f} |")
        f = paired["flipped"]
        L += ["", f"- {paired['pairs']} pairs scored; a pair is right when the chosen answer is "
                  "the more likely one",
              f"- pairs that changed sides: {f['to_chosen']} to the chosen answer, "
              f"{f['to_rejected']} to the rejected",
              "- paired bootstrap over the pairs (2,000 resamples): a change counts only when the "
              "95% interval excludes 0"]
    if unpaired:
        if paired:
            L.append("")
        L += ["unpaired rows (KTO): mean per-token log-likelihood of the completions", "",
              "| rows | count | base | fine-tuned | change |", "|---|---|---|---|---|"]
        for name in ("desirable", "undesirable"):
            s = unpaired[f"{name}_mean_logp"]
            cells = [("n/a" if s[k] is None else f"{s[k]:+.3f}" if k == "change" else f"{s[k]:.3f}")
                     for k in ("base", "fine-tuned", "change")]
            L.append(f"| {name} | {unpaired[name]} | " + " | ".join(cells) + " |")
        d = unpaired.get("difference")
        L.append("")
        if d:
            L.append(f"- difference of the changes, desirable - undesirable: {d['delta']:+.3f} "
                     f"nats a token (95% CI {d['ci95'][0]:+.3f}..{d['ci95'][1]:+.3f}; bootstrap "
                     "over the rows, resampled within each label)")
        else:
            L.append("- difference of the changes: n/a (the rows are all of one label)")
        L.append(f"- {ACCURACY_UNDEFINED}")
    length = pref.get("length")
    L.append("")
    if length and length.get("answers"):
        pct = length.get("change_pct")
        how = "n/a" if pct is None else f"{pct:+.1f}%"
        flag = "**length bias**" if length["length_bias"] else "no length bias"
        lo, hi = length["ci95_tokens"]
        whose = AGAINST.get(length.get("against", "base"), "the base's")
        L.append(f"- length check: {flag}: fine-tuned answers {how} vs {whose} (mean "
                 f"{length['fine_tuned_mean_tokens']:.1f} vs {length['base_mean_tokens']:.1f} "
                 f"tokens, {length['delta_tokens']:+.1f} tokens, 95% CI {lo:+.1f}..{hi:+.1f}, "
                 f"{length['answers']} prompts); {length['rule']}")
        cap = length.get("at_cap")
        if cap and any(v for k, v in cap.items() if k != "max_new_tokens"):
            L.append(f"- answers that ran to eval.max_new_tokens = {cap['max_new_tokens']} (cut, so "
                     "longer than counted): " + ", ".join(f"{k} {v}" for k, v in cap.items()
                                                          if k != "max_new_tokens"))
    else:
        L.append("- length check: n/a (no answers were generated)")
    L.append("")
    return L


def load_preference_rows(profile, log: Callable[[str], None] = lambda s: None):
    """(held-out rows, train rows) of a preference run, prepared by its method's data room
    exactly as training prepared them (`workbench eval RUN` has no training plan to take them
    from)."""
    from workbench.data import DataError
    from workbench.train.plan import RunError, load_tokenizer, profile_chat_format

    try:
        from workbench.train.methods import get_method

        tokenizer = load_tokenizer(profile)
        prepared = get_method(training_method(profile)).prepare_data(
            profile, tokenizer, profile_chat_format(tokenizer, profile), log)
    except (RunError, DataError, ValueError, ImportError) as exc:
        raise EvaluateError(f"could not prepare the run's preference data: {exc}",
                            hint="the run reads data.train from its profile.toml; check the file "
                                 "is still there") from exc
    return prepared.eval_rows, prepared.train_rows
