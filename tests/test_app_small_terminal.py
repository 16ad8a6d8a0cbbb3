"""Every screen readable at 80x24 (issue 26, item 9, and the appendix's Compare ETA and Export
hint): what a line says is on the screen whole (wrapped where needed), never cut at the edge;
Compare's three answers keep their rows side by side."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app_helpers import drive, isolate, make_finished_run, screen_text, settle, wait_for

SIZE = (80, 24)


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    isolate(monkeypatch, tmp_path)
    make_finished_run(tmp_path / "runs", "demo")
    monkeypatch.setattr("workbench.estimate.cli.count_dataset_tokens", lambda p: (None, "test"))


def region_lines(app, widget) -> list[str]:
    """The screen's rows cropped to a widget's content (inside its border and padding)."""
    r = widget.content_region
    lines = screen_text(app).splitlines()
    return [line[r.x:r.x + r.width] for line in lines[r.y:r.y + r.height]]


def squeezed(text: str) -> str:
    """Without any whitespace: a wrapped (or folded) line reads as one."""
    return re.sub(r"\s+", "", text)


def shows(app, widget, text: str) -> bool:
    return squeezed(text) in squeezed("".join(region_lines(app, widget)))


class _Delta:
    def __init__(self, system, prompt_index, text):
        self.system, self.prompt_index, self.text = system, prompt_index, text


# ---- Compare ---------------------------------------------------------------------------------


def test_compare_status_line_is_whole_and_the_eta_is_not_doubled():
    async def steps(app, pilot):
        await pilot.press("5")
        await settle(pilot)
        screen = app.screen
        status = screen.query_one("#compare-status")
        # What the report's progress says (progress_text), while the clock runs.
        what = "evaluating: fine-tuned answers 60/180 (33%), ETA 1m20s"
        screen._start_busy("report", what)
        screen._since -= 64
        screen._show_busy()
        await pilot.pause()
        assert shows(app, status, what), region_lines(app, status)
        text = " ".join(region_lines(app, status))
        assert "1m04s so far" in text and "^c" in text, text
        assert not re.search(r"ETA \S+ \d", " ".join(text.split())), text  # was "ETA 1m20s 64s"
        screen._end_busy("loaded demo-1795852800 on cpu; ^g generates")
        await pilot.pause()
        assert shows(app, status, "loaded demo-1795852800 on cpu; ^g generates")
    drive(steps, size=SIZE)


def test_compare_answers_line_up_and_scroll_together():
    long = " ".join(["une réponse longue qui ne finit pas"] * 6)

    async def steps(app, pilot):
        await pilot.press("5")
        await settle(pilot)
        screen = app.screen
        prompts = ["First: the cat", "Second: the dog", "Third: the bird"]
        screen._begin(prompts, True)
        screen._add([_Delta("base", 0, long), _Delta("few-shot", 0, "le chat"),
                     _Delta("fine-tuned", 0, "le chat"),
                     _Delta("base", 1, "le chien"), _Delta("few-shot", 1, long + " " + long),
                     _Delta("fine-tuned", 1, "le chien"),
                     _Delta("base", 2, "l'oiseau"), _Delta("few-shot", 2, "l'oiseau"),
                     _Delta("fine-tuned", 2, "l'oiseau")])
        await settle(pilot, 0.2)
        columns = [screen.query_one(f"#col-{name}") for name in ("base", "few-shot", "fine-tuned")]
        for column in columns:
            column.scroll_home(animate=False)
        await pilot.pause()

        def row_of(column, needle):
            for y, line in enumerate(region_lines(app, column)):
                if needle in line:
                    return y
            return None

        second = [row_of(c, "2. Second") for c in columns]
        assert second[0] is not None and len(set(second)) == 1, second
        # Scrolling one column scrolls the three: the rows stay side by side.
        columns[1].scroll_to(y=columns[1].max_scroll_y, animate=False)
        await pilot.pause(0.2)
        assert columns[1].scroll_y > 0
        assert [c.scroll_y for c in columns] == [columns[1].scroll_y] * 3
        third = [row_of(c, "3. Third") for c in columns]
        assert third[0] is not None and len(set(third)) == 1, third
    drive(steps, size=SIZE)


# ---- Export ----------------------------------------------------------------------------------


def test_export_progress_lines_and_status_are_whole():
    line = ("converting the merged model to GGUF with llama.cpp's convert_hf_to_gguf.py "
            "(runs/demo-1795852800/export/merged -> "
            "runs/demo-1795852800/export/gguf/model-f16.gguf)")

    async def steps(app, pilot):
        await pilot.press("6")
        await settle(pilot)
        screen = app.screen
        screen._line(line, 3)
        await settle(pilot, 0.2)
        assert shows(app, screen.query_one("#export-log"), line), screen_text(app)
        screen._done({"ok": True, "formats": {f: {"path": f} for f in
                                              ("merged", "ollama", "vllm", "bnb4", "gguf")},
                      "proof": None})
        await settle(pilot, 0.2)
        status = screen.query_one("#export-status")
        done = ("done: merged -> export/merged, ollama -> export/ollama, vllm -> export/vllm, "
                "bnb4 -> export/bnb4, gguf -> export/gguf")
        assert shows(app, status, done), region_lines(app, status)
    drive(steps, size=SIZE)


def test_export_hint_keeps_its_brackets():
    """`pip install '.[gguf]'` in an error's hint reached the screen as `pip install '.'`."""
    from textual.content import Content

    async def steps(app, pilot):
        await pilot.press("6")
        await settle(pilot)
        app.screen._done({"ok": False, "error": "llama.cpp's converter is not installed",
                          "hint": "pip install '.[gguf]' (or pip install gguf)"})
        await settle(pilot, 0.3)
        note = list(app._notifications)[-1]
        # What the toast draws (textual.widgets._toast.Toast.render).
        shown = (Content.from_markup(note.message) if note.markup else Content(note.message)).plain
        assert "pip install '.[gguf]'" in shown, shown
    drive(steps, size=(120, 30))


