"""The evaluation of a preference run: does the model now prefer what the data prefers?

On the bundled tiny model with a LoRA adapter: the scores are the log-likelihoods computed by
hand; an adapter nudged by a few DPO steps raises held-out preference accuracy and the verdict
says so with its interval; an adapter that changes nothing gets "no significant change"; the
unpaired (KTO) rows; the length-bias rule; and the report of a whole end-of-training
evaluation with its Preference section."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from conftest import DEMO_DATA, REPO, TINY_MODEL

# The data's preference: the answer followed by a full stop over the bare answer. The tiny base
# model prefers the bare answer (it has never seen the full stop), so base accuracy starts low.
SUFFIX = "."
N_TRAIN, N_HELD = 16, 24


def _tokenizer_and_format():
    from transformers import AutoTokenizer

    from workbench.data.chat_format import chat_format

    tok = AutoTokenizer.from_pretrained(str(TINY_MODEL))
    return tok, chat_format(tok)


def _pairs(tok, fmt, records) -> list[dict]:
    """Paired rows as the data room hands them over: prompt_ids + chosen_ids is the sequence."""
    end = tok.convert_tokens_to_ids("<|im_end|>")

    def ids(text):
        return tok(text, add_special_tokens=False)["input_ids"]

    rows = []
    for i, rec in enumerate(records):
        prompt = [m for m in rec["messages"] if m["role"] != "assistant"]
        answer = rec["messages"][-1]["content"]
        chosen = [{"role": "assistant", "content": answer + SUFFIX}]
        rejected = [{"role": "assistant", "content": answer}]
        rows.append({"prompt_ids": ids(fmt.prompt(prompt)),
                     "chosen_ids": ids(chosen[0]["content"]) + [end],
                     "rejected_ids": ids(rejected[0]["content"]) + [end],
                     "prompt": prompt, "chosen": chosen, "rejected": rejected,
                     "source": {"file": DEMO_DATA.name, "row": i + 1}})
    return rows


def _unpaired(pairs: list[dict]) -> list[dict]:
    """KTO's rows: each pair split into a desirable and an undesirable completion."""
    out = []
    for p in pairs:
        for side, label in (("chosen", True), ("rejected", False)):
            out.append({"prompt_ids": p["prompt_ids"], "completion_ids": p[f"{side}_ids"],
                        "label": label, "prompt": p["prompt"], "completion": p[side],
                        "source": p["source"]})
    return out


def _peft_model(seed: int = 0):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(str(TINY_MODEL), dtype=torch.float32)
    return get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                           lora_dropout=0.0, task_type="CAUSAL_LM"))


def _batch_logp(model, seqs):
    """Summed answer log-likelihoods with grad, for the DPO steps below (not the code tested)."""
    import torch

    width = max(len(p) + len(a) for p, a in seqs)
    ids = torch.full((len(seqs), width), 3)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    mask = torch.zeros((len(seqs), width))
    for i, (p, a) in enumerate(seqs):
        ids[i, :len(p) + len(a)] = torch.tensor(p + a)
        attn[i, :len(p) + len(a)] = 1
        mask[i, len(p):len(p) + len(a)] = 1
    logp = torch.log_softmax(model(input_ids=ids, attention_mask=attn).logits[:, :-1], -1)
    return (logp.gather(-1, ids[:, 1:, None])[..., 0] * mask[:, 1:]).sum(-1)


@pytest.fixture(scope="module")
def data():
    if not (TINY_MODEL / "config.json").exists():
        pytest.fail("assets/tiny-model is missing: run `python -m workbench.models.build_tiny`")
    tok, fmt = _tokenizer_and_format()
    records = [json.loads(line) for line in DEMO_DATA.read_text().splitlines()[:N_TRAIN + N_HELD]]
    rows = _pairs(tok, fmt, records)
    return SimpleNamespace(tok=tok, fmt=fmt, train=rows[:N_TRAIN], held=rows[N_TRAIN:])


