"""The evaluation of a rewards (GRPO) run: did RL move the rewards, and what did it cost in
answer length?

The figures, intervals and verdicts on hand-made scores whose answer is known (a reward that
went up, one that stayed flat, sampled answers that moved while greedy ones did not, answers
that got shorter or much longer); the sentence the plan says before training; and, end to end
on the bundled tiny model, a 2-step GRPO run of profiles/grpo-demo.toml whose report has the
Rewards section with its numbers and verdict, then `workbench eval` of that run (its held-out
prompts prepared again) and of a run that trained on from an adapter (that adapter is the
base)."""

from __future__ import annotations

import json
import math

import pytest

from conftest import REPO, workbench

NAMES = ["rewards.py:french_overlap", "answer:exact"]
WEIGHTS = [1.0, 0.5]


def _summary(base, tuned, sampled=None, seed=0):
    from workbench.evaluate.rewards_eval import summarize

    return summarize(NAMES, WEIGHTS, {"base": base, "fine-tuned": tuned}, sampled, seed=seed)


# ---- the figures and the verdict on known scores ---------------------------------------------


def test_a_reward_that_went_up_is_raised_with_its_interval():
    from workbench.evaluate.rewards_eval import lengths, reward_lines, rewards_verdict

    n = 20
    base = [[0.2, 0.0]] * n  # total 0.2 on every prompt
    tuned = [[1.0, 1.0]] * 10 + [[0.2, 0.0]] * 10  # half the prompts now exact: total 1.5
    s = _summary(base, tuned)
    t = s["greedy"]["total"]
    assert (t["base"], t["fine-tuned"], t["delta"]) == (0.2, 0.85, 0.65)
    # per-prompt differences: 1.3 on half, 0 on the other half; sd 0.65, se 0.65 / sqrt(20)
    se = 0.65 / math.sqrt(n)
    low, high = t["ci95"]
    assert t["decided"] and 0 < low < 0.65 < high
    assert low == pytest.approx(0.65 - 1.96 * se, abs=0.06)
    assert high == pytest.approx(0.65 + 1.96 * se, abs=0.06)
    exact = s["greedy"]["rewards"]["answer:exact"]
    assert exact["pass_rate"]["base"] == 0 and exact["pass_rate"]["fine-tuned"] == 50.0
    assert exact["mean"]["fine-tuned"] == 0.5
    # french_overlap 0.2 is partial credit, not a pass; 1.0 is
    assert s["greedy"]["rewards"][NAMES[0]]["pass_rate"]["base"] == 0
    assert s["sampled"] is None and s["outside_0_1"] == []

    length = lengths([12] * n, [9] * n, seed=0, max_new_tokens=16)
    v = rewards_verdict(s, length)
    assert v["direction"] == "up"
    assert v["text"].startswith(f"GRPO raised the held-out reward from 0.20 to 0.85 (+0.65, "
                                f"95% CI +{low:.2f} to +{high:.2f}); greedy answers to 20 "
                                "held-out prompts")
    assert v["text"].endswith("; answers got 3.0 tokens shorter (12.0 -> 9.0 tokens a greedy "
                              "answer, 95% CI -3.0 to -3.0)")
    lines = reward_lines(s)
    assert any(line.startswith("answer:exact: pass rate 0% -> 50% (+50 pts") for line in lines)


def test_a_flat_reward_is_not_moved_and_says_the_interval_spans_0():
    from workbench.evaluate.rewards_eval import rewards_verdict

    base = [[0.5, 0.0], [0.3, 0.0]] * 10
    tuned = [[0.3, 0.0], [0.5, 0.0]] * 10  # every prompt changed, the mean did not
    s = _summary(base, tuned)
    t = s["greedy"]["total"]
    assert t["delta"] == 0 and t["ci95"][0] < 0 < t["ci95"][1] and not t["decided"]
    v = rewards_verdict(s)
    assert v["direction"] == "none"
    assert v["text"].startswith("GRPO did not move the held-out reward: 0.40 -> 0.40 (+0.00, "
                                "95% CI -")
    assert "the interval spans 0; greedy answers to 20 held-out prompts" in v["text"]

    same = rewards_verdict(_summary(base, base))
    assert same["text"] == ("GRPO did not move the held-out reward: base and fine-tuned score "
                            "the same on every one of the greedy answers to 20 held-out prompts "
                            "(mean 0.40)")


