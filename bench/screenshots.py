"""Screenshots of the Runs and Train screens for the README (assets/screenshots/*.svg).

Drawn from hand-written run folders and a fake two-GPU NVML (the same fixtures as the
snapshot tests), so the pictures are reproducible on any machine:
    python bench/screenshots.py [--size 120x36]
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]


async def shoot(out: Path, size: tuple[int, int]) -> None:
    from app_helpers import A10G, H100, T0, fake_nvml, gpu_dicts, make_finished_run

    sys.modules["pynvml"] = fake_nvml([H100, A10G])
    from screens.app import WorkbenchApp

    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        os.environ["WORKBENCH_KEYMAP"] = str(Path(tmp) / "none.toml")
        os.environ["WORKBENCH_PROFILE_DIR"] = str(Path(tmp) / "none")
        runs = Path("runs")
        run = make_finished_run(runs, "qwen2.5-7b-qlora", steps=120, gpus=gpu_dicts(H100),
                                hourly=2.49)
        make_finished_run(runs, "demo", start=T0 - 7200)
        make_finished_run(runs, "llama3.1-8b-qlora", start=T0 + 3600, state="stopped",
                          gpus=gpu_dicts(H100))
        app = WorkbenchApp(runs_dir=runs)
        async with app.run_test(size=size) as pilot:
            await pilot.pause(0.5)
            await app.workers.wait_for_complete()
            await pilot.pause(0.2)
            app.save_screenshot(str(out / "runs.svg"))
            await pilot.press("down", "o")
            await pilot.pause(0.8)
            await app.workers.wait_for_complete()
            await pilot.pause(0.2)
            app.save_screenshot(str(out / "train.svg"))
    print(f"wrote {out / 'runs.svg'} and {out / 'train.svg'} ({run.name})")


def main() -> None:
    size = (120, 36)
    if "--size" in sys.argv:
        w, h = sys.argv[sys.argv.index("--size") + 1].split("x")
        size = (int(w), int(h))
    out = REPO / "assets" / "screenshots"
    out.mkdir(parents=True, exist_ok=True)
    asyncio.run(shoot(out, size))


if __name__ == "__main__":
    main()
