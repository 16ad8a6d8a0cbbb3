"""The evaluate room on CPU with the tiny model and a real adapter trained by the CLI."""

from __future__ import annotations

import json
import shutil
import sys
import subprocess

import pytest

from conftest import REPO, workbench
from workbench.evaluate.errors import EvaluateError


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evalrun")
    workbench("run", str(REPO / "profiles" / "demo.toml"), "--set", "train.max_steps=40",
              "--runs-dir", str(tmp / "runs"), cwd=tmp, check=True, timeout=900)
    return next(p for p in (tmp / "runs").iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def engine_and_splits(run_dir):
    from workbench.evaluate.compare import ComparisonEngine
    from workbench.evaluate.testset import load_splits
    from workbench.profile import load_profile
    from workbench.rundir import RunDir

    run = RunDir(run_dir)
    profile = load_profile(run.profile_path)
    return ComparisonEngine.from_run(run, profile), load_splits(profile), profile


def test_loading_reports_each_stage(run_dir):
    from workbench.evaluate.compare import ComparisonEngine
    from workbench.profile import load_profile
    from workbench.rundir import RunDir

    run = RunDir(run_dir)
    stages: list[str] = []
    ComparisonEngine.from_run(run, load_profile(run.profile_path), progress=stages.append)
    assert [s.split(" ")[2] for s in stages] == ["tokenizer", "base", "adapter"], stages
    from workbench.fmt import fmt_bytes

    weights = (REPO / "assets" / "tiny-model" / "model.safetensors").stat().st_size
    assert f"tiny-model onto cpu ({fmt_bytes(weights)} of weights)" in stages[1]
    assert stages[2].endswith("adapter tuned")


def test_end_of_training_report_has_every_section(run_dir):
    from workbench.evaluate.report import SECTIONS

    md = (run_dir / "report.md").read_text()
    for section in SECTIONS:
        assert f"## {section}" in md, section
    # written just before the run is marked finished, it says finished all the same
    assert "; state finished, step 40/40" in md.splitlines()[2]
    # the evaluation after training showed its progress, in events the display prints
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    progress = [e for e in events if e["type"] == "eval_progress"]
    ends = {e["stage"] for e in progress if e["done"] == e["total"]}
    assert {"perplexity base", "test answers", "prompt suite answers"} <= ends, progress
    assert events[-1]["type"] == "status" and events[-1]["state"] == "finished"
    data = json.loads((run_dir / "report.json").read_text())
    assert data["verdict"] and "few-shot" in data["verdict"]
    suite = json.loads((run_dir / "prompt_suite.json").read_text())
    assert suite["scored"] == 40 and "fine_tuned_correct" in suite
    assert "n/a (CPU run)" in md


def test_fine_tuned_perplexity_below_base(engine_and_splits):
    from workbench.evaluate.compare import default_systems
    from workbench.evaluate.perplexity import perplexity

    engine, splits, _ = engine_and_splits
    base, _, tuned = default_systems(0)
    p_base = perplexity(engine, splits.test, base)
    p_tuned = perplexity(engine, splits.test, tuned)
    assert p_tuned.answer < p_base.answer
    assert p_tuned.answer_tokens == p_base.answer_tokens > 0


def test_fewshot_never_contains_test_rows(engine_and_splits):
    from workbench.evaluate.compare import default_systems
    from workbench.evaluate.fewshot import FewShotPicker, prompt_of

    engine, splits, _ = engine_and_splits
    test_prompts = [prompt_of(r) for r in splits.test]
    # Even with a test row smuggled into the train split, it is never an example.
    train = splits.train + splits.test[:5]
    for selection in ("fixed", "bm25"):
        picker = FewShotPicker(train, 5, selection=selection, exclude_prompts=test_prompts)
        rows = engine.rows(test_prompts, default_systems(5), picker)
        for row in rows:
            shown = [m["content"] for m in row.messages[:-1] if m["role"] == "user"]
            assert not set(shown) & set(test_prompts), selection


def test_batched_equals_separate_and_streaming(engine_and_splits):
    from workbench.evaluate.compare import Delta, Generations, RowDone, default_systems
    from workbench.evaluate.fewshot import FewShotPicker, prompt_of

    engine, splits, _ = engine_and_splits
    prompts = [prompt_of(r) for r in splits.test[:6]]
    picker = FewShotPicker(splits.train, 3, exclude_prompts=prompts)
    rows = engine.rows(prompts, default_systems(3), picker)
    batched = engine.generate(rows, max_new_tokens=24)
    separate = engine.generate_separately(rows, max_new_tokens=24)
    key = lambda a: (a.system, a.prompt_index)  # noqa: E731
    assert {key(a): a.token_ids for a in batched.answers} == {key(a): a.token_ids for a in separate.answers}
    assert set(batched.timing) == {"base", "few-shot", "fine-tuned"}
    texts: dict = {}
    final = None
    stopped = []
    for ev in engine.stream(rows, max_new_tokens=24):
        if isinstance(ev, Delta):
            texts[(ev.system, ev.prompt_index)] = texts.get((ev.system, ev.prompt_index), "") + ev.text
        elif isinstance(ev, RowDone):
            stopped.append(ev)
        else:
            final = ev
    assert isinstance(final, Generations)
    for a in batched.answers:
        assert texts.get(key(a), "").strip() == a.text
    assert [ev.done for ev in stopped] == list(range(1, len(rows) + 1))


def test_each_row_is_reported_as_it_stops(engine_and_splits):
    from workbench.evaluate.compare import default_systems
    from workbench.evaluate.fewshot import prompt_of

    engine, splits, _ = engine_and_splits
    prompts = [prompt_of(r) for r in splits.test[:7]]
    rows = engine.rows(prompts, default_systems(0))
    heard = []
    # batch_size 8: three generate calls, and the count runs on across them
    result = engine.generate(rows, max_new_tokens=16, batch_size=8, on_row_done=heard.append)
    assert [ev.done for ev in heard] == list(range(1, len(rows) + 1))
    assert {ev.total for ev in heard} == {len(rows)} == {21}
    assert sorted((ev.system, ev.prompt_index) for ev in heard) == sorted(
        (a.system, a.prompt_index) for a in result.answers)


def test_calls_keep_few_shot_rows_apart_and_sorted_by_length():
    from workbench.evaluate.compare import Row, System, default_systems, plan_batches

    base, few, tuned = default_systems(3)
    other = System("step-10", "step-10")
    rows, lengths = [], []
    for i, n in enumerate([40, 90, 35, 60, 41, 70, 38]):  # question lengths; examples add 600
        for s in (base, few, tuned, other):
            rows.append(Row(s, i, []))
            lengths.append(n + (600 + i if s is few else 0))
    calls = plan_batches(rows, lengths, batch_size=5)
    assert sorted(i for call in calls for i in call) == list(range(len(rows)))  # each row once
    assert all(0 < len(call) <= 5 for call in calls)
    for call in calls:
        assert len({rows[i].system.shots for i in call}) == 1  # few-shot rows never pad short ones
        assert [lengths[i] for i in call] == sorted((lengths[i] for i in call), reverse=True)
    firsts = [lengths[call[0]] for call in calls]
    assert firsts == sorted(firsts, reverse=True)  # longest call first
    # the rows without examples are cut by length across systems: neighbours are close
    short = [call for call in calls if rows[call[0]].system.shots == 0]
    assert [[lengths[i] for i in call] for call in short][:2] == [[90, 90, 90, 70, 70], [70, 60, 60, 60, 41]]
    with pytest.raises(ValueError, match="batch_size"):
        plan_batches(rows, lengths, 0)


def test_batched_answers_equal_each_row_alone_and_stop_at_end_of_turn(engine_and_splits):
    import torch

    from workbench.evaluate.compare import Delta, default_systems, plan_batches
    from workbench.evaluate.fewshot import FewShotPicker, prompt_of

    engine, splits, _ = engine_and_splits
    prompts = [prompt_of(r) for r in splits.test[:6]]
    picker = FewShotPicker(splits.train, 3, exclude_prompts=prompts)
    rows = engine.rows(prompts, default_systems(3), picker)
    calls = plan_batches(rows, engine.prompt_lengths(rows), 4)
    # the plan under test has calls mixing base and fine-tuned rows and few-shot calls apart
    assert any({rows[i].system.name for i in call} == {"base", "fine-tuned"} for call in calls)
    assert any({rows[i].system.name for i in call} == {"few-shot"} for call in calls)
    deltas: dict = {}
    heard = []

    def delta(ev: Delta) -> None:
        deltas[(ev.system, ev.prompt_index)] = deltas.get((ev.system, ev.prompt_index), "") + ev.text

    result = engine.generate(rows, max_new_tokens=24, batch_size=4, on_delta=delta,
                             on_row_done=heard.append)
    # every answer in its row's slot, in the order of the rows
    assert [(a.system, a.prompt_index) for a in result.answers] == [
        (r.system.name, r.prompt_index) for r in rows]
    assert [ev.done for ev in heard] == list(range(1, len(rows) + 1))
    assert {ev.total for ev in heard} == {len(rows)}
    assert sorted((ev.system, ev.prompt_index) for ev in heard) == sorted(
        (r.system.name, r.prompt_index) for r in rows)
    for row, answer in zip(rows, result.answers):
        alone = engine.generate([row], max_new_tokens=24).answers[0]
        assert answer.token_ids == alone.token_ids, (row.system.name, row.prompt_index)
        assert deltas.get((answer.system, answer.prompt_index), "").strip() == answer.text
    assert len({a.text for a in result.answers if a.system == "fine-tuned"} -
               {a.text for a in result.answers if a.system == "base"}) > 0  # the adapter was on
    # Each row stopped at its own end-of-turn: a shorter answer is one the model ends right
    # there (its greedy next token is a stop token), and no answer runs past one.
    early = 0
    for row, answer in zip(rows, result.answers):
        assert not set(answer.token_ids) & engine.stop_ids
        if len(answer.token_ids) == 24:
            continue
        early += 1
        prompt = engine.tokenizer(engine.chat_text(row.messages), add_special_tokens=False)["input_ids"]
        with engine.using(row.system.adapter), torch.inference_mode():
            logits = engine.model(input_ids=torch.tensor([prompt + answer.token_ids])).logits
        assert int(logits[0, -1].argmax()) in engine.stop_ids, (row.system.name, row.prompt_index)
    assert early >= len(rows) // 2 and len({len(a.token_ids) for a in result.answers}) > 1


def test_cancel_stops_before_the_next_call(engine_and_splits):
    import threading

    from workbench.evaluate.compare import default_systems
    from workbench.evaluate.fewshot import prompt_of

    engine, splits, _ = engine_and_splits
    prompts = [prompt_of(r) for r in splits.test[:6]]
    rows = engine.rows(prompts, default_systems(0))
    cancel = threading.Event()
    heard = []

    def done(ev) -> None:
        heard.append(ev)
        cancel.set()  # as the app's ^b does, from the first row that stops

    result = engine.generate(rows, max_new_tokens=16, batch_size=4, on_row_done=done, cancel=cancel)
    assert 0 < len(result.answers) <= 4 < len(rows)  # the first call's rows, no later call
    assert len(heard) == len(result.answers)
    slots = [(r.system.name, r.prompt_index) for r in rows]
    keys = [(a.system, a.prompt_index) for a in result.answers]
    assert keys == sorted(keys, key=slots.index)


def test_evaluate_run_records_progress_in_the_events(run_dir, engine_and_splits, tmp_path):
    from workbench.evaluate.evaluation import evaluate_run
    from workbench.rundir import EVENT_FIELDS, RunDir

    engine, _, profile = engine_and_splits
    run = RunDir(tmp_path / run_dir.name)  # a copy: the module's run keeps its own report
    shutil.copytree(run_dir, run.path, ignore=shutil.ignore_patterns("checkpoints"))
    before = len(run.read_events()[0])
    prompts = tmp_path / "three.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Translate to French: {w}", "reference": r}) + "\n"
                               for w, r in (("the cat", "le chat"), ("the dog", "le chien"),
                                            ("the house", "la maison"))))
    updates, handed = [], []
    evaluate_run(run, engine=engine, profile=profile, prompts_file=str(prompts), max_test_rows=4,
                 max_new_tokens=4, shots=1, progress=updates.append, on_event=handed.append)
    events = run.read_events()[0][before:]
    assert events == handed and {e["type"] for e in events} == {"eval_progress"}
    assert all(set(e) - {"type", "time"} == set(EVENT_FIELDS["eval_progress"]) for e in events)
    stages = ["perplexity base", "perplexity few-shot", "perplexity fine-tuned", "test answers",
              "prompt suite answers"]
    assert list(dict.fromkeys(e["stage"] for e in events)) == stages
    totals = {"test answers": 12, "prompt suite answers": 9}
    for stage in stages:
        done = [u["done"] for u in updates if u["stage"] == stage]
        total = totals.get(stage, 4)
        # every report, increasing from 0 up to the total
        assert done[0] == 0 and done[-1] == total and done == sorted(done), (stage, done)
        if stage in totals:
            assert done == list(range(total + 1)), (stage, done)  # one a row
        ends = [e for e in events if e["stage"] == stage]
        assert ends[0]["done"] == 0 and ends[-1]["done"] == ends[-1]["total"] == total