@pytest.fixture(scope="module")
def nudged(data):
    """A LoRA adapter after a few steps of DPO's loss (reference: the adapter off) on the
    train pairs: the held-out pairs share their pattern, so it should prefer their chosen too."""
    import torch
    import torch.nn.functional as F

    model = _peft_model()
    with torch.no_grad(), model.disable_adapter():
        ref_c = _batch_logp(model, [(r["prompt_ids"], r["chosen_ids"]) for r in data.train])
        ref_r = _batch_logp(model, [(r["prompt_ids"], r["rejected_ids"]) for r in data.train])
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    model.train()
    for _ in range(4):
        c = _batch_logp(model, [(r["prompt_ids"], r["chosen_ids"]) for r in data.train])
        r = _batch_logp(model, [(r["prompt_ids"], r["rejected_ids"]) for r in data.train])
        loss = -F.logsigmoid(0.5 * ((c - ref_c) - (r - ref_r))).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model


def _hand_logp(model, prompt_ids, answer_ids) -> float:
    import torch

    with torch.no_grad():
        ids = torch.tensor([prompt_ids + answer_ids])
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    return sum(float(logp[len(prompt_ids) + j - 1, t]) for j, t in enumerate(answer_ids))


def test_scores_are_the_hand_computed_log_likelihoods(data, nudged):
    from workbench.evaluate.errors import EvaluateError
    from workbench.evaluate.preference import compare_scores, score_rows

    rows = data.held[:3]
    seen = []
    scored = score_rows(nudged, rows, batch_size=4, progress=lambda d, t: seen.append((d, t)))
    hand = [{s: _hand_logp(nudged, r["prompt_ids"], r[f"{s}_ids"]) for s in ("chosen", "rejected")}
            for r in rows]
    for got, want, row in zip(scored, hand, rows):
        for side in ("chosen", "rejected"):
            assert got[side].logp == pytest.approx(want[side], abs=1e-4)
            assert got[side].tokens == len(row[f"{side}_ids"])
    assert seen[-1] == (3, 3) and [t for _, t in seen] == [3] * len(seen)

    # accuracy: the share of pairs whose chosen answer is the more likely, summed and per token
    summary = compare_scores(rows, scored, scored)["paired"]
    right = sum(h["chosen"] > h["rejected"] for h in hand)
    per_token = sum(h["chosen"] / len(r["chosen_ids"]) > h["rejected"] / len(r["rejected_ids"])
                    for h, r in zip(hand, rows))
    assert summary["accuracy"]["fine-tuned"] == pytest.approx(100 * right / 3, abs=0.01)
    assert summary["accuracy_normalized"]["fine-tuned"] == pytest.approx(100 * per_token / 3, abs=0.01)

    # one sequence a batch, and a model that takes no logits_to_keep, score the same
    import torch

    class Plain(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.config = inner, inner.config

        def forward(self, input_ids, attention_mask, use_cache=False):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask)

    for model, batch in ((nudged, 1), (Plain(nudged).eval(), 4)):
        again = score_rows(model, rows, batch_size=batch)
        assert [[round(s[k].logp, 3) for k in s] for s in again] == \
            [[round(s[k].logp, 3) for k in s] for s in scored]
    with pytest.raises(EvaluateError, match="cancelled"):
        score_rows(nudged, rows, cancel=lambda: True)


def test_a_nudged_adapter_moves_preferences_toward_the_data(data, nudged):
    from workbench.evaluate.preference import preference_evaluation

    stages = []
    result = preference_evaluation(nudged, data.held, progress=lambda s, d, t: stages.append(s))
    acc = result["paired"]["accuracy"]
    assert acc["base"] < 50 and acc["fine-tuned"] >= acc["base"] + 30, acc
    assert acc["difference"]["ci95"][0] > 0
    assert result["paired"]["margin"]["mean"] > 0 and result["paired"]["margin"]["decided"]
    assert result["paired"]["flipped"]["to_chosen"] > 0
    assert set(stages) == {"preference base", "preference fine-tuned"}
    assert len(result["rows"]) == N_HELD and result["rows"][0]["source"]["row"] == N_TRAIN + 1

    from workbench.evaluate.preference import preference_verdict

    text = preference_verdict(result)["text"]
    pts = acc["difference"]["delta"]
    assert text.startswith("Preference tuning moved the model toward the data's preferences: "
                           f"held-out preference accuracy {acc['base']:.0f}% -> "
                           f"{acc['fine-tuned']:.0f}% ({pts:+.0f} pts, 95% CI +"), text
    assert text.endswith(f", {N_HELD} pairs)")