def test_sampled_answers_that_moved_while_greedy_ones_did_not_are_said():
    from workbench.evaluate.rewards_eval import rewards_verdict

    n, k = 16, 4
    greedy = [[0.5, 0.0]] * n
    sampled = {"base": [[[0.0, 0.0]] * k] * n,
               "fine-tuned": [[[0.5, 0.0]] * 2 + [[0.0, 0.0]] * 2] * n}
    s = _summary(greedy, greedy, sampled)
    assert s["sampled"]["samples"] == k
    st = s["sampled"]["total"]
    assert (st["base"], st["fine-tuned"], st["delta"], st["ci95"]) == (0, 0.25, 0.25, [0.25, 0.25])
    text = rewards_verdict(s)["text"]
    assert "score the same on every one" in text
    assert text.endswith("; sampled answers (mean of 4 samples a prompt) raised it: 0.00 -> 0.25 "
                         "(+0.25, 95% CI +0.25 to +0.25)")


def test_answers_much_longer_are_a_length_bias_and_a_reward_off_scale_is_noted():
    from workbench.evaluate.rewards_eval import lengths, rewards_verdict

    base = [[0.0, 0.0]] * 10
    tuned = [[2.0, 0.0]] * 10  # a user's reward on a 0-2 scale
    s = _summary(base, tuned)
    assert s["outside_0_1"] == [NAMES[0]]
    length = lengths([10, 11] * 5, [15, 16] * 5, [[10, 12]] * 10, [[14, 16]] * 10, seed=0,
                     max_new_tokens=16)
    g = length["greedy"]
    assert g["length_bias"] and g["delta_tokens"] == 5 and g["at_cap"]["fine-tuned"] == 5
    assert length["sampled"]["delta"] == 4 and length["sampled"]["at_cap"]["fine-tuned"] == 10
    text = rewards_verdict(s, length)["text"]
    assert text.endswith("; answers got 5.0 tokens longer (10.5 -> 15.5 tokens a greedy answer, "
                         "95% CI +5.0 to +5.0), +48%: a length bias")
    same = lengths([7] * 4, [7] * 4)
    assert rewards_verdict(s, same)["text"].endswith(
        "; answer length unchanged (7.0 tokens a greedy answer, base and fine-tuned)")


def test_report_lines_show_the_table_the_lengths_and_the_answers():
    from workbench.evaluate.rewards_eval import lengths, report_lines, rewards_verdict

    n = 10
    s = _summary([[0.0, 0.0]] * n, [[1.0, 1.0]] * n,
                 {"base": [[[0.0, 0.0]] * 2] * n, "fine-tuned": [[[1.0, 0.0]] * 2] * n})
    length = lengths([4] * n, [6] * n, [[4, 4]] * n, [[6, 6]] * n, max_new_tokens=16)
    rw = {**s, "rows_scored": n, "base": "the adapter off", "title": "GRPO", "temperature": 1.0,
          "max_new_tokens": 16, "length": length, "notes": ["a note"],
          "verdict": rewards_verdict(s, length), "lines": [],
          "examples": [{"prompt": "Translate to French: the cat", "reference": "le chat",
                        "answers": {"base": {"text": "the cat", "total": 0.0},
                                    "fine-tuned": {"text": "le chat", "total": 1.5}}}]}
    md = "\n".join(report_lines(rw))
    assert md.startswith("verdict: GRPO raised the held-out reward from 0.00 to 1.50")
    assert ("| weighted total | 0.000 | 1.500 | +1.500 | +1.500..+1.500 | 0.000 | 1.000 | "
            "+1.000 | +1.000..+1.000 |") in md
    assert "| answer:exact: pass rate | 0% | 100% | +100 pts | +100..+100 | 0% | 0% | +0 pts |" in md
    assert "| answer length (tokens) | 4.0 | 6.0 | +2.0 | +2.0..+2.0 | 4.0 | 6.0 | +2.0 |" in md
    assert "- note: a note" in md
    assert "| Translate to French: the cat | le chat | the cat (0.00) | le chat (1.50) |" in md


