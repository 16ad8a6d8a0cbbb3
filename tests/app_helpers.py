"""Shared pieces of the app tests: a fixed set of runs, a fake NVML, and the screen as text."""

from __future__ import annotations

import io
import json
import sys
import types
from pathlib import Path
from types import SimpleNamespace

GIB = 1024 ** 3
T0 = 1795852800.0  # 2026-11-28 08:00:00 UTC: fixed times keep snapshots stable

H100 = {"name": "NVIDIA H100 80GB HBM3", "total": 80 * GIB, "used": 61 * GIB, "util": 97,
        "temp": 61, "mw": 512345}
A10G = {"name": "NVIDIA A10G", "total": 24 * GIB, "used": 2 * GIB, "util": 3, "temp": 30,
        "mw": 25000}


def fake_nvml(gpus=()):
    """A pynvml stand-in answering the queries workbench.estimate.gpu makes."""
    m = types.ModuleType("pynvml")
    m.NVML_TEMPERATURE_GPU = 0
    m.nvmlInit = lambda: None
    m.nvmlSystemGetDriverVersion = lambda: "550.54.15"
    m.nvmlDeviceGetCount = lambda: len(gpus)
    m.nvmlDeviceGetHandleByIndex = lambda i: gpus[i]
    m.nvmlDeviceGetName = lambda h: h["name"].encode()
    m.nvmlDeviceGetMemoryInfo = lambda h: SimpleNamespace(total=h["total"], used=h["used"],
                                                          free=h["total"] - h["used"])
    m.nvmlDeviceGetUtilizationRates = lambda h: SimpleNamespace(gpu=h["util"], memory=0)
    m.nvmlDeviceGetTemperature = lambda h, kind: h["temp"]
    m.nvmlDeviceGetPowerUsage = lambda h: h["mw"]
    m.nvmlDeviceGetEnforcedPowerLimit = lambda h: 700000
    m.nvmlDeviceGetComputeRunningProcesses = lambda h: []
    return m


def install_fake_nvml(monkeypatch, gpus=()):
    from workbench.estimate import gpu

    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(gpus))
    # Through monkeypatch, so the cached NVML state is also put back when the test ends.
    monkeypatch.setattr(gpu, "_initialized", None)
    monkeypatch.setattr(gpu, "_reason", "")
    return gpu


def iso(ts: float) -> str:
    from workbench.rundir import iso as _iso

    return _iso(ts)


def write_event(run, type_: str, t: float, **fields) -> None:
    """append_event stamps the current time; snapshots need fixed times."""
    with open(run.events_path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"type": type_, "time": t, **fields}, sort_keys=True) + "\n")


def preference_signals(method: str, step: int, steps: int) -> dict:
    """What a preference run logs besides the loss (workbench.train.methods' charts), made up
    but shaped like a run that learns: the margin and accuracy grow with the step."""
    x = step / steps
    chosen, rejected = round(0.6 * x, 4), round(-0.3 * x, 4)
    if method == "kto":
        return {"kl": round(0.02 + 0.1 * x, 4), "rewards/chosen": chosen, "rewards/rejected": rejected}
    signals = {"rewards/chosen": chosen, "rewards/rejected": rejected,
               "rewards/margins": round(chosen - rejected, 4),
               "rewards/accuracies": round(min(1.0, 0.5 + 0.5 * x), 4)}
    if method == "orpo":
        signals["log_odds_ratio"] = round(-0.7 + x, 4)
    return signals


def make_finished_run(runs_dir: Path, name: str = "demo", steps: int = 40, start: float = T0,
                      state: str = "finished", gpus: list[dict] | None = None, hourly: float = 2.5,
                      method: str = "sft"):
    """A run folder as the runner leaves it, written by hand with fixed times. A preference
    `method` (dpo, orpo, kto, simpo) is written into its profile, and its log and eval events
    carry the method's signals."""
    from workbench.profile import load_profile, save_profile
    from workbench.rundir import RunDir

    run = RunDir(runs_dir / f"{name}-{start:.0f}")
    run.path.mkdir(parents=True)
    (run.path / "checkpoints").mkdir()
    overrides = [f"budget.gpu_hourly_usd={hourly}"]
    if method != "sft":
        overrides.append(f"train.method={method}")
    save_profile(load_profile("demo", overrides), run.profile_path)
    extra = (lambda step: {"signals": preference_signals(method, step, steps)}) if method != "sft" \
        else (lambda step: {})
    write_event(run, "status", start, state="running", message="loading model")
    write_event(run, "estimate", start + 1, peak_bytes=int(20 * GIB), reserved_bytes=int(22 * GIB),
                breakdown={}, trainable_params=1_000_000)
    for step in range(2, steps + 1, 2):
        t = start + 10 + step * 3
        write_event(run, "log", t, step=step, epoch=round(step / steps * 2, 4),
                    loss=round(3.0 / (1 + step / 10), 4), learning_rate=2e-4 * (1 - step / steps),
                    grad_norm=round(1.0 / (1 + step / 20), 3), tokens_per_s=1234.5,
                    gpu_mem_bytes=int(19 * GIB) if gpus else None,
                    gpu_mem_peak_bytes=int(21 * GIB) if gpus else None,
                    eta_s=(steps - step) * 3.0, **extra(step))
        if step % 10 == 0:
            write_event(run, "eval", t + 1, step=step, epoch=step / steps * 2,
                        eval_loss=round(3.2 / (1 + step / 12), 4), **extra(step))
        if gpus and step % 10 == 0:
            write_event(run, "gpu", t + 1, gpus=gpus)
    end = start + 10 + steps * 3 + 5
    if gpus:
        write_event(run, "memory", end - 1, measured_peak_reserved_bytes=int(21 * GIB),
                    measured_peak_allocated_bytes=int(19 * GIB),
                    estimated_reserved_bytes=int(22 * GIB), error_pct=-4.5)
    if state in ("finished", "stopped", "failed"):
        write_event(run, "status", end, state=state, message={"finished": "adapter saved",
                    "stopped": "checkpoint saved", "failed": "out of memory"}[state])
    run.log_path.write_text("".join(f"step {s}/{steps} loss {3.0 / (1 + s / 10):.4f}\n"
                                    for s in range(2, steps + 1, 2)))
    status = dict(state=state, pid=None, step=steps, total_steps=steps,
                  loss=round(3.0 / (1 + steps / 10), 4), eval_loss=0.8, profile=name,
                  created_at=iso(start), started_at=iso(start), ended_at=iso(end),
                  updated_at=iso(end), device="cuda" if gpus else "cpu", run_dir=str(run.path))
    from workbench.rundir import write_json_atomic

    write_json_atomic(run.status_path, status)
    return run


