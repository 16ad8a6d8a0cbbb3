"""The Configure screen driven by Pilot: load a profile, edit it with a live estimate, see a
validation message, apply a remedy, save as and reload; SVG snapshots at 80x24 and 160x48."""

from __future__ import annotations

import asyncio
import functools
import os
from pathlib import Path

import pytest
from textual.app import App

from app_helpers import screen_text, wait_for
from screens.configure import ConfigureScreen
from screens.widgets.configure_form import ProfileForm

REPO = Path(__file__).resolve().parent.parent
GIB = 1024 ** 3
A10G = {"name": "NVIDIA A10G", "free": 22 * GIB, "total": 24 * GIB}  # fixed: no NVML in tests


def sync(test):
    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return run


class ConfigureApp(App):
    def __init__(self, screen_factory):
        super().__init__()
        self.screen_factory = screen_factory

    def on_mount(self) -> None:
        try:
            from screens.app import WORKBENCH_THEME

            self.register_theme(WORKBENCH_THEME)
            self.theme = WORKBENCH_THEME.name
        except ImportError:
            pass
        self.push_screen(self.screen_factory())


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WORKBENCH_PROFILE_DIR", str(tmp_path / "user-profiles"))


def make(profile: str = "demo", **kwargs) -> ConfigureApp:
    kwargs.setdefault("detected_gpu", A10G)
    kwargs.setdefault("count_tokens", False)
    return ConfigureApp(lambda: ConfigureScreen(profile, **kwargs))


async def retype(pilot, text: str) -> None:
    """Replace the focused input's text by keyboard."""
    await pilot.press("ctrl+a", "ctrl+k", *text)


@sync
async def test_edit_validate_and_save_as(tmp_path):
    from workbench.profile import load_profile

    app = make("demo")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.view is not None)
        form = screen.query_one(ProfileForm)
        # Arrived on the form's row cursor (the focus rule); Enter edits LoRA r, selected.
        assert form.has_focus and form.current == "lora.r"
        before = screen.view.estimate

        await pilot.press("enter", "6", "4")
        await pilot.pause()
        assert form.widget("lora.r").value == "64"  # replaced, not appended
        await pilot.pause()
        after_r = screen.view.estimate
        assert after_r.settings.r == 64
        assert after_r.trainable_params == 4 * before.trainable_params
        assert "trainable" in screen_text(app)

        form.widget("train.batch_size").focus()
        await retype(pilot, "32")
        await pilot.pause()
        assert screen.view.estimate.settings.batch == 32
        assert screen.view.estimate.peak_bytes > after_r.peak_bytes

        # Invalid: the validator's message under the field; the estimate keeps the last valid.
        await retype(pilot, "lots")
        await pilot.pause()
        assert "train.batch_size" in screen.issues
        assert "integer" in screen.issues["train.batch_size"]
        assert screen.issues["train.batch_size"] in screen_text(app)
        assert screen.view.estimate.settings.batch == 32
        await retype(pilot, "8")
        await pilot.pause()
        assert not screen.issues

        # Save as a path in tmp_path, reload: the same profile.
        target = tmp_path / "mine.toml"
        await pilot.press("f2")
        await retype(pilot, str(target))
        await pilot.press("enter")
        await pilot.pause()
        assert target.is_file()
        reloaded = load_profile(target)
        assert reloaded == screen.profile
        assert reloaded.lora.r == 64 and reloaded.train.batch_size == 8


@sync
async def test_remedy_applies_with_one_key():
    # An 8B QLoRA recipe priced against a 16 GB T4 does not fit: remedies are offered.
    app = make("llama3.1-8b-qlora")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.view is not None)
        form = screen.query_one(ProfileForm)
        form.widget("budget.gpu").value = "t4"
        await wait_for(pilot, lambda: screen.view.verdict == "does not fit")
        assert screen.view.remedies
        first = screen.view.remedies[0]
        peak = screen.view.estimate.peak_bytes
        screen.focus_home()  # off any field: m is a screen key (alt+N never reached tmux)
        await pilot.press("m", "enter")
        await pilot.pause()
        assert screen.view.estimate.peak_bytes == first.estimate.peak_bytes < peak
        assert screen.view.estimate.settings == first.settings


@sync
async def test_bad_profile_name_is_a_notification():
    app = make("no-such-profile")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app._notifications)
        note = list(app._notifications)[0]
        assert "no profile named" in note.message and note.severity == "error"