class _ScriptedEngine:
    """The engine's interface with answers written by hand: the fine-tuned model translates
    (greedily always, sampled on even prompts), the base does not. Each generate
    call takes `delay` seconds, for the time budget."""

    adapters = ["default"]
    tuned_adapter = "default"

    def __init__(self, delay: float = 0.0):
        self.delay, self.calls = delay, []

    def rows(self, prompts, systems, picker=None):
        from workbench.evaluate.compare import Row

        return [Row(s, i, list(p)) for i, p in enumerate(prompts) for s in systems]

    def generate(self, rows, *, on_row_done=None, do_sample=False, **kw):
        import time

        from workbench.evaluate.compare import Answer, Generations, RowDone, SystemTiming

        time.sleep(self.delay)
        self.calls.append((len(rows), do_sample, kw["max_new_tokens"]))
        answers = []
        for n, r in enumerate(rows):
            english = r.messages[-1]["content"].split(": ", 1)[1]
            good = r.system.name == "fine-tuned" and (not do_sample or r.prompt_index % 2 == 0)
            text = _FRENCH[english] if good else "I do not know"
            answers.append(Answer(r.system.name, r.prompt_index, text, [7] * len(text.split()),
                                  0.0, 5))
            if on_row_done:
                on_row_done(RowDone(r.system.name, r.prompt_index, n + 1, len(rows)))
        return Generations(answers, {s: SystemTiming(1, 0.1) for s in ("base", "fine-tuned")})


_FRENCH: dict[str, str] = {}


def _prompt_rows(n: int) -> list[dict]:
    records = [json.loads(line) for line in
               (REPO / "assets" / "demo" / "translate_en_fr_prompts.jsonl").read_text().splitlines()]
    rows = []
    for i, r in enumerate(records[:n]):
        _FRENCH[r["prompt"].split(": ", 1)[1]] = r["answer"]
        rows.append({"prompt": [{"role": "user", "content": r["prompt"]}], "prompt_ids": [1],
                     "columns": {"answer": r["answer"]}, "source": f"prompts.jsonl:{i + 1}"})
    return rows


def test_scored_answers_of_a_model_that_learned_to_translate(monkeypatch):
    """The demo's rewards on answers written by hand: the greedy fine-tuned answers are the
    reference translations (1.5 each: overlap 1 + exact 1 x 0.5), the base's are not (0); the
    sampled fine-tuned answers translate on the even prompts only."""
    from workbench.evaluate.evaluation import EvalOptions
    from workbench.evaluate.rewards_eval import evaluate_rewards
    from workbench.profile import load_profile

    monkeypatch.chdir(REPO / "profiles")
    profile = load_profile(REPO / "profiles" / "grpo-demo.toml")
    engine = _ScriptedEngine()
    stages = []
    out = evaluate_rewards(engine, profile, _prompt_rows(12), EvalOptions(max_test_rows=10),
                           progress=lambda stage, done, total: stages.append((stage, done, total)))
    rw = out["rewards"]
    assert engine.calls == [(20, False, 16), (80, True, 16)]  # 10 prompts x 2, then x 4 samples
    assert rw["rows_scored"] == 10 and rw["notes"][0].startswith("scored a seeded sample of 10 "
                                                                  "of the 12 held-out prompts")
    g, s = rw["greedy"], rw["sampled"]
    assert (g["total"]["base"], g["total"]["fine-tuned"]) == (0.0, 1.5)
    assert g["rewards"]["answer:exact"]["pass_rate"]["fine-tuned"] == 100.0
    assert s["total"]["fine-tuned"] == pytest.approx(1.5 * 0.5, abs=0.15)  # even prompts only
    assert rw["verdict"]["direction"] == "up"
    assert rw["verdict"]["text"].startswith("GRPO raised the held-out reward from 0.00 to 1.50 "
                                            "(+1.50, 95% CI +1.50 to +1.50); greedy answers to "
                                            "10 held-out prompts; sampled answers (mean of 4 "
                                            "samples a prompt): 0.00 -> ")
    e = rw["examples"][0]
    assert e["answers"]["fine-tuned"]["text"] == e["reference"]
    assert e["answers"]["fine-tuned"]["rewards"] == [1.0, 1.0]
    assert e["answers"]["base"]["total"] == 0.0
    assert stages[0] == ("rewards greedy answers", 0, 20)
    assert stages[-1] == ("rewards sampled answers", 80, 80)


