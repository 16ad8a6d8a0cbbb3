"""The Export screen: run `workbench export RUN --format merged,vllm --json` in a child
process from the app, see the proof result and the vLLM command; a run without an adapter
is a notification with the engine's message."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from app_helpers import isolate, make_finished_run, screen_text, settle


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    isolate(monkeypatch, tmp_path)


def test_export_merged_and_vllm(tmp_path, needs_tiny_model):
    from test_export_support import make_run

    from screens.app import WorkbenchApp

    run = make_run(tmp_path / "runs")
    app = WorkbenchApp(runs_dir=Path("runs"))
    copied = []
    app.copy_to_clipboard = copied.append

    async def go():
        async with app.run_test(size=(160, 48)) as pilot:
            await settle(pilot)
            await pilot.press("6")
            await settle(pilot)
            screen = app.screen
            assert screen.query_one("#export-run").value == str(run.path)
            assert screen.selected_formats() == ["merged", "vllm"]
            await pilot.press("e")
            await settle(pilot)
            assert screen.result and screen.result["ok"], screen.result
            text = screen_text(app)
            assert "proof passed" in text and "greedy tokens identical" in text
            assert "vllm serve" in screen.query_one("#export-commands").text
            assert "merging" in "\n".join(screen.log_lines)
            await pilot.press("v")
            assert copied and copied[-1].startswith("vllm serve")
            assert (run.path / "export" / "vllm").is_dir()
    asyncio.run(go())


def test_a_run_without_adapter_is_a_notification(tmp_path):
    from screens.app import WorkbenchApp

    make_finished_run(tmp_path / "runs", "demo")
    app = WorkbenchApp(runs_dir=Path("runs"))

    async def go():
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            await pilot.press("6")
            await settle(pilot)
            await pilot.press("e")
            await settle(pilot)
            message = str(list(app._notifications)[-1].message)
            assert "has no adapter yet" in message and "Traceback" not in message
            assert "export failed" in screen_text(app)
    asyncio.run(go())


def test_an_existing_export_hint_names_the_force_box(tmp_path):
    import json

    from screens.app import WorkbenchApp
    from workbench.profile import load_profile

    run = make_finished_run(tmp_path / "runs", "demo")
    # An adapter folder as far as the checks before any model loading go, and an old export.
    run.adapter_dir.mkdir()
    model = load_profile(run.profile_path).model.name_or_path
    (run.adapter_dir / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": model, "r": 16}))
    (run.adapter_dir / "adapter_model.safetensors").write_bytes(b"")
    (run.path / "export" / "merged").mkdir(parents=True)
    app = WorkbenchApp(runs_dir=Path("runs"))

    async def go():
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            await pilot.press("6")
            await settle(pilot)
            await pilot.press("e")
            await settle(pilot)
            message = str(list(app._notifications)[-1].message)
            assert "export folder already exists" in message, message
            # the app has a tick box where the command line has a flag
            assert 'hint: tick "force" to replace it' in message and "--force" not in message
            assert "export failed" in screen_text(app)
    asyncio.run(go())


@pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=["80x24", "160x48"])
def test_snapshot_export(snap_compare, tmp_path, size):
    from screens.app import WorkbenchApp

    make_finished_run(tmp_path / "runs", "demo")
    app = WorkbenchApp(runs_dir=Path("runs"))

    async def before(pilot):
        await settle(pilot)
        await pilot.press("6")
        await settle(pilot)
        screen = app.screen
        screen._line("merging (merge_and_unload) and saving safetensors", 3)
        screen._done({"ok": True, "formats": {"merged": {"path": "x"}, "vllm": {
            "path": "y", "commands": {"merged": "vllm serve runs/demo/export/merged "
                                                "--served-model-name demo"}}},
            "proof": {"ok": True, "prompts": 8, "tokens_compared": 145,
                      "max_logit_diff": 1.29e-05, "atol": 0.001, "rtol": 0.0,
                      "dtype": "float32"}})
        await settle(pilot, 0.2)
    assert snap_compare(app, terminal_size=size, run_before=before)


def test_choosing_a_gguf_quantization_ticks_gguf_and_reaches_the_command(tmp_path):
    from screens.app import WorkbenchApp
    from screens.export import GGUF_QUANTS, export_command
    from workbench.export.gguf import QUANTS

    assert GGUF_QUANTS == tuple(QUANTS)  # the screen offers what the export accepts
    make_finished_run(tmp_path / "runs", "demo")
    app = WorkbenchApp(runs_dir=Path("runs"))

    async def go():
        async with app.run_test(size=(100, 30)) as pilot:
            await settle(pilot)
            await pilot.press("6")
            await settle(pilot)
            screen = app.screen
            assert screen.selected_quant() is None and "gguf" not in screen.selected_formats()
            screen.query_one("#export-quant").value = "q4_K_M"
            await settle(pilot)
            assert screen.selected_quant() == "q4_K_M"
            assert screen.selected_formats() == ["merged", "vllm", "gguf"]
            cmd = export_command("runs/demo", screen.selected_formats(), False,
                                 screen.selected_quant())
            assert cmd[cmd.index("--quant") + 1] == "q4_K_M"
    asyncio.run(go())
    # Without gguf among the formats no --quant is passed (the CLI would refuse it).
    assert "--quant" not in export_command("runs/demo", ["merged"], False, "q8_0")