# ---------------------------------------------------------------------------------------------
# Snapshots: a hub-id model (no absolute paths on screen), a fixed GPU, no token counting.


def _snapshot_app() -> ConfigureApp:
    return make("qwen2.5-0.5b-lora", detected_gpu=A10G)


async def _estimated(pilot) -> None:
    from textual.widgets import Input

    await wait_for(pilot, lambda: pilot.app.screen.view is not None)
    # A blinking cursor in the focused field made the snapshots depend on when they were
    # taken (the 160x48 one failed now and then): the cursor stays on.
    for box in pilot.app.screen.query(Input):
        box.cursor_blink = False


async def _does_not_fit(pilot) -> None:
    await _estimated(pilot)
    pilot.app.screen.query_one(ProfileForm).widget("budget.gpu").value = "t4"
    form = pilot.app.screen.query_one(ProfileForm)
    form.widget("train.batch_size").value = "16"
    form.widget("train.max_seq_len").value = "4096"
    await pilot.pause()


def test_snapshot_configure_80x24(snap_compare):
    assert snap_compare(_snapshot_app(), terminal_size=(80, 24), run_before=_estimated)


def test_snapshot_configure_160x48(snap_compare):
    assert snap_compare(_snapshot_app(), terminal_size=(160, 48), run_before=_does_not_fit)


@pytest.mark.skipif(not os.environ.get("WORKBENCH_SCREENSHOTS"),
                    reason="writes assets/screenshots/configure.svg; set WORKBENCH_SCREENSHOTS=1")
@sync
async def test_readme_screenshot():
    app = _snapshot_app()
    async with app.run_test(size=(120, 32)) as pilot:
        await _does_not_fit(pilot)
        (REPO / "assets" / "screenshots").mkdir(parents=True, exist_ok=True)
        app.save_screenshot("configure.svg", path=str(REPO / "assets" / "screenshots"))


# ---------------------------------------------------------------------------------------------
# Keys in the whole app (issue 11): a screen key never edits a field, Esc leaves one, and a
# value a key press changed is marked.


def _in_app(monkeypatch, tmp_path):
    """The real app on a fixed profile folder, without counting the dataset's tokens (it
    loads a tokenizer; nothing here needs the time estimate)."""
    from app_helpers import isolate

    isolate(monkeypatch, tmp_path)
    monkeypatch.setattr("workbench.estimate.cli.count_dataset_tokens", lambda p: (None, "test"))


async def _on_configure(app, pilot):
    await pilot.press("3")
    await wait_for(pilot, lambda: getattr(app.screen, "view", None) is not None)
    return app.screen.query_one(ProfileForm)


def test_screen_keys_in_a_field_are_text_and_esc_leaves_it(monkeypatch, tmp_path):
    from textual.widgets import Input, Select

    from app_helpers import drive

    _in_app(monkeypatch, tmp_path)

    async def steps(app, pilot):
        form = await _on_configure(app, pilot)
        r = form.widget("lora.r")
        assert form.has_focus and r.value == "16"  # arrived on the form, not in a field
        await pilot.press("enter", "5")  # in LoRA r (selected), 5 is text, not Compare...
        await pilot.pause()
        assert app.current_mode == "configure" and r.value == "5"
        text = screen_text(app)  # ...and shown as a change, with the way out
        assert "LoRA r*" in text and "1 changed" in text and "esc Leave field" in text
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.focused, (Input, Select))
        assert "b Back" in screen_text(app) and "esc Leave field" not in screen_text(app)
        await pilot.press("4")
        await pilot.pause(0.2)
        assert app.current_mode == "train" and r.value == "5"
        await pilot.press("3")  # back on Configure: not in a field, so 1 switches again
        await pilot.pause(0.2)
        assert app.current_mode == "configure"
        assert not isinstance(app.focused, (Input, Select))
        await pilot.press("1")
        await pilot.pause(0.2)
        assert app.current_mode == "runs" and r.value == "5"
    drive(steps, size=(80, 24))


