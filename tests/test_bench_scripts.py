"""The GPU benchmark scripts run end to end on the CPU in their small modes, so a session that
is lent the GPU machine (15 minutes in all) does not spend it finding a crash. (The memory
benchmark's dry run is tested in test_estimate.py.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO, SHARED_DATA


def test_compare_benchmark_on_a_random_model_of_a_shipped_architecture(tmp_path):
    out = tmp_path / "compare.md"
    proc = subprocess.run([sys.executable, "bench/compare_batched.py", "--model-config", "smollm2-360m",
                           "--prompts", "2", "--max-new-tokens", "3", "--repeat", "1",
                           "--write", str(out)], cwd=REPO, env=dict(os.environ, HF_HUB_OFFLINE="1"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = out.read_text()
    assert "random-init smollm2-360m" in table and "batch size 48" in table
    # one row a repeat: the three schemes timed, and the ratios to the current one
    row = next(line for line in table.splitlines() if line.startswith("| 1 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 7 and all(float(c) > 0 for c in cells[1:4]), row
    assert cells[4].endswith("x") and cells[5].endswith("x") and cells[6].endswith("%"), row


def test_eval_speed_says_so_when_the_alpaca_file_is_absent(tmp_path):
    proc = subprocess.run([sys.executable, "bench/eval_speed.py", "--data", str(tmp_path / "none.json")],
                          cwd=REPO, env=dict(os.environ, HF_HUB_OFFLINE="1"),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "none.json is missing" in proc.stderr and "Nothing was measured" in proc.stderr


@pytest.mark.real
def test_eval_speed_runs_on_two_rows(tmp_path):
    """The real benchmark end to end, on 2 of its 100 rows (the timings are the benchmark's
    business: here it must run, and write its table)."""
    from workbench.models.smollm2 import model_dir

    if not (model_dir() / "model.safetensors").is_file() and os.environ.get("WORKBENCH_REAL") != "1":
        pytest.skip("SmolLM2-135M-Instruct is not converted: `python -m workbench.models.smollm2`")
    if not (SHARED_DATA / "alpaca_en_demo.json").is_file():
        pytest.skip("../shared/data/alpaca_en_demo.json is absent: the benchmark needs it")
    out = tmp_path / "speed.md"
    proc = subprocess.run([sys.executable, "bench/eval_speed.py", "--rows", "2", "--max-new-tokens", "3",
                           "--repeat", "1", "--before-prompts", "1", "--threads", "1",
                           "--write", str(out)], cwd=REPO, env=dict(os.environ, HF_HUB_OFFLINE="1"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]  # 1: target missed
    table = out.read_text()
    assert "2 Alpaca rows x 3 systems (base, few-shot k=3 fixed, fine-tuned) = 6 rows" in table
    assert "| 1 | plain first |" in table and "The previous scheme on the first 1 prompts" in table


def test_preference_step_benchmark_runs_on_the_tiny_model(tmp_path):
    """The DPO step benchmark (our trainer against trl's DPOTrainer used directly) end to end in
    its smallest mode: both arms train, start from ln 2, and the report has its table."""
    out = tmp_path / "preference_step.md"
    proc = subprocess.run([sys.executable, "bench/preference_step.py", "--models", "tiny",
                           "--steps", "2", "--warmup", "1", "--repeats", "1", "--pairs", "16",
                           "--arms", "ours,trl,ours-refcopy", "--write", str(out)],
                          cwd=REPO, env=dict(os.environ, HF_HUB_OFFLINE="1"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]  # 1: target missed
    table = out.read_text()
    for arm in ("ours", "trl", "ours-refcopy"):
        assert f"| assets/tiny-model (bundled) | {arm} | 2 (1) x 1 |" in table
    assert "step-1 loss ours 0.6931, trl 0.6931" in table
    assert "adapters on the model once the trainer is built" in table and "## Verdict" in table


@pytest.mark.slow
def test_grpo_step_benchmark_runs_on_the_tiny_model(tmp_path):
    """The GRPO step benchmark (our trainer against trl's GRPOTrainer used directly, the two runs
    taking turns a step each) in its quick mode: both arms train on the same prompts, sample the
    same completions, and the report has its table, the time split and the verdict."""
    out = tmp_path / "grpo_step.md"
    proc = subprocess.run([sys.executable, "bench/grpo_step.py", "--quick", "--write", str(out)],
                          cwd=REPO, env=dict(os.environ, HF_HUB_OFFLINE="1"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 1), proc.stdout[-3000:] + proc.stderr[-3000:]  # 1: target missed
    table = out.read_text()
    model = "assets/tiny-model (bundled), completions up to 16 tokens"
    for arm in ("ours", "trl"):
        row = next(line for line in table.splitlines()
                   if line.startswith(f"| {model} | {arm} | 2 (1) x 1 |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[3]) > 0 and cells[6].endswith("%)") and cells[11].endswith("MiB"), row
    assert "prompt token ids of the first generation batch identical" in table
    assert "identical in 1 of 1 pairs" in table  # same seed, same prompts: the same samples
    assert "trainer._record_samples (the samples event)" in table and "## Verdict" in table


@pytest.mark.slow
def test_grpo_demo_benchmark_runs_a_short_demo(tmp_path):
    """The GRPO demo benchmark end to end on 4 of the demo's 100 steps: the CLI run finishes and
    the table has the rewards, the zero-variance groups and the times."""
    out = tmp_path / "grpo_demo.md"
    proc = subprocess.run([sys.executable, "bench/grpo_demo.py", "--repeat", "1", "--steps", "4",
                           "--write", str(out)], cwd=REPO, env=dict(os.environ, HF_HUB_OFFLINE="1"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = out.read_text()
    row = next(line for line in table.splitlines() if line.startswith("| 1 | 4 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 15 and cells[2] == "42" and " -> " in cells[3] and float(cells[11]) > 0, row
    assert "--set eval.after_training=false --set train.max_steps=4" in table
    assert "Mean reward at each log (run 1)" in table


@pytest.mark.slow
def test_gpu_train_throughput_runs_its_cpu_smoke(tmp_path):
    """The training-throughput GPU check (issue 25) in its CPU smoke mode: trl's SFTTrainer and
    `workbench run` both train the tiny model, and a kernel asked for on a CPU falls back."""
    out = tmp_path / "throughput.md"
    proc = subprocess.run([sys.executable, "bench/gpu_train_throughput.py", "--cpu-smoke",
                           "--arms", "trl-default,wb-liger", "--write", str(out)],
                          cwd=REPO, env=dict(os.environ, HF_HUB_OFFLINE="1"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = out.read_text()
    for arm in ("trl-default", "wb-liger"):
        row = next(line for line in table.splitlines() if line.startswith(f"| tiny | {arm} |"))
        assert float(row.split("|")[4].replace(",", "")) > 0, row
    assert "kernels: liger asked for but this is a CPU" in table
