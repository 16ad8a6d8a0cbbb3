"""`workbench estimate` says what a person would get wrong (issue 26, appendix): a LoRA rank at
or above the model's hidden size (r = 1664 on the 1.8M-parameter demo model: the adapters
outweigh the model) is warned about, in `estimate` and on the Configure screen; a run that is
timed is not also said to be "not timed or priced"."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO
from workbench.estimate.memory import EstimateSettings, estimate

DEMO = REPO / "profiles" / "demo.toml"
TINY = json.loads((REPO / "assets" / "tiny-model" / "config.json").read_text())


def run_estimate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench", "estimate", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)


def test_a_rank_above_the_hidden_size_is_warned_about():
    est = estimate(TINY, EstimateSettings(r=1664))
    assert est.trainable_params > est.total_params  # the adapters outweigh the model
    (warning,) = est.warnings
    assert "lora.r = 1664" in warning and "hidden size (192)" in warning and "lower lora.r" in warning
    assert f"Warning: {warning}" in est.explain()
    assert est.to_dict()["warnings"] == [warning]
    assert estimate(TINY, EstimateSettings(r=16)).warnings == []
    assert estimate(TINY, EstimateSettings(method="full")).warnings == []


def test_estimate_text_warns_and_says_the_time_once():
    proc = run_estimate(str(DEMO), "--gpu", "l4", "--r", "1664")
    assert proc.returncode == 0, proc.stderr
    assert "Warning: lora.r = 1664" in proc.stdout
    timed = [line for line in proc.stdout.splitlines() if line.startswith("time on l4")]
    assert len(timed) == 1 and "not timed" not in proc.stdout, timed


def test_configure_shows_the_warning():
    sys.path.insert(0, str(REPO))
    from screens.widgets.configure_estimate import compute_view
    from workbench.estimate.params import architecture_from_config
    from workbench.profile import load_profile

    arch = architecture_from_config(TINY)
    view = compute_view(arch, load_profile(DEMO, ["lora.r=1664"]), None, None)
    assert any("lora.r = 1664" in n for n in view.notes), view.notes
    view = compute_view(arch, load_profile(DEMO), None, None)
    assert not any("lora.r" in n for n in view.notes)