# ---- Data ------------------------------------------------------------------------------------


def test_data_footer_shows_every_key_it_offers():
    from textual.widgets import Footer

    async def steps(app, pilot):
        await pilot.press("2")
        await settle(pilot)
        footer = app.screen.query_one(Footer)
        text = " ".join(region_lines(app, footer))
        for key, label in (("^o", "Open"), ("c", "Clean"), ("f", "Filter"), ("x", "Cancel"),
                           ("s", "Split+save"), ("?", "Help"), ("b", "Back"), ("q", "Quit")):
            assert f"{key} {label}" in text, (key, label, text)
    drive(steps, size=SIZE)


# ---- Configure -------------------------------------------------------------------------------


def test_configure_long_values_are_readable(tmp_path):
    from screens.widgets.configure_estimate import EstimatePanel
    from screens.widgets.configure_form import ProfileForm

    async def steps(app, pilot):
        await pilot.press("3")
        await wait_for(pilot, lambda: getattr(app.screen, "view", None) is not None)
        screen = app.screen
        form = screen.query_one(ProfileForm)
        model = form.widget("model.name_or_path").value
        assert len(model) > 40  # the tmp folder's absolute path: longer than the field
        await pilot.pause(0.2)
        assert shows(app, form, model), region_lines(app, form)
        # The estimate's legend: a narrow panel shortens a term's name, never its number.
        panel = screen.query_one(EstimatePanel)
        legend = [line for line in region_lines(app, panel) if "■" in line]
        assert legend and all(re.search(r"\d+\.\d\d GiB\s*$", line) for line in legend), legend
    drive(steps, size=SIZE)


def test_configure_legend_of_a_big_model_keeps_its_numbers():
    from screens.widgets.configure_estimate import EstimatePanel
    from screens.widgets.configure_form import ProfileForm

    async def steps(app, pilot):
        await pilot.press("3")
        await wait_for(pilot, lambda: getattr(app.screen, "view", None) is not None)
        screen = app.screen
        screen.query_one("#cfg-profile").value = "qwen2.5-0.5b-lora"
        screen.load("qwen2.5-0.5b-lora")
        await wait_for(pilot, lambda: screen.profile is not None
                       and screen.profile.name == "qwen2.5-0.5b-lora" and screen.view is not None
                       and screen.arch_for == "Qwen/Qwen2.5-0.5B-Instruct")
        screen.query_one(ProfileForm).widget("budget.gpu").value = "a10g"
        await pilot.pause(0.3)
        panel = screen.query_one(EstimatePanel)
        legend = [line for line in region_lines(app, panel) if "■" in line]
        assert len(legend) >= 5, region_lines(app, panel)
        assert all(re.search(r"\d+\.\d\d GiB\s*$", line) for line in legend), legend
    drive(steps, size=SIZE)


# ---- Configure's time note agrees with `workbench estimate` (appendix) -----------------------


def test_configure_counts_the_steps_workbench_estimate_counts(monkeypatch):
    """The demo once showed 64 steps where its run took 272: both now count the run's packs."""
    import json
    import subprocess
    import sys

    from textual.app import App

    from screens.configure import ConfigureScreen

    monkeypatch.undo()  # the real token count (the tiny tokenizer, 540 rows)
    repo = Path(__file__).resolve().parent.parent
    monkeypatch.chdir(repo)
    out = subprocess.run([sys.executable, "-m", "workbench", "estimate", "demo", "--gpu", "a10g",
                          "--json"], check=False, capture_output=True, text=True, cwd=repo,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    steps_cli = json.loads(out.stdout)["time"]["steps"]

    class One(App):
        def on_mount(self):
            self.push_screen(ConfigureScreen("demo", detected_gpu={
                "name": "NVIDIA A10G", "free": 22 * 1024 ** 3, "total": 24 * 1024 ** 3}))

    import asyncio

    async def go():
        app = One()
        async with app.run_test(size=(120, 40)) as pilot:
            screen = app.screen
            await wait_for(pilot, lambda: screen.view is not None and screen.view.times
                           and screen.view.times[0][1].steps is not None, timeout=120)
            steps = screen.view.times[0][1].steps
            assert steps == steps_cli, (steps, steps_cli)
            assert f"{steps:,} steps" in screen_text(app)
    asyncio.run(go())


# ---- The run's memory line names what the app shows (appendix) -------------------------------


def test_the_console_memory_line_says_which_figure_the_app_shows():
    """`run demo` printed "704.1 MiB peak on a GPU" while the Train screen showed "memory est
    0.1 GiB": the line now says the peak counts the CUDA context and which figure is the app's."""
    import io

    from workbench.pipeline.console import ProgressPrinter

    out = io.StringIO()
    ProgressPrinter(stream=out, live=False).handle(
        {"type": "estimate", "peak_bytes": 738_300_000, "reserved_bytes": 96_500_000})
    line = out.getvalue()
    assert "704.1 MiB peak with the CUDA context" in line, line
    assert "92.0 MiB of it reserved by torch" in line and '"memory est"' in line, line