def test_a_run_that_started_from_an_adapter_is_compared_with_that_adapter(data, nudged):
    """SFT, then DPO: the base is the starting adapter (trl's frozen copy "ref" when the
    training model holds it), not the bare model."""
    from peft import LoraConfig

    from workbench.evaluate.evaluation import _reference_adapter
    from workbench.evaluate.preference import preference_evaluation

    rows = data.held[:8]
    off = preference_evaluation(nudged, rows)
    # a "ref" adapter as trained as "default": nothing moved since the start
    nudged.add_adapter("ref", LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                         lora_dropout=0.0, task_type="CAUSAL_LM"))
    try:
        state = {k.replace(".default.", ".ref."): v for k, v in nudged.state_dict().items()
                 if ".default." in k}
        nudged.load_state_dict(state, strict=False)
        same = preference_evaluation(nudged, rows, adapter="default", reference="ref")
        engine = SimpleNamespace(adapters=list(nudged.peft_config), model=nudged)
        chained = SimpleNamespace(model=SimpleNamespace(adapter="runs/sft-run"))
        assert _reference_adapter(engine, chained)[:3] == (
            "ref", "the starting adapter (model.adapter = runs/sft-run)", False)
        assert _reference_adapter(engine, SimpleNamespace(model=SimpleNamespace(adapter="")))[0] is None
    finally:
        nudged.set_adapter("default")
        nudged.delete_adapter("ref")
    assert list(nudged.peft_config) == ["default"]
    acc = same["paired"]["accuracy"]
    assert acc["base"] == acc["fine-tuned"] == off["paired"]["accuracy"]["fine-tuned"]
    assert off["paired"]["accuracy"]["base"] < acc["base"]


def test_an_adapter_that_changes_nothing_is_no_significant_change(data):
    from workbench.evaluate.preference import (Scored, compare_scores, preference_evaluation,
                                               preference_verdict)

    untouched = _peft_model()  # peft starts LoRA B at zero: adapter on == adapter off
    result = preference_evaluation(untouched, data.held[:8], batch_size=16)
    text = preference_verdict(result)["text"]
    base = result["paired"]["accuracy"]["base"]
    assert text == ("No significant change in the model's preferences: held-out preference "
                    f"accuracy {base:.0f}% -> {base:.0f}% (+0 pts, 95% CI +0..+0, 8 pairs); "
                    "no pair changed sides")

    # Pairs that change sides both ways: the interval includes 0, and the sentence says so
    rows = data.held[:10]
    base_s = [{"chosen": Scored(-10.0, 5), "rejected": Scored(-9.0 if i % 2 else -11.0, 5)}
              for i in range(10)]
    tuned_s = [{"chosen": Scored(-10.0, 5), "rejected": Scored(-11.0 if i < 6 else -9.0, 5)}
               for i in range(10)]
    summary = compare_scores(rows, base_s, tuned_s)
    assert summary["paired"]["accuracy"]["base"] == 50 and summary["paired"]["accuracy"]["fine-tuned"] == 60
    text = preference_verdict(summary)["text"]
    low, high = summary["paired"]["accuracy"]["difference"]["ci95"]
    assert low < 0 < high
    assert text.startswith("No significant change in the model's preferences: held-out preference "
                           f"accuracy 50% -> 60% (+10 pts, 95% CI {low:+.0f}..+{high:.0f}, 10 pairs)")