def test_metrics():
    from workbench.evaluate.metrics import score_all

    s = score_all(["exact_match", "token_f1", "rouge_l", "chrf", "bleu"],
                  ["le chat noir", "la maison"], ["Le chat noir.", "le chien"])
    assert s["exact_match"] == 50.0 and s["token_f1"] == 50.0 and 0 < s["chrf"] < 100
    # sacrebleu's BLEU is case-sensitive and corpus-level: identical text scores 100.
    same = "the small river sings under the lamp"
    assert score_all(["bleu", "rouge_l"], [same], [same]) == {"bleu": 100.0, "rouge_l": 100.0}


def test_bad_inputs(run_dir, tmp_path):
    from workbench.evaluate.compare import check_adapter, run_adapters
    from workbench.evaluate.suite import load_prompts
    from workbench.profile import load_profile
    from workbench.rundir import RunDir

    profile = load_profile(run_dir / "profile.toml")
    with pytest.raises(EvaluateError, match="prompt file not found"):
        load_prompts(tmp_path / "nope.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{not json\n')
    with pytest.raises(EvaluateError, match=r"bad.jsonl:2: invalid JSON"):
        load_prompts(bad)
    toml = tmp_path / "p.toml"
    toml.write_text('[[prompt]]\ntext = "hi"\nreference = "salut"\n[[prompt]]\nreference = "x"\n')
    with pytest.raises(EvaluateError, match=r"p.toml:4: this \[\[prompt\]\] has no string `text`"):
        load_prompts(toml)
    # another base model / another rank
    other = tmp_path / "adapter"
    shutil.copytree(run_dir / "adapter", other)
    cfg = json.loads((other / "adapter_config.json").read_text())
    (other / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": "meta-llama/X"}))
    with pytest.raises(EvaluateError, match="trained on 'meta-llama/X'"):
        check_adapter(other, profile)
    (other / "adapter_config.json").write_text(json.dumps({**cfg, "r": 4}))
    with pytest.raises(EvaluateError, match="rank r=4"):
        check_adapter(other, profile)
    (other / "adapter_config.json").write_text(json.dumps({**cfg, "target_modules": ["q_proj"]}))
    with pytest.raises(EvaluateError, match="targets"):
        check_adapter(other, profile)
    # no adapter yet
    fake = tmp_path / "run"
    fake.mkdir()
    (fake / "status.json").write_text('{"state": "stopped"}')
    with pytest.raises(EvaluateError, match="no adapter yet"):
        run_adapters(RunDir(fake))


def test_cli_eval_exit_2_without_adapter(tmp_path):
    fake = tmp_path / "run"
    fake.mkdir()
    (fake / "status.json").write_text('{"state": "failed"}')
    (fake / "profile.toml").write_text((REPO / "profiles" / "demo.toml").read_text())
    # Through the real command line, as a user types it.
    proc = subprocess.run([sys.executable, "-m", "workbench", "eval", str(fake), "--device", "cpu"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2, proc.stderr
    assert "no adapter yet" in proc.stderr and not (fake / "report.md").exists()


def test_cli_compare_shows_progress_and_answers_in_columns(run_dir, tmp_path):
    prompts = tmp_path / "two.jsonl"
    prompts.write_text('{"prompt": "Translate to French: the cat", "reference": "le chat"}\n'
                       '{"prompt": "Translate to French:\\nthe dog"}\n')
    proc = workbench("compare", str(run_dir), "--prompts", str(prompts), "--max-new-tokens", "6",
                     "--shots", "1", cwd=tmp_path, env={"COLUMNS": "60"}, check=True)
    # not a terminal: plain progress lines on stderr, the first and the last at least
    assert "comparing: answers 0/6 (0%)" in proc.stderr
    assert "comparing: answers 6/6 (100%)" in proc.stderr
    lines = proc.stdout.splitlines()
    assert "[2] Translate to French:" in lines and "    the dog" in lines
    assert "    reference   le chat" in lines
    answers = lines[:lines.index("speed (length-sorted batched calls; base and fine-tuned share theirs):")]
    assert all(len(line) <= 60 for line in answers), answers


def test_cli_module_imports_fast():
    code = "import sys, workbench.evaluate.cli; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_large_test_splits_are_sampled_and_the_report_says_so():
    from workbench.evaluate.evaluation import _capped
    from workbench.evaluate.testset import Splits

    rows = [{"messages": [{"role": "user", "content": str(i)}], "source": {"row": i}} for i in range(50)]
    splits = Splits(train=[], test=rows, source="validation split")
    capped = _capped(splits, 10, seed=42)
    assert len(capped.test) == 10 and capped.test == _capped(splits, 10, seed=42).test
    assert [r["source"]["row"] for r in capped.test] == sorted(r["source"]["row"] for r in capped.test)
    assert "10 of the 50 test rows" in capped.notes[-1]
    assert _capped(splits, 0, seed=42) is splits and _capped(splits, 100, seed=42) is splits


def test_evaluation_cost_prices_every_call_from_one_probe(engine_and_splits):
    from workbench.evaluate.compare import BASE, default_systems
    from workbench.evaluate.cost import StepCost, estimate, price, probe
    from workbench.evaluate.fewshot import FewShotPicker, prompt_of

    # a call pays rows x its longest prompt, and max_new_tokens steps of its rows
    gen, ppl = price([[0, 1], [2]], [10, 30, 5], [4, 4, 1], tokens_per_s=10.0,
                     step=StepCost(0.5), max_new_tokens=8)
    assert gen == pytest.approx(2 * 30 / 10 + 8 * 0.5 * 2 + 5 / 10 + 8 * 0.5)
    assert ppl == pytest.approx((14 + 34 + 6) / 10)
    # a step reads the KV cache: priced at each call's mean context (longest prompt + 8 / 2)
    kv = StepCost(0.5, per_context_token=0.01)
    gen_kv, _ = price([[0, 1], [2]], [10, 30, 5], [4, 4, 1], tokens_per_s=10.0, step=kv,
                      max_new_tokens=8)
    assert gen_kv == pytest.approx(gen + 8 * 2 * 0.01 * 34 + 8 * 1 * 0.01 * 9)
    # the line through a short and a long probe; never negative, and one probe alone is flat
    line = StepCost.through((50, 0.01), (650, 0.04))
    assert line.at(50) == pytest.approx(0.01) and line.at(650) == pytest.approx(0.04)
    assert StepCost.through((50, 0.01), (650, 0.005)) == StepCost(0.01)
    assert StepCost.through((50, 0.01), None) == StepCost(0.01)

    engine, splits, _ = engine_and_splits
    rows = engine.rows([prompt_of(r) for r in splits.test[:4]], default_systems(0))
    prefill_s, step_s = probe(engine, rows, BASE, steps=3)
    assert prefill_s > 0 and step_s > 0

    test = splits.test[:6]
    picker = FewShotPicker(splits.train, 3, exclude_prompts=[prompt_of(r) for r in test])
    cost = estimate(engine, test, default_systems(3), picker, max_new_tokens=16, batch_size=4)
    assert (cost.rows, cost.systems, cost.probe_rows) == (6, 3, 4)
    assert cost.generation_s > 0 and cost.perplexity_s > 0
    # priced at max_new_tokens: more tokens, more seconds. The two estimates probe anew, and
    # probes of a few milliseconds on a busy machine can differ by more than 4x, so the
    # pricing is compared on probes of fixed seconds (the measuring is checked above).
    import workbench.evaluate.cost as cost_module

    fixed = lambda engine, rows, adapter, **kw: (0.01 * len(rows), 0.002 * len(rows))  # noqa: E731
    real_probe, cost_module.probe = cost_module.probe, fixed
    try:
        short = estimate(engine, test, default_systems(3), picker, max_new_tokens=16, batch_size=4)
        longer = estimate(engine, test, default_systems(3), picker, max_new_tokens=64, batch_size=4)
    finally:
        cost_module.probe = real_probe
    assert longer.generation_s > 2 * short.generation_s
    text = cost.describe("cpu")
    assert text.startswith("6 rows x 3 systems, about ") and "on this CPU" in text