def gpu_dicts(*specs) -> list[dict]:
    return [{"index": i, "name": g["name"], "memory_total": g["total"], "memory_used": g["used"],
             "memory_free": g["total"] - g["used"], "utilization": g["util"],
             "temperature_c": g["temp"], "power_w": round(g["mw"] / 1000, 1),
             "power_limit_w": 700.0} for i, g in enumerate(specs)]


def screen_text(app) -> str:
    """What the terminal shows, as plain text (for asserting on content)."""
    from rich.console import Console

    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True,
                      color_system=None, record=True, legacy_windows=False)
    console.print(app.screen._compositor.render_update(
        full=True, screen_stack=app._background_screens))
    return console.export_text()


# The presets the app tests see, whatever else a user keeps in profiles/.
SHIPPED_PRESETS = ("demo", "llama3.1-8b-qlora", "mistral-7b-lora", "qwen2.5-0.5b-lora",
                   "qwen2.5-7b-qlora", "smollm2-360m-lora")


def fixed_presets(monkeypatch, tmp_path: Path) -> Path:
    """Copies of the shipped presets in tmp_path/repo/profiles, looked up instead of the real
    profiles/ folder (where a user may add their own). repo/assets links to the real assets,
    so the presets' relative paths ("../assets/tiny-model") still resolve."""
    import shutil

    from workbench import profile

    shipped = profile.shipped_profiles_dir()
    repo = tmp_path / "repo"
    (repo / "profiles").mkdir(parents=True)
    (repo / "assets").symlink_to(shipped.parent / "assets", target_is_directory=True)
    for name in SHIPPED_PRESETS:
        shutil.copy2(shipped / f"{name}.toml", repo / "profiles" / f"{name}.toml")
    monkeypatch.setattr(profile, "shipped_profiles_dir", lambda: repo / "profiles")
    return repo / "profiles"


def isolate(monkeypatch, tmp_path, fake_gpus: bool = True) -> None:
    """No user keymap or profiles, only the shipped presets, runs in ./runs, no GPU: the
    same screen everywhere."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORKBENCH_KEYMAP", "no-keymap.toml")  # relative: same text in every snapshot
    monkeypatch.setenv("WORKBENCH_PROFILE_DIR", str(tmp_path / "no-profiles"))
    fixed_presets(monkeypatch, tmp_path)
    if fake_gpus:
        install_fake_nvml(monkeypatch, [])
    (tmp_path / "runs").mkdir()


async def settle(pilot, pause: float = 0.4) -> None:
    """Let timers fire, then wait for every worker and the messages they posted. A worker that
    an exclusive newer one cancelled is part of normal life, not a failure (the plain
    `workers.wait_for_complete()` raises WorkerCancelled for it)."""
    import asyncio

    await pilot.pause(pause)
    await asyncio.gather(*[worker.wait() for worker in list(pilot.app.workers)],
                         return_exceptions=True)
    await pilot.pause(0.1)


async def wait_for(pilot, condition, timeout: float = 30.0) -> None:
    """Poll `condition()` until it holds (a loaded machine may need many rounds); a timeout
    fails with what the screen shows."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for the screen:\n{screen_text(pilot.app)}")
        await pilot.pause(0.05)
    await pilot.pause()


def svg_text(svg: str) -> list[str]:
    """A Textual SVG screenshot as its lines of text (what a snapshot diff should show)."""
    import html
    import re

    rows: dict[float, list[tuple[float, str]]] = {}
    for m in re.finditer(r'<text class="[^"]*" x="([\d.]+)" y="([\d.]+)"[^>]*>(.*?)</text>', svg):
        rows.setdefault(float(m.group(2)), []).append((float(m.group(1)), html.unescape(m.group(3))))
    return ["".join(t for _, t in sorted(cells)).replace("\xa0", " ") for _, cells in sorted(rows.items())]


def drive(steps, size=(100, 30), **app_kwargs) -> None:
    """Run the app on ./runs headless and hand `steps(app, pilot)` the settled app."""
    import asyncio

    from screens.app import WorkbenchApp

    app = WorkbenchApp(runs_dir=Path("runs"), **app_kwargs)

    async def go():
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            await steps(app, pilot)
    asyncio.run(go())
