"""Shared test setup: everything offline, and helpers to drive the real command line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

REPO = Path(__file__).resolve().parent.parent
TINY_MODEL = REPO / "assets" / "tiny-model"
DEMO_DATA = REPO / "assets" / "demo" / "translate_en_fr.jsonl"
SHARED_DATA = REPO.parent / "shared" / "data"


def workbench(*args: str, cwd: Path, timeout: float = 600, env: dict | None = None,
              check: bool = False) -> subprocess.CompletedProcess:
    """Run the real `workbench` command line in a subprocess (as a user would)."""
    full_env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "workbench", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"workbench {' '.join(args)} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@pytest.fixture
def needs_tiny_model():
    if not (TINY_MODEL / "config.json").exists():
        pytest.fail("assets/tiny-model is missing: run `python -m workbench.models.build_tiny`")
