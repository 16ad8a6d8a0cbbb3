"""Shared test setup: everything offline, and helpers to drive the real command line."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
# Module-scoped fixtures plan runs before any test's own cache (below) is set: this one, for the
# whole session, keeps them out of the user's ~/.cache/workbench/tokenized too.
_SESSION_TOKEN_CACHE = tempfile.mkdtemp(prefix="workbench-token-cache-")
atexit.register(shutil.rmtree, _SESSION_TOKEN_CACHE, True)
os.environ["WORKBENCH_TOKEN_CACHE"] = _SESSION_TOKEN_CACHE

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


@pytest.fixture(autouse=True)
def _tokenized_data_cache(tmp_path_factory, monkeypatch):
    """Each test's own tokenized-data cache (workbench/data/token_cache.py), inherited by the
    processes it starts: tests never write into the user's ~/.cache, nor see each other's rows."""
    monkeypatch.setenv("WORKBENCH_TOKEN_CACHE", str(tmp_path_factory.mktemp("token-cache")))


@pytest.fixture
def needs_tiny_model():
    if not (TINY_MODEL / "config.json").exists():
        pytest.fail("assets/tiny-model is missing: run `python -m workbench.models.build_tiny`")


@pytest.fixture
def snap_compare(snap_compare, monkeypatch, request):
    """The plugin's snap_compare, plus a text diff in the failure message: CI keeps only the
    console output, not snapshot_report.html, and a mismatch must be diagnosable from it."""
    import textual._doc as doc
    from app_helpers import svg_text

    taken: list[str] = []
    real_take = doc.take_svg_screenshot

    def take(*args, **kwargs):
        taken.append(real_take(*args, **kwargs))
        return taken[-1]
    monkeypatch.setattr(doc, "take_svg_screenshot", take)

    def compare(*args, **kwargs) -> bool:
        if snap_compare(*args, **kwargs) or request.config.getoption("--snapshot-update"):
            return True
        import difflib

        test_file = Path(request.node.path)
        stored = test_file.parent / "__snapshots__" / test_file.stem / f"{request.node.name}.svg"
        expected = svg_text(stored.read_text(encoding="utf-8")) if stored.exists() else []
        diff = "\n".join(difflib.unified_diff(expected, svg_text(taken[-1]), "stored", "now",
                                              lineterm="")) if taken else ""
        pytest.fail(f"snapshot {stored.name} differs ({'text' if diff else 'styling only'}):\n"
                    f"{diff}", pytrace=False)
    return compare
