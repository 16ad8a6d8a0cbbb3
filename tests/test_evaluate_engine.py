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
    from workbench.train.rundir import RunDir

    run = RunDir(run_dir)
    profile = load_profile(run.profile_path)
    return ComparisonEngine.from_run(run, profile), load_splits(profile), profile


def test_loading_reports_each_stage(run_dir):
    from workbench.evaluate.compare import ComparisonEngine
    from workbench.profile import load_profile
    from workbench.train.rundir import RunDir

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
    from workbench.evaluate.compare import Delta, default_systems
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
    for ev in engine.stream(rows, max_new_tokens=24):
        if isinstance(ev, Delta):
            texts[(ev.system, ev.prompt_index)] = texts.get((ev.system, ev.prompt_index), "") + ev.text
        else:
            final = ev
    assert final is not None
    for a in batched.answers:
        assert texts.get(key(a), "").strip() == a.text


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
    from workbench.train.rundir import RunDir

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
