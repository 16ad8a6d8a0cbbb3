"""Configure's keys that must work in every terminal (issue 26, items 6 and 8): the memory
remedies are applied with keys that arrive over SSH and tmux (no alt), a remedy that would make
the profile invalid says what else must change, Save as never proposes a name a shipped preset
shadows, and quitting with unsaved changes asks first."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

import pytest
from textual.app import App
from textual.binding import Binding

from app_helpers import screen_text, wait_for
from screens.configure import ConfigureScreen
from screens.widgets.configure_form import ProfileForm

REPO = Path(__file__).resolve().parent.parent
GIB = 1024 ** 3
A10G = {"name": "NVIDIA A10G", "free": 22 * GIB, "total": 24 * GIB}
# Keys a terminal may never deliver, or that tmux / screen / the terminal itself take.
UNDELIVERABLE = ("alt+", "meta+", "super+", "ctrl+b", "ctrl+a", "ctrl+z", "ctrl+1", "ctrl+2",
                 "ctrl+3", "ctrl+4", "ctrl+5", "ctrl+6", "f10", "f11")


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
        self.push_screen(self.screen_factory())


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch, tmp_path):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("WORKBENCH_PROFILE_DIR", str(tmp_path / "user-profiles"))


def make(profile: str | Path = "demo", **kwargs) -> ConfigureApp:
    kwargs.setdefault("detected_gpu", A10G)
    kwargs.setdefault("count_tokens", False)
    return ConfigureApp(lambda: ConfigureScreen(profile, **kwargs))


def _keys(cls) -> list[str]:
    """The keys of the screen's own bindings (Textual's copy keys, e.g. super+c, are no
    screen key)."""
    keys = []
    for base in cls.__mro__:
        for b in Binding.make_bindings(base.__dict__.get("BINDINGS", [])):
            if (b.id or "").startswith("configure."):
                keys += [k.strip() for k in b.key.split(",")]
    return keys


def test_no_configure_key_needs_alt_or_a_key_terminals_take():
    from screens.widgets.configure_estimate import EstimatePanel, RemedyList

    keys = _keys(ConfigureScreen) + _keys(EstimatePanel) + _keys(RemedyList)
    bad = [k for k in keys if k.startswith(UNDELIVERABLE) or k in UNDELIVERABLE]
    assert not bad, bad
    assert "m" in _keys(ConfigureScreen)  # the remedies: a plain key, outside the fields


async def _does_not_fit(pilot, gpu: str = "t4"):
    screen = pilot.app.screen
    await wait_for(pilot, lambda: screen.view is not None)
    screen.query_one(ProfileForm).widget("budget.gpu").value = gpu
    await wait_for(pilot, lambda: screen.view is not None and screen.view.verdict == "does not fit")
    return screen


@sync
async def test_m_then_enter_applies_a_remedy_and_the_panel_names_the_keys():
    app = make("llama3.1-8b-qlora")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _does_not_fit(pilot)
        assert screen.view.remedies
        text = screen_text(app)
        assert "alt+" not in text and "m chooses a remedy" in text, text
        first = screen.view.remedies[0]
        peak = screen.view.estimate.peak_bytes
        screen.focus_home()  # the form, as the screen is arrived on: no field being edited
        await pilot.pause()
        await pilot.press("m")
        await pilot.pause()
        assert type(app.focused).__name__ == "RemedyList"
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.view.estimate.settings == first.settings)
        assert screen.view.estimate.peak_bytes == first.estimate.peak_bytes < peak
        assert isinstance(app.focused, ProfileForm)  # back on the form, where 1-6 switch again


@sync
async def test_down_picks_the_second_remedy_and_esc_goes_back_to_the_form():
    app = make("llama3.1-8b-qlora")
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await _does_not_fit(pilot)
        assert len(screen.view.remedies) >= 2
        second = screen.view.remedies[1]
        screen.focus_home()
        await pilot.press("m", "escape")
        await pilot.pause()
        assert isinstance(app.focused, ProfileForm)
        await pilot.press("m", "down", "enter")
        await wait_for(pilot, lambda: screen.view.estimate.settings == second.settings)


@sync
async def test_m_without_remedies_says_the_settings_fit():
    app = make("demo")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.view is not None)
        screen.focus_home()
        await pilot.press("m")
        await pilot.pause()
        assert isinstance(app.focused, ProfileForm)
        assert any("fit" in str(n.message) for n in app._notifications)


@sync
async def test_a_remedy_that_would_make_the_profile_invalid_says_what_else_must_change(tmp_path):
    from workbench.profile import load_profile, save_profile

    # A LoRA profile that trains on the CPU, priced against a T4: QLoRA would fit the T4 but
    # needs a CUDA GPU, so it cannot simply be applied.
    path = tmp_path / "cpu-mistral.toml"
    save_profile(load_profile("mistral-7b-lora", ["train.device=cpu", "budget.gpu=t4"]), path)
    app = make(path)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.view is not None and screen.view.remedies)
        names = [r.change for r in screen.view.remedies]
        qlora = next(i for i, name in enumerate(names) if name.startswith("QLoRA"))
        problem = screen.view.remedy_problems[qlora]
        assert "train.device" in problem, problem
        assert not any(screen.view.remedy_problems[i] for i in range(len(names)) if i != qlora)
        text = " ".join(screen_text(app).split())
        assert "train.device" in text  # what else must change, next to the remedy
        form = screen.query_one(ProfileForm)
        screen.action_remedy(qlora + 1)  # the palette's way in: refused too, with the reason
        await pilot.pause()
        assert form.widget("lora.method").value == "lora" and not screen.issues
        assert "train.device" in str(list(app._notifications)[-1].message)


# ---- Save as: never a name a shipped preset shadows ------------------------------------------


@sync
async def test_save_as_a_shipped_preset_proposes_a_new_name(tmp_path):
    from workbench.profile import load_profile

    user = tmp_path / "user-profiles"
    app = make("demo")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.view is not None)
        await pilot.press("f2")
        await pilot.pause()
        box = screen.query_one("#cfg-save-as")
        assert Path(box.value) == user / "my-demo.toml", box.value
        await pilot.press("enter")
        await pilot.pause()
        saved = user / "my-demo.toml"
        assert saved.is_file() and not (user / "demo.toml").exists()
        # The copy is named after its file, so `workbench run my-demo` runs it, as my-demo.
        assert load_profile("my-demo").name == "my-demo"
        assert screen.query_one(ProfileForm).modified() == []


@sync
async def test_ctrl_s_on_a_shipped_preset_asks_for_a_new_name_instead_of_a_hidden_copy(tmp_path):
    user = tmp_path / "user-profiles"
    app = make("demo")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.view is not None)
        screen.query_one(ProfileForm).widget("lora.r").value = "32"
        await pilot.pause()
        screen.focus_home()
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert not (user / "demo.toml").exists()
        box = screen.query_one("#cfg-save-as")
        assert box.has_class("-shown") and Path(box.value).name == "my-demo.toml"
        assert "shipped preset" in " ".join(screen_text(app).split())


@sync
async def test_saving_under_a_shadowed_name_warns(tmp_path):
    user = tmp_path / "user-profiles"
    app = make("demo")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.view is not None)
        screen.save_to(user / "demo.toml")  # what the old Save as proposed
        await pilot.pause()
        warnings = [str(n.message) for n in app._notifications if n.severity == "warning"]
        assert any("workbench run demo" in w and "profiles/demo.toml" in w for w in warnings), \
            warnings


# ---- Quitting with unsaved changes asks ------------------------------------------------------


def _in_app(monkeypatch, tmp_path):
    from app_helpers import isolate

    isolate(monkeypatch, tmp_path)
    monkeypatch.setattr("workbench.estimate.cli.count_dataset_tokens", lambda p: (None, "test"))


async def _changed_on_configure(app, pilot):
    await pilot.press("3")
    await wait_for(pilot, lambda: getattr(app.screen, "view", None) is not None)
    form = app.screen.query_one(ProfileForm)
    form.widget("lora.r").value = "32"
    await pilot.pause()
    app.screen.focus_home()
    await pilot.pause()
    assert form.modified() == ["lora.r"]
    return form


@pytest.mark.parametrize("quit_key", ["ctrl+q", "q"])
def test_quit_with_unsaved_changes_asks_and_cancel_stays(monkeypatch, tmp_path, quit_key):
    from app_helpers import drive

    _in_app(monkeypatch, tmp_path)

    async def steps(app, pilot):
        await _changed_on_configure(app, pilot)
        await pilot.press("1")  # from another screen too: the question is the app's
        await pilot.pause(0.2)
        await pilot.press(quit_key)
        await pilot.pause(0.2)
        assert app.is_running and type(app.screen).__name__ == "QuitScreen"
        text = screen_text(app)
        assert "demo" in text and "LoRA r" in text and "Save" in text and "Discard" in text
        await pilot.press("escape")
        await pilot.pause(0.2)
        assert app.is_running and type(app.screen).__name__ != "QuitScreen"
    drive(steps, size=(80, 24))


def test_quit_discard_leaves_without_saving(monkeypatch, tmp_path):
    from app_helpers import drive

    _in_app(monkeypatch, tmp_path)
    seen = {}

    async def steps(app, pilot):
        await _changed_on_configure(app, pilot)
        await pilot.press("ctrl+q")
        await pilot.pause(0.2)
        await pilot.press("d")
        await pilot.pause(0.2)
        seen["running"] = app.is_running
    drive(steps, size=(80, 24))
    assert seen["running"] is False
    assert not list((tmp_path / "no-profiles").glob("*.toml"))


def test_quit_save_saves_under_a_new_name_then_leaves(monkeypatch, tmp_path):
    from app_helpers import drive
    from workbench.profile import load_profile

    _in_app(monkeypatch, tmp_path)
    seen = {}

    async def steps(app, pilot):
        await _changed_on_configure(app, pilot)
        await pilot.press("ctrl+q")
        await pilot.pause(0.2)
        await pilot.press("s")
        await pilot.pause(0.3)
        seen["running"] = app.is_running
    drive(steps, size=(80, 24))
    assert seen["running"] is False
    saved = tmp_path / "no-profiles" / "my-demo.toml"
    assert saved.is_file() and load_profile(saved).lora.r == 32


def test_quit_without_changes_does_not_ask(monkeypatch, tmp_path):
    from app_helpers import drive

    _in_app(monkeypatch, tmp_path)
    seen = {}

    async def steps(app, pilot):
        await pilot.press("3")
        await wait_for(pilot, lambda: getattr(app.screen, "view", None) is not None)
        app.screen.focus_home()
        await pilot.press("ctrl+q")
        await pilot.pause(0.2)
        seen["running"] = app.is_running
    drive(steps, size=(80, 24))
    assert seen["running"] is False


def test_no_key_of_any_screen_needs_alt_or_a_key_terminals_take():
    """Every binding the workbench declares (ids `<screen>.<action>`, the ones a keymap can
    rebind), on every screen and widget of the app: tmux's prefix (ctrl+b), screen's (ctrl+a),
    alt combinations and the like never reach an app over SSH (Compare's stop was ctrl+b)."""
    import importlib
    import inspect
    import pkgutil

    import screens
    import screens.widgets

    TEXTUALS = ("screen.", "input.", "app.")  # Textual's own, with spare keys such as super+c
    bad = []
    for package in (screens, screens.widgets):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            for _, cls in inspect.getmembers(module, inspect.isclass):
                if cls.__module__ != module.__name__:
                    continue
                for b in Binding.make_bindings(cls.__dict__.get("BINDINGS", [])):
                    keys = [k.strip() for k in b.key.split(",")]
                    bad += [f"{cls.__name__}: {k} ({b.id or b.action})" for k in keys
                            if b.id and not b.id.startswith(TEXTUALS)
                            and (k.startswith(UNDELIVERABLE) or k in UNDELIVERABLE)]
    assert not bad, bad


def test_every_form_label_leaves_a_gap_before_its_value():
    """The label column is 12 cells (configure_form.py's CSS) and a changed field's label gets
    a `*`: a longer label ran into its value ("adapter initdefault")."""
    import re

    from screens.widgets.configure_form import FIELDS, ProfileForm

    width = int(re.search(r"\.form-row > Label \{ width: (\d+);", ProfileForm.DEFAULT_CSS)[1])
    assert [f.label for f in FIELDS if len(f.label + "*") >= width] == []