@sync
async def test_a_changed_field_is_marked_until_it_is_saved(tmp_path):
    app = make("demo")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.view is not None)
        form = screen.query_one(ProfileForm)
        row = form.query_one("#f-lora-r-row")
        assert "LoRA r*" not in screen_text(app) and not row.has_class("-modified")
        await pilot.press("enter")  # into LoRA r, the form's first row cursor
        await retype(pilot, "32")
        await pilot.pause()
        assert form.modified() == ["lora.r"] and row.has_class("-modified")
        assert "LoRA r*" in screen_text(app) and "1 changed" in screen_text(app)
        await retype(pilot, "16")  # the profile's value again: no longer a change
        await pilot.pause()
        assert form.modified() == [] and "LoRA r*" not in screen_text(app)
        await retype(pilot, "32")
        await pilot.press("f2")
        await retype(pilot, str(tmp_path / "mine.toml"))
        await pilot.press("enter")
        await pilot.pause()
        assert (tmp_path / "mine.toml").is_file()
        assert form.modified() == [] and "LoRA r*" not in screen_text(app)


def test_help_names_every_key_with_its_id_and_the_ids_remap(monkeypatch, tmp_path):
    """Text-editing keys too: help shows "input.home" and a keymap line moves the key."""
    from app_helpers import drive

    _in_app(monkeypatch, tmp_path)
    keymap = tmp_path / "keymap.toml"
    keymap.write_text('"input.home" = "ctrl+b"\n')

    async def steps(app, pilot):
        form = await _on_configure(app, pilot)
        await pilot.press("enter")  # into LoRA r
        assert form.widget("lora.r").has_focus
        rows = app.binding_rows(app.screen)
        assert rows and all(binding_id for _, _, binding_id in rows), \
            [row for row in rows if not row[2]]
        ids = {binding_id for _, _, binding_id in rows}
        assert {"input.home", "input.delete_left", "input.cursor_left_select",
                "screen.focus_next", "app.quit_anywhere"} <= ids
        await pilot.press("f1")
        await pilot.pause(0.2)
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("end")  # the field's own keys come last
        await pilot.pause(0.2)
        assert "input." in screen_text(app)
        await pilot.press("escape")
        await pilot.press("ctrl+b", "9")  # ctrl+b is "Go to start" now
        await pilot.pause()
        assert form.widget("lora.r").value == "916"
        form.widget("lora.method").focus()  # a choice list: its keys have ids as well
        await pilot.pause()
        assert all(binding_id for _, _, binding_id in app.binding_rows(app.screen))
    drive(steps, size=(100, 40), keymap_file=keymap)


@sync
async def test_ctrl_t_traces_the_step_and_an_edit_falls_back_to_the_rule():
    app = make("demo")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.view is not None)
        analytic = screen.view.estimate
        assert "ctrl+t traces the step" in screen_text(app)
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: screen.traced is not None, timeout=120)
        settings, traced = screen.traced
        replayed = screen.view.estimate
        assert replayed.breakdown["allocator reserve"] == traced.reserve
        assert replayed.reserved_bytes == traced.peak_reserved  # the headline is the trace's
        assert replayed.settings == settings == analytic.settings
        assert "from the traced step" in screen_text(app)
        # another rank is another step: the analytic reserve again, until the next ctrl+t
        screen.query_one(ProfileForm).widget("lora.r").value = "8"
        # the change travels as messages (field, form, screen): awaited, not one pause
        await wait_for(pilot, lambda: screen.view.estimate.settings.r == 8)
        assert "from the traced step" not in " ".join(screen.view.notes)


@sync
async def test_the_time_counts_the_data_of_the_profile_shown():
    """The demo counts 248 steps (its rows packed), as its run takes; another length is counted again, and a
    count that arrives for settings the form has left is dropped, not shown."""
    app = make("demo", count_tokens=True)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.data_count is not None, timeout=60)
        await pilot.pause()
        (label, time), = [t for t in screen.view.times if t[0].startswith("detected")]
        assert time.steps == 248 and "540 rows" in time.plan
        demo = (screen.counted_for, screen.data_count)
        screen.query_one(ProfileForm).widget("train.max_seq_len").value = "16"
        await wait_for(pilot, lambda: screen.counted_for != demo[0])
        await wait_for(pilot, lambda: screen.data_count is not None, timeout=60)
        assert max(screen.data_count.lengths) <= 16 < max(demo[1].lengths)
        screen._tokens_counted(demo[0], demo[1], "")  # a late answer for the old settings
        assert max(screen.data_count.lengths) <= 16