def test_the_time_budget_keeps_the_prompts_that_fit(monkeypatch):
    from workbench.evaluate.evaluation import EvalOptions
    from workbench.evaluate.rewards_eval import PILOT_PROMPTS, evaluate_rewards
    from workbench.profile import load_profile

    monkeypatch.chdir(REPO / "profiles")
    profile = load_profile(REPO / "profiles" / "grpo-demo.toml")
    engine = _ScriptedEngine(delay=0.05)  # a pilot call: about 0.03 s a prompt with 4 samples
    out = evaluate_rewards(engine, profile, _prompt_rows(30),
                           EvalOptions(max_test_rows=0, time_budget_s=0.2))
    rw = out["rewards"]
    assert rw["rows_scored"] == PILOT_PROMPTS
    assert engine.calls[0] == (2 * PILOT_PROMPTS, False, 16)  # the pilot
    assert any(n.startswith(f"eval.time_budget_s = 0.2: scored a seeded sample of {PILOT_PROMPTS}"
                            " of the 30 held-out prompts") for n in rw["notes"])


def test_the_plan_says_what_the_rewards_evaluation_will_do():
    from workbench.evaluate.rewards_eval import is_rewards_run
    from workbench.profile import load_profile
    from workbench.train.plan import _describe_evaluation

    profile = load_profile(REPO / "profiles" / "grpo-demo.toml")
    assert is_rewards_run(profile)
    assert not is_rewards_run(load_profile(REPO / "profiles" / "dpo-demo.toml"))
    assert not is_rewards_run(load_profile(REPO / "profiles" / "demo.toml"))
    text = _describe_evaluation(profile, 60, "rewards")
    assert text == ("evaluation after training: 60 held-out prompts answered by the base and the "
                    "fine-tuned model, greedily and 4 times sampled at temperature 1, up to 16 "
                    "tokens (grpo.max_completion_len), every answer scored by the reward "
                    "functions; the weighted total and each reward's pass rate compared with 95% "
                    "intervals, and the answer lengths")
    profile.eval.max_test_rows = 8
    assert _describe_evaluation(profile, 60, "rewards").startswith(
        "evaluation after training: 8 of 60 held-out prompts")


# ---- end to end on the tiny model ------------------------------------------------------------


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory):
    """A 2-step GRPO run of the demo profile, evaluated after training on 8 held-out prompts."""
    tmp = tmp_path_factory.mktemp("grpo")
    workbench("--run", str(REPO / "profiles" / "grpo-demo.toml"), "--set", "train.max_steps=2",
              "--set", "eval.max_test_rows=8", "--set", f"train.runs_dir={tmp / 'runs'}",
              cwd=tmp, check=True, timeout=300)
    (path,) = (tmp / "runs").iterdir()
    return path


