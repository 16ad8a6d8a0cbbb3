"""What bare `workbench` imports before the app's first frame (bench/app_startup.py measures
the time): the command line's parser, and the engine modules it needs for flags such as
`--gpus`, stay out of the app's start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PROBE = """
import sys
import screens.app
seen = {}
screens.app.run_app = lambda: seen.update(modules=set(sys.modules)) or 0
from workbench.cli import main
assert main([]) == 0
print("\\n".join(sorted(seen["modules"])))
"""

# Engine modules the app does not need for its first frame (the Runs screen reads run folders
# with workbench.rundir only).
NOT_AT_START = ("workbench.pipeline.launch", "workbench.train.plan", "workbench.profile",
                "workbench.hub", "urllib.request", "torch", "transformers")


def test_bare_workbench_opens_the_app_without_the_parser_imports():
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    modules = set(out.stdout.split())
    assert "screens.app" in modules
    assert not modules & set(NOT_AT_START), sorted(modules & set(NOT_AT_START))
