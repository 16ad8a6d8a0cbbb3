"""Screenshots of the Runs and Train screens for the README (assets/screenshots/*.svg), from a
real run: the demo profile trained on this machine, shown with this machine's real GPU state
(NVML, or "no GPU"). Nothing in these pictures is a fixture; what they show was measured here.

    python bench/screenshots.py [--size 120x36]

Takes about a minute on 2 CPU cores (the demo run, then the app).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO)]


def train_demo(runs: Path) -> Path:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "workbench", "run", "demo", "--runs-dir", str(runs)],
                   env=env, check=True, capture_output=True, text=True)
    return next(p for p in runs.iterdir() if p.is_dir())


async def shoot(out: Path, size: tuple[int, int], runs: Path) -> None:
    from screens.app import WorkbenchApp

    app = WorkbenchApp(runs_dir=runs)
    async with app.run_test(size=size) as pilot:
        await pilot.pause(0.5)
        await app.workers.wait_for_complete()
        await pilot.pause(0.3)
        app.save_screenshot(str(out / "runs.svg"))
        await pilot.press("o")  # the demo run is the only one, under the cursor
        await pilot.pause(0.8)
        await app.workers.wait_for_complete()
        await pilot.pause(0.3)
        app.save_screenshot(str(out / "train.svg"))


def main() -> None:
    size = (120, 36)
    if "--size" in sys.argv:
        w, h = sys.argv[sys.argv.index("--size") + 1].split("x")
        size = (int(w), int(h))
    out = REPO / "assets" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        os.environ["WORKBENCH_KEYMAP"] = str(Path(tmp) / "none.toml")
        os.environ["WORKBENCH_PROFILE_DIR"] = str(Path(tmp) / "none")
        run = train_demo(Path(tmp) / "runs")
        asyncio.run(shoot(out, size, Path(tmp) / "runs"))
    print(f"wrote {out / 'runs.svg'} and {out / 'train.svg'} from the real run {run.name}")


if __name__ == "__main__":
    main()