@pytest.mark.slow
def test_a_grpo_run_ends_with_the_rewards_report(grpo_run):
    md = (grpo_run / "report.md").read_text()
    data = json.loads((grpo_run / "report.json").read_text())
    rw = data["evaluation"]["rewards"]
    assert data["verdict"] == rw["verdict"]["text"] and data["verdict"].startswith("GRPO ")
    assert f"**{data['verdict']}**" in md
    assert rw["rows_scored"] == 8 and len(rw["examples"]) == 8
    assert rw["functions"] == NAMES and rw["weights"] == WEIGHTS
    assert rw["sampled"]["samples"] == 4 and rw["max_new_tokens"] == 16
    assert rw["base"] == "the adapter off"
    assert any("seeded sample of 8 of the 60 held-out prompts" in n for n in rw["notes"])
    for block in ("greedy", "sampled"):
        t = rw[block]["total"]
        assert t["ci95"][0] <= t["delta"] <= t["ci95"][1]
        assert 0 <= t["base"] <= 1.5 and 0 <= t["fine-tuned"] <= 1.5
    for e in rw["examples"]:
        assert e["source"].rsplit(":", 1)[0].endswith("translate_en_fr_prompts.jsonl")
        assert e["reference"] and set(e["answers"]) == {"base", "fine-tuned"}
        assert len(e["answers"]["base"]["rewards"]) == 2
    assert rw["length"]["greedy"]["answers"] == 8
    section = md.split("## Rewards")[1].split("\n## ")[0]
    assert section.strip().startswith(f"verdict: {data['verdict']}")
    assert "| weighted total | " in section and "| answer:exact: pass rate | " in section
    assert "| answer length (tokens) | " in section and "- length check (greedy answers): " in section
    assert "side by side: all 8 prompts" in section
    for name in ("Verdict", "Rewards", "Metrics", "Speed", "Loss curve", "Settings"):
        assert f"## {name}" in md
    events = [json.loads(line) for line in (grpo_run / "events.jsonl").read_text().splitlines()]
    stages = {e.get("stage") for e in events if e["type"] == "eval_progress"}
    assert {"rewards greedy answers", "rewards sampled answers"} <= stages
    print(section)  # shown with -s


@pytest.mark.slow
def test_workbench_eval_prepares_the_prompts_again_and_a_start_adapter_is_the_base(grpo_run,
                                                                                   tmp_path):
    import shutil

    from workbench.evaluate.evaluation import evaluate_run
    from workbench.evaluate.report import verdict
    from workbench.profile import load_profile, save_profile
    from workbench.rundir import RunDir, find_run

    run = find_run(grpo_run.name, grpo_run.parent)
    after = json.loads((grpo_run / "report.json").read_text())["evaluation"]["rewards"]
    progress = []
    result = evaluate_run(run, device="cpu", write=False, max_test_rows=8,
                          progress=progress.append)
    rw = result["rewards"]
    # the same seeded sample of held-out prompts as the evaluation after training saw
    assert [e["source"] for e in rw["examples"]] == [e["source"] for e in after["examples"]]
    assert verdict(result) == rw["verdict"]["text"]
    assert progress[-1]["stage"] == "rewards sampled answers"

    # A run that trained on from an adapter (here the one it ended with): that adapter is the
    # base, so the greedy answers are the same and nothing moved.
    profile = load_profile(run.profile_path)
    profile.model.adapter = str(run.adapter_dir)
    chained = RunDir.create(tmp_path / "runs", "grpo-chained")
    save_profile(profile, chained.profile_path)
    chained.write_status(state="finished", pid=None, step=2, total_steps=2)
    shutil.copytree(run.adapter_dir, chained.adapter_dir)
    result = evaluate_run(chained, device="cpu", max_test_rows=4)
    rw = result["rewards"]
    assert rw["base"] == f"the starting adapter (model.adapter = {run.adapter_dir})"
    assert rw["greedy"]["total"]["same_everywhere"]
    assert "score the same on every one of the greedy answers to 4 held-out prompts" in rw[
        "verdict"]["text"]
    assert rw["length"]["greedy"]["against"] == "start"
    assert rw["length"]["greedy"]["delta_tokens"] == 0
    md = (chained.path / "report.md").read_text()
    assert "## Rewards" in md and "base = the starting adapter (model.adapter = " in md
