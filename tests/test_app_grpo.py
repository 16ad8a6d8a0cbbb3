"""The app under GRPO: Configure's Rewards view (the reward functions with their weights and what
they do, `e` opens a function's file in $EDITOR, `t` runs the reward test on the tiny model),
and the Train monitor of a GRPO run (one line per reward function, the latest sampled
completions with their rewards, streamed as the events arrive)."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import stat
import threading
from pathlib import Path

import pytest
from app_helpers import T0, drive, isolate, screen_text, settle, wait_for, write_event

REPO = Path(__file__).resolve().parent.parent
GRPO_DEMO = REPO / "profiles" / "grpo-demo.toml"
REWARD_FILE = str(REPO / "assets" / "demo" / "rewards.py")
GIB = 1024 ** 3
A10G = {"name": "NVIDIA A10G", "free": 22 * GIB, "total": 24 * GIB}
FUNCTIONS = ("rewards.py:french_overlap", "answer:exact")


def sync(test):
    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return run


# ---- Configure: the Rewards view ------------------------------------------------------------


@pytest.fixture
def in_repo(monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WORKBENCH_PROFILE_DIR", str(tmp_path / "user-profiles"))
    monkeypatch.delenv("EDITOR", raising=False)
    monkeypatch.delenv("VISUAL", raising=False)


def configure_app(profile: str = str(GRPO_DEMO)):
    from textual.app import App

    from screens.configure import ConfigureScreen

    class ConfigureApp(App):
        def on_mount(self) -> None:
            from screens.app import WORKBENCH_THEME

            self.register_theme(WORKBENCH_THEME)
            self.theme = WORKBENCH_THEME.name
            self.push_screen(ConfigureScreen(profile, detected_gpu=A10G, count_tokens=False))

    return ConfigureApp()


async def _loaded(pilot) -> None:
    screen = pilot.app.screen
    await wait_for(pilot, lambda: screen.profile is not None and screen.view is not None)
    assert screen.query_one("#cfg-form").has_focus  # arrived on the form: screen keys work


async def _open_rewards(pilot):
    from screens.widgets.configure_rewards import RewardsView

    await _loaded(pilot)
    await pilot.press("f3")
    await pilot.pause()
    screen = pilot.app.screen
    assert screen.has_class("-rewards")
    return screen, screen.query_one(RewardsView)


def _notes(app) -> list[str]:
    return [n.message for n in app._notifications]


@sync
async def test_rewards_view_lists_the_functions_with_weights_and_what_they_do(in_repo):
    from screens.widgets.configure_form import ProfileForm

    app = configure_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await _loaded(pilot)
        screen = app.screen
        form = screen.query_one(ProfileForm)
        # The form names the rewards under the method, with the GRPO settings below it.
        note = form.query_one("#method-rewards")
        assert note.display and str(note.content).startswith(
            "rewards: rewards.py:french_overlap x1, answer:exact x0.5 (f3:")
        text = screen_text(app)
        assert "rewards: rewards.py:french_overlap x1," in text
        assert "group size" in text and "answer len" in text
        assert "f3 Rewards" in text  # a GRPO profile offers the view

        screen, view = await _open_rewards(pilot)
        assert app.focused is view.table  # arrive on the table, not in a field
        assert [r.name for r in view.rows] == list(FUNCTIONS)
        assert [r.weight for r in view.rows] == [1.0, 0.5]
        table = view.table
        assert [table.get_row_at(i)[:2] for i in range(table.row_count)] == [
            ["rewards.py:french_overlap", "1"], ["answer:exact", "0.5"]]
        text = screen_text(app)
        assert not screen.query_one("#cfg-main").display  # the view takes the form's place
        assert "Partial credit: the F1 of the completion's words" in text  # its docstring
        assert f"{REWARD_FILE}:17" in " ".join(text.split())  # where it is, at its line
        assert "1 when the answer (the last answer tag" in text  # the built-in's summary
        assert "e Edit reward" in text and "t Test rewards" in text

        await pilot.press("down")
        assert "built in (workbench/rewards/builtin.py)" in " ".join(screen_text(app).split())
        await pilot.press("escape")  # back to the form
        await pilot.pause()
        assert not screen.has_class("-rewards") and form.has_focus


@sync
async def test_f3_is_for_grpo_and_switching_to_grpo_offers_it(in_repo):
    from screens.widgets.configure_form import ProfileForm

    app = configure_app("demo")
    async with app.run_test(size=(120, 36)) as pilot:
        await _loaded(pilot)
        screen = app.screen
        assert "f3 Rewards" not in screen_text(app)
        await pilot.press("f3")
        await pilot.pause()
        assert not screen.has_class("-rewards")
        assert "group size" not in screen_text(app)

        screen.query_one(ProfileForm).widget("train.method").value = "grpo"
        # the Select's change travels through the form to the screen: messages, not one pause
        await wait_for(pilot, lambda: "group size" in screen_text(app)
                       and "f3 Rewards" in screen_text(app))
        text = screen_text(app)
        assert "rewards: none yet" in text  # the demo names no reward functions
        assert "rewards.functions" in text  # ... and the validator says so
        screen.query_one(ProfileForm).focus()
        await pilot.press("f3")
        await pilot.pause()
        assert screen.has_class("-rewards")
        assert "no reward functions: name them in [rewards] functions" in screen_text(app)
        await pilot.press("t")
        await pilot.pause()
        assert screen._trial_cancel is None  # nothing to test: the profile is not valid


def _editor(tmp_path: Path, name: str = "fake-editor") -> tuple[Path, Path]:
    """An "editor" that writes its arguments to a file and exits."""
    log = tmp_path / "editor.log"
    script = tmp_path / name
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, log


@sync
async def test_e_opens_the_selected_reward_file_in_the_editor(in_repo, monkeypatch, tmp_path):
    script, log = _editor(tmp_path)
    monkeypatch.setenv("EDITOR", str(script))
    app = configure_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen, view = await _open_rewards(pilot)
        await pilot.press("e")
        await pilot.pause()
        assert log.read_text().split("\n")[0] == REWARD_FILE
        assert screen.has_class("-rewards") and app.focused is view.table

        await pilot.press("down", "e")  # a built-in: nothing to open, and it says so
        await pilot.pause()
        assert log.read_text().count("\n") == 1
        assert any("answer:exact is built in" in n for n in _notes(app))


@sync
async def test_e_gives_vim_the_line_and_says_when_there_is_no_editor(in_repo, monkeypatch,
                                                                    tmp_path):
    script, log = _editor(tmp_path, "vim")
    app = configure_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await _open_rewards(pilot)
        await pilot.press("e")  # $EDITOR unset: said, nothing run, nothing crashes
        await pilot.pause()
        assert any(n.startswith("$EDITOR is not set") for n in _notes(app))
        assert not log.exists()

        monkeypatch.setenv("EDITOR", f"{script} -n")  # arguments in $EDITOR are kept
        await pilot.press("e")
        await pilot.pause()
        assert log.read_text().strip() == f"-n +17 {REWARD_FILE}"


@sync
async def test_t_runs_the_reward_test_on_the_tiny_model(in_repo, monkeypatch):
    from screens.widgets.configure_rewards import RewardsView

    said = []
    original = RewardsView.status
    monkeypatch.setattr(RewardsView, "status", lambda self, text: said.append(text)
                        or original(self, text))
    app = configure_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen, view = await _open_rewards(pilot)
        await pilot.press("t")
        await wait_for(pilot, lambda: screen.trial is not None or screen._trial_cancel is None,
                       timeout=180)
        assert screen.trial is not None, (said, _notes(app))
        result = screen.trial
        assert result["functions"] == list(FUNCTIONS) and result["weights"] == [1.0, 0.5]
        assert len(result["groups"]) == 6 and result["samples"] == 4
        assert any(s.startswith("loading the model") for s in said), said
        assert any(s.startswith("sampling ") and "/24 completions" in s for s in said), said
        assert said[-1].startswith("tested: 6 prompts x 4 completions")

        text = " ".join(screen_text(app).split())
        verdict = result["verdict"]
        mark = "✓" if verdict["ok"] else "!"
        assert f"{mark} verdict: {verdict['text'][:60]}" in text
        assert view.query_one("#rewards-verdict").has_class("-ok") == verdict["ok"]
        assert "first steps would see: mean reward" in text
        for flag in result["flags"]:
            assert flag["message"][:50] in text
        # Each prompt, then its completions with every reward and the total.
        assert "completion cut french_overlap answer:exact total" in text
        first = result["groups"][0]
        assert f"▸ {' '.join(first['prompt'].split())}" in text
        assert app.focused is view.query_one("#rewards-result")  # arrows scroll the result

        # The model stays loaded: a second test samples at once (and the same, seeded).
        engine = screen._engine
        assert engine is not None
        await pilot.press("t")
        await wait_for(pilot, lambda: screen._trial_cancel is None, timeout=120)
        assert screen._engine is engine and screen.trial["groups"] == result["groups"]


class _SlowTrial:
    """A reward test that samples one completion every 20 ms until it is cancelled."""

    def __init__(self):
        self.started = threading.Event()
        self.cancels: list = []

    def load(self, profile, device, say):
        say("loading /tiny onto cpu")
        return object()

    def run(self, profile, *, engine, log, progress, cancel, **kwargs):
        from workbench.evaluate.errors import EvaluateError

        self.cancels.append(cancel)
        self.started.set()
        for done in range(1, 10_000):
            if cancel.is_set():
                raise EvaluateError("the reward test was cancelled")
            progress(done, 24)
            cancel.wait(0.02)
        raise AssertionError("never cancelled")


@sync
async def test_t_again_or_leaving_the_screen_cancels_the_test(in_repo, monkeypatch):
    from textual.screen import Screen

    from workbench.evaluate import reward_trial

    fake = _SlowTrial()
    monkeypatch.setattr(reward_trial, "load_trial_engine", fake.load)
    monkeypatch.setattr(reward_trial, "try_rewards", fake.run)
    app = configure_app()
    async with app.run_test(size=(120, 36)) as pilot:
        screen, view = await _open_rewards(pilot)
        await pilot.press("t")
        await wait_for(pilot, lambda: "sampling" in str(view.query_one("#rewards-status").content))
        assert "(t cancels)" in screen_text(app)
        await pilot.press("t")
        await pilot.pause()
        assert fake.cancels[0].is_set() and screen._trial_cancel is None
        assert str(view.query_one("#rewards-status").content) == "cancelled"
        await wait_for(pilot, lambda: not any(w.is_running for w in screen.workers))
        assert screen.trial is None
        assert str(view.query_one("#rewards-status").content) == "cancelled"

        await pilot.press("t")  # again, then away to another screen
        await wait_for(pilot, lambda: len(fake.cancels) == 2)
        await app.push_screen(Screen())
        await pilot.pause()
        assert fake.cancels[1].is_set()
        assert screen._engine is None  # the model is let go as well


# ---- Train: a GRPO run ----------------------------------------------------------------------


def grpo_signals(step: int) -> dict:
    x = step / 10
    return {"reward": round(0.1 + 0.3 * x, 4), "reward_std": round(0.15 - 0.05 * x, 4),
            "rewards/rewards.py:french_overlap/mean": round(0.1 + 0.3 * x, 4),
            "rewards/answer:exact/mean": round(0.2 * x, 4),
            "frac_reward_zero_std": round(0.5 - 0.3 * x, 4),
            "completions/mean_length": round(9 + x, 3),
            "completions/clipped_ratio": round(0.125 * (1 - x), 4)}


def samples_event(step: int) -> list[dict]:
    prompts = ("Translate to French: the phone swims with a bag",
               "Translate to French: the red cat")
    out = []
    for p, prompt in enumerate(prompts):
        for k in range(4):
            overlap = round(0.1 * (k + p) + step / 100, 4)
            out.append({"prompt": prompt, "completion": f"le chat {k} nage avec le sac step {step}",
                        "rewards": {"answer:exact": 1.0 if k == 3 else 0.0,
                                    "rewards.py:french_overlap": overlap},
                        "total": round(overlap + (0.5 if k == 3 else 0.0), 4),
                        "advantage": round(1.5 * (k - 1.5) / 1.5, 4)})
    return out


def make_grpo_run(runs_dir: Path, steps: int = 10, live: bool = False):
    """A GRPO run folder as the runner leaves it (finished), or one still training (`live`),
    written by hand with fixed times."""
    from workbench.profile import load_profile, save_profile
    from workbench.rundir import RunDir

    run = RunDir(runs_dir / f"grpo-{T0:.0f}")
    run.path.mkdir(parents=True)
    save_profile(load_profile(str(GRPO_DEMO), ["budget.gpu_hourly_usd=0"]), run.profile_path)
    write_event(run, "status", T0, state="running", message="loading model")
    for step in range(2, steps + 1, 2):
        t = T0 + 10 + step * 3
        write_event(run, "log", t, step=step, epoch=round(step / 1000, 4),
                    loss=round(-0.1 * step, 4), learning_rate=5e-4, grad_norm=1.2,
                    tokens_per_s=1500.0, gpu_mem_bytes=None, gpu_mem_peak_bytes=None,
                    eta_s=(steps - step) * 3.0, signals=grpo_signals(step))
        write_event(run, "samples", t + 0.1, step=step, samples=samples_event(step))
    if live:
        run.write_status(state="running", pid=os.getpid(), step=steps, total_steps=40)
    else:
        write_event(run, "status", T0 + 10 + steps * 3 + 5, state="finished",
                    message="adapter saved")
    run.log_path.write_text("".join(f"step {s}/{steps}\n" for s in range(2, steps + 1, 2)))
    return run


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    isolate(monkeypatch, tmp_path)


def test_pattern_signals_expand_to_one_line_per_logged_name():
    from screens.widgets.run_view import RunView
    from screens.widgets.signal_plot import charts_for, expand, matches, signal_value
    from workbench.train.methods import METHODS

    logged = set(grpo_signals(2)) | {"rewards/answer:exact/std", "kl"}
    assert expand(("reward", "rewards/*/mean"), logged) == [
        ("reward", "reward", "reward"),
        ("rewards/answer:exact/mean", "answer:exact", "rewards/*/mean"),
        ("rewards/rewards.py:french_overlap/mean", "french_overlap", "rewards/*/mean")]
    assert expand(("rewards/*/mean",), {"reward"}) == []
    assert not matches("rewards/*/mean", "rewards//mean")
    assert not matches("rewards/*/mean", "reward")
    assert signal_value("rewards/x.py:f/mean", 0.12345) == "0.123"
    assert signal_value("frac_reward_zero_std", 0.25) == "25%"
    # Without the run's profile, the signals themselves say GRPO (patterns included).
    assert charts_for(None, set(grpo_signals(2))) == METHODS["grpo"].charts
    view = RunView()
    view.add([{"type": "samples", "time": 1.0, "step": 2, "samples": samples_event(2)},
              {"type": "samples", "time": 2.0, "step": 4, "samples": samples_event(4)},
              {"type": "samples", "time": 3.0, "step": 6, "samples": "junk"}])
    assert view.samples["step"] == 4 and view.samples_seen == 2


def test_a_grpo_run_shows_a_line_per_reward_function_and_its_latest_completions(tmp_path,
                                                                                isolated):
    from screens.widgets.samples_panel import SamplesPanel
    from screens.widgets.signal_plot import SignalPlot

    run = make_grpo_run(tmp_path / "runs")

    async def steps(app, pilot):
        app.open_run(run.path)
        await settle(pilot, 0.6)
        screen = app.screen
        assert screen.method == "grpo"
        plots = {p.chart.title: p for p in screen.query(SignalPlot)}
        per_function = plots["reward per function"]
        assert [label for _, label, _ in per_function.lines()] == ["answer:exact", "french_overlap"]
        assert per_function._train["rewards/answer:exact/mean"][1][-1] == 0.2
        text = screen_text(app)
        # The numbers column: the reward, its spread, each function, the no-signal share...
        assert "reward     0.400   rew std  0.100" in text
        assert "  answer:exact     0.200" in text and "  french_overlap   0.400" in text
        assert "no signal  20%" in text and "length   10.0" in text and "clipped    0%" in text

        # The charts take turns at this size: the third is the reward per function.
        await pilot.press("g", "g")
        await pilot.pause(0.3)
        text = screen_text(app)
        assert "reward per function (3/7, g: next)" in text
        assert "answer:exact" in text and "french_overlap" in text  # the legend: one line each

        panel = screen.query_one(SamplesPanel)
        assert panel.display and panel.region.width > 60
        assert panel.border_title == "latest completions · step 10"
        assert "Translate to French: the phone swims with a bag" in text
        assert "le chat 3 nage avec le sac step 10" in text
        assert "french_overlap" in text and "total" in text and "adv" in text
        assert "1.00" in text and "+1.50" in text and "-1.50" in text  # a total; advantages
        assert "step 10/10" in text  # the log is still there, beside it
        await pilot.press("s")  # the panel takes focus (and scrolls)
        assert app.focused is panel
    drive(steps, size=(120, 36))


def test_the_samples_panel_follows_a_live_run(tmp_path, isolated):
    from screens.widgets.samples_panel import SamplesPanel

    run = make_grpo_run(tmp_path / "runs", steps=4, live=True)

    async def steps(app, pilot):
        app.open_run(run.path)
        await settle(pilot, 0.6)
        panel = app.screen.query_one(SamplesPanel)
        assert panel.border_title == "latest completions · step 4"
        run.append_event("log", step=6, epoch=0.006, loss=-0.5, learning_rate=5e-4,
                         grad_norm=1.0, tokens_per_s=1500.0, gpu_mem_bytes=None,
                         gpu_mem_peak_bytes=None, eta_s=3.0, signals=grpo_signals(6))
        run.append_event("samples", step=6, samples=samples_event(6)[:2])
        await settle(pilot, 1.2)
        assert panel.border_title == "latest completions · step 6"
        text = screen_text(app)
        assert "le chat 1 nage avec le sac step 6" in text
        assert "reward     0.280" in text
    drive(steps, size=(120, 36))


def test_an_sft_run_has_no_samples_panel(tmp_path, isolated):
    from app_helpers import make_finished_run

    from screens.widgets.samples_panel import SamplesPanel

    run = make_finished_run(tmp_path / "runs", "demo")

    async def steps(app, pilot):
        app.open_run(run.path)
        await settle(pilot, 0.6)
        panel = app.screen.query_one(SamplesPanel)
        assert not panel.display and not panel.can_focus
        assert app.focused is not panel and "latest completions" not in screen_text(app)
    drive(steps, size=(120, 36))


def test_samples_events_round_trip_through_the_run_folder(tmp_path):
    """The hand-written events above are what RunDir accepts (EVENT_FIELDS)."""
    from workbench.rundir import RunDir

    run = RunDir.create(tmp_path, "x")
    run.append_event("samples", step=2, samples=samples_event(2))
    events, _ = run.read_events()
    assert events[-1]["samples"] == json.loads(json.dumps(samples_event(2)))
