"""The GPU benchmark scripts run end to end on the CPU in their small modes, so a session that
is lent the GPU machine (15 minutes in all) does not spend it finding a crash. (The memory
benchmark's dry run is tested in test_estimate.py.)"""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO


def test_compare_benchmark_on_a_random_model_of_a_shipped_architecture(tmp_path):
    out = tmp_path / "compare.md"
    proc = subprocess.run([sys.executable, "bench/compare_batched.py", "--model-config", "smollm2-360m",
                           "--prompts", "2", "--max-new-tokens", "3", "--repeat", "1",
                           "--write", str(out)], cwd=REPO, env=dict(os.environ, HF_HUB_OFFLINE="1"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = out.read_text()
    assert "random-init smollm2-360m" in table and "| 1 |" in table