def test_unpaired_rows_compare_the_changes_and_have_no_accuracy(data, nudged):
    from workbench.evaluate.preference import (ACCURACY_UNDEFINED, preference_evaluation,
                                               preference_verdict)

    rows = _unpaired(data.held)
    result = preference_evaluation(nudged, rows)
    u = result["unpaired"]
    assert result["paired"] is None
    assert (u["desirable"], u["undesirable"], u["accuracy"]) == (N_HELD, N_HELD, None)
    assert u["accuracy_note"] == ACCURACY_UNDEFINED
    # the change of each row's mean per-token log-likelihood, by hand from the per-row scores
    change = {True: [], False: []}
    for row in result["rows"]:
        (b_logp, n), (t_logp, _) = row["base"]["completion"], row["fine-tuned"]["completion"]
        change[row["label"]].append((t_logp - b_logp) / n)
    want = sum(change[True]) / N_HELD - sum(change[False]) / N_HELD
    assert u["difference"]["delta"] == pytest.approx(want, abs=1e-3)
    assert u["difference"]["ci95"][0] > 0
    text = preference_verdict(result)["text"]
    assert text.startswith("Preference tuning moved the model toward the data's preferences: mean "
                           "per-token log-likelihood of desirable answers")
    assert "accuracy is not defined for unpaired rows" in text and "95% CI +" in text

    untouched = preference_evaluation(_peft_model(), rows[:8])
    assert preference_verdict(untouched)["text"].startswith(
        "No significant change in the model's preferences")


def test_length_bias_rule():
    from workbench.evaluate.preference import (Scored, compare_scores, length_check,
                                               preference_verdict)

    base = [10, 12, 8, 10, 11, 9, 10, 10, 12, 8] * 2
    longer = length_check(base, [x + 4 for x in base], max_new_tokens=14)  # +40%
    assert longer["length_bias"] and longer["change_pct"] == 40.0
    assert longer["at_cap"] == {"base": 0, "fine-tuned": 14, "max_new_tokens": 14}
    assert not length_check(base, [x + 1 for x in base])["length_bias"]  # +10%: under the bar
    noisy = [x + (30 if i % 4 == 0 else -5) for i, x in enumerate(base)]  # +25% on average, noisy
    check = length_check(base, noisy)
    assert check["change_pct"] > 20 and check["ci95_tokens"][0] < 0 and not check["length_bias"]

    rows = [{"prompt_ids": [1], "chosen_ids": [2], "rejected_ids": [3]}] * 4
    scores = [{"chosen": Scored(-1.0, 1), "rejected": Scored(-2.0, 1)}] * 4
    text = preference_verdict(compare_scores(rows, scores, scores), longer)["text"]
    assert text.endswith("; answers got 40% longer than the base's (length bias)")