@sync
async def test_data_that_cannot_be_counted_says_why(monkeypatch):
    monkeypatch.setattr("workbench.estimate.cli.count_dataset_tokens",
                        lambda p: (None, "not counted (OSError: no tokenizer here)"))
    app = make("demo", count_tokens=True)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.data_why != "", timeout=60)
        await pilot.pause()
        assert any("data was not counted (OSError: no tokenizer here)" in n
                   for n in screen.view.notes)


# ---------------------------------------------------------------------------------------------
# The training method: chosen in the form, its summary and data under it, the [preference]
# keys it reads shown (the others hidden), the estimate following it.


def _shown(form, key: str) -> bool:
    return form.query_one("#f-" + key.replace(".", "-") + "-row").display


def _note(form, which: str) -> str:
    """The text under the method's choice ("summary" or "data"), as one line: it wraps on
    screen, beside the estimate panel."""
    widget = form.query_one(f"#method-{which}")
    return " ".join(str(widget.content).split()) if widget.display else ""


@sync
async def test_choosing_dpo_shows_its_summary_and_preference_settings(tmp_path):
    from workbench.profile import load_profile
    from workbench.train.methods import METHODS

    app = make("demo")
    async with app.run_test(size=(120, 48)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.view is not None)
        form = screen.query_one(ProfileForm)
        assert form.method == "sft"
        assert not any(_shown(form, f"preference.{k}") for k in ("beta", "loss", "gamma"))
        assert "Supervised fine-tuning" in screen_text(app)
        sft_peak = screen.view.estimate.peak_bytes

        form.widget("train.method").value = "dpo"
        await wait_for(pilot, lambda: screen.profile.train.method == "dpo")
        summary = _note(form, "summary")
        assert "prefer the chosen answer over the rejected one" in summary
        assert "trains on pairs: a prompt, a chosen and a rejected answer" in summary
        assert "DPO: prefer the chosen" in screen_text(app)
        text = screen_text(app)
        for key in METHODS["dpo"].settings:
            assert _shown(form, key), key
        for key in ("preference.gamma", "preference.desirable_weight"):
            assert not _shown(form, key), key  # DPO does not read them
        assert "beta" in text and "smoothing" in text and "gamma" not in text
        # The estimate follows the method: DPO runs the frozen reference too.
        assert screen.view.estimate.settings.train_method == "dpo"
        assert screen.view.estimate.peak_bytes > sft_peak
        # The demo's data is conversations: said where the method is chosen.
        await wait_for(pilot, lambda: screen.data_is_preference is False)
        assert _note(form, "data") == "! this data is conversations: DPO needs preference rows"
        assert "! this data is conversations" in screen_text(app)

        form.widget("preference.beta").focus()
        await retype(pilot, "0.2")
        form.widget("train.method").value = "simpo"  # SimPO reads gamma, not loss
        await wait_for(pilot, lambda: _shown(form, "preference.gamma")
                       and not _shown(form, "preference.loss"))
        assert "SimPO" in screen_text(app)

        target = tmp_path / "simpo.toml"
        await pilot.press("f2")
        await retype(pilot, str(target))
        await pilot.press("enter")
        await pilot.pause()
        saved = load_profile(target)
        assert saved.train.method == "simpo" and saved.preference.beta == 0.2


@sync
async def test_preference_data_under_sft_is_pointed_out():
    app = make("demo")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.view is not None)
        form = screen.query_one(ProfileForm)
        pairs = str(REPO / "assets" / "demo" / "translate_en_fr_pairs.jsonl")
        screen.base["data"]["train"] = pairs  # the form has no data field: as a loaded profile
        screen.revalidate()
        await wait_for(pilot, lambda: screen.data_is_preference is True)
        assert _note(form, "data").startswith("! this data is preference rows: SFT needs conversations")
        assert "! this data is preference rows" in screen_text(app)
        form.widget("train.method").value = "dpo"
        await wait_for(pilot, lambda: _note(form, "data") == "")
        assert "this data is" not in screen_text(app)


async def _dpo_chosen(pilot) -> None:
    await _estimated(pilot)
    screen = pilot.app.screen
    screen.query_one(ProfileForm).widget("train.method").value = "dpo"
    await wait_for(pilot, lambda: screen.data_is_preference is not None)
    await pilot.pause()


def test_snapshot_configure_dpo_120x36(snap_compare):
    assert snap_compare(_snapshot_app(), terminal_size=(120, 36), run_before=_dpo_chosen)
