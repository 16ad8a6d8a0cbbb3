"""The GPU benchmark scripts run end to end on the CPU in their dry-run mode, so a session that
is lent the GPU machine (15 minutes in all) does not spend it finding a crash."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO


def test_memory_benchmark_dry_run_covers_lora_fused_loss_and_qlora(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "bench/estimate_memory_gpu.py", "--dry-run"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "estimate_memory_gpu.json").read_text())
    points = report["points"]
    assert {(p["method"], p["loss_path"]) for p in points} == {
        ("lora", "full_logits"), ("lora", "trl_fused"), ("qlora", "trl_fused")}
    assert all(p["status"] == "ran (dry run: not measured)" for p in points), points
    assert (tmp_path / "estimate_memory_gpu.md").is_file()


def test_compare_benchmark_on_a_random_model_of_a_shipped_architecture(tmp_path):
    out = tmp_path / "compare.md"
    proc = subprocess.run([sys.executable, "bench/compare_batched.py", "--model-config", "smollm2-360m",
                           "--prompts", "2", "--max-new-tokens", "3", "--repeat", "1",
                           "--write", str(out)], cwd=REPO, env=dict(os.environ, HF_HUB_OFFLINE="1"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = out.read_text()
    assert "random-init smollm2-360m" in table and "| 1 |" in table