def test_end_of_training_report_has_the_preference_section(data, nudged, tmp_path):
    from workbench.evaluate.evaluation import evaluate_after_training
    from workbench.evaluate.report import SECTIONS, verdict
    from workbench.profile import load_profile
    from workbench.rundir import RunDir

    profile = load_profile(REPO / "profiles" / "demo.toml")
    profile.train.method = "dpo"
    profile.eval.prompts = ""
    profile.eval.max_new_tokens = 8
    profile.eval.shots = 1
    profile.eval.max_test_rows = 12  # of the 24 held-out pairs: a seeded sample
    run = RunDir.create(tmp_path / "runs", "pref")
    run.write_status(state="running", pid=None, step=4, total_steps=4)
    plan = SimpleNamespace(profile=profile, tokenizer=data.tok, device="cpu",
                           eval_rows=data.held, train_rows=data.train)
    events = []
    result = evaluate_after_training(nudged, plan, run, on_event=events.append)
    assert nudged.training is False  # put back as it was (eval, as the fixture left it)

    pref = result["preference"]
    assert pref["rows_scored"] == 12 and pref["paired"]["pairs"] == 12
    assert any("seeded sample of 12 of the 24 held-out preference rows" in n for n in pref["notes"])
    assert verdict(result) == pref["verdict"]["text"]
    assert verdict(result).startswith("Preference tuning moved the model toward")
    # the side by side ran on the rows' prompts, the chosen answers as references
    test = result["test"]
    assert test["rows"] == 12 and test["examples"][0]["reference"].endswith(SUFFIX)
    assert set(test["examples"][0]["answers"]) == {"base", "few-shot", "fine-tuned"}
    assert pref["length"]["answers"] == 12 and "length_bias" in pref["length"]

    md = (run.path / "report.md").read_text()
    assert f"**{verdict(result)}**" in md
    for section in ("Verdict", "Preference", *SECTIONS):
        assert f"## {section}" in md, section
    section = md.split("## Preference")[1].split("\n## ")[0]
    assert "| preference accuracy (summed log-likelihood) |" in section
    assert "| preference accuracy (mean per token) |" in section
    assert "12 pairs scored" in section and "- length check: " in section
    assert "decided on held-out preference accuracy" in md
    data_json = json.loads((run.path / "report.json").read_text())
    assert data_json["verdict"] == verdict(result)
    assert data_json["evaluation"]["preference"]["paired"]["accuracy"] == pref["paired"]["accuracy"]
    stages = {e.get("stage") for e in events if e.get("type") == "eval_progress"}
    assert {"preference base", "preference fine-tuned", "test answers"} <= stages
    print(md.split("## Metrics")[0])  # shown with -s: the report's top, for people


def test_workbench_eval_of_a_preference_run_prepares_its_rows_again(data, nudged, tmp_path):
    """`workbench eval RUN` has no training plan: the method's data room prepares the held-out
    pairs again from the run's profile, and the report is the preference one."""
    from workbench.evaluate.evaluation import evaluate_run
    from workbench.evaluate.report import verdict
    from workbench.profile import load_profile, save_profile
    from workbench.rundir import RunDir

    records = [json.loads(line) for line in DEMO_DATA.read_text().splitlines()[:40]]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": r["messages"][0]["content"],
                                         "chosen": r["messages"][1]["content"] + SUFFIX,
                                         "rejected": r["messages"][1]["content"]}) + "\n"
                             for r in records))
    profile = load_profile(REPO / "profiles" / "demo.toml")
    profile.data.train = str(pairs)
    profile.data.validation_split = 0.25
    profile.train.method = "dpo"
    profile.lora.r, profile.lora.target_modules = 8, ["q_proj", "v_proj"]  # the fixture's adapter
    profile.eval.prompts, profile.eval.max_new_tokens, profile.eval.shots = "", 4, 0
    # It trained on from an SFT adapter, here the very adapter it ended with: nothing moved.
    nudged.save_pretrained(str(tmp_path / "sft"))
    profile.model.adapter = str(tmp_path / "sft")
    run = RunDir.create(tmp_path / "runs", "pref-cli")
    save_profile(profile, run.profile_path)
    run.write_status(state="finished", pid=None, step=4, total_steps=4)
    nudged.save_pretrained(str(run.adapter_dir))

    result = evaluate_run(run, device="cpu", max_test_rows=6)
    pref = result["preference"]
    assert pref["method"] == "dpo" and pref["paired"]["pairs"] == 6
    assert all(r["source"]["file"].endswith("pairs.jsonl") for r in pref["rows"])
    assert pref["base"] == f"the starting adapter (model.adapter = {tmp_path / 'sft'})"
    assert verdict(result).startswith("No significant change in the model's preferences")
    assert verdict(result).endswith("6 pairs); no pair changed sides")
    # the length check compared the fine-tuned answers with the starting adapter's
    assert pref["length"]["against"] == "start" and pref["length"]["delta_tokens"] == 0
    examples = result["test"]["examples"]
    assert all(e["answers"]["start"] == e["answers"]["fine-tuned"] for e in examples)
    md = (run.path / "report.md").read_text()
    assert "## Preference" in md and "base = the starting adapter (model.adapter = " in md
    assert "| start |" in md  # the starting adapter's answers in the side by side
