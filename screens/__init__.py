"""The app's screens, as a registry the App turns into modes.

Each entry names its screen class as "module:Class" and is imported only the first time
someone opens it, so the app starts fast and a screen that does not exist yet (or fails to
import) shows a "coming soon" placeholder instead of stopping the app.

To add a screen: write `screens/<name>.py` with a `FocusScreen` subclass (screens/widgets/
focus.py: the app's one focus rule; name its list, table or form as `HOME`) that takes no
arguments (read shared state such as `self.app.runs_dir` from the app), yield a `NavBar(name)`
under its header, and point its entry here at it. Its bindings should carry ids
("<name>.<action>") so users can remap them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from textual.screen import Screen


@dataclass(frozen=True)
class ScreenSpec:
    name: str         # the mode name; its switch binding's id is "app.show.<name>"
    title: str        # shown in the navigation bar, help and command palette
    key: str          # default key that switches to it (remappable through the keymap)
    target: str       # "module:Class", imported on first visit
    description: str  # one line for the command palette


SCREENS: dict[str, ScreenSpec] = {}


def register_screen(spec: ScreenSpec) -> None:
    """Add or replace a screen. The App reads SCREENS when it is created."""
    SCREENS[spec.name] = spec


for _spec in (
    ScreenSpec("runs", "Runs", "1", "screens.runs:RunsScreen",
               "Profiles, runs and GPUs: start, stop, resume, delete"),
    ScreenSpec("data", "Data", "2", "screens.data:DataScreen",
               "Open, inspect, clean and split a dataset"),
    ScreenSpec("configure", "Configure", "3", "screens.configure:ConfigureScreen",
               "Edit a profile with a live memory estimate"),
    ScreenSpec("train", "Train", "4", "screens.train:TrainScreen",
               "Monitor a run: loss, learning rate, GPU, log"),
    ScreenSpec("compare", "Compare", "5", "screens.compare:CompareScreen",
               "Base, few-shot and fine-tuned answers side by side"),
    ScreenSpec("export", "Export", "6", "screens.export:ExportScreen",
               "Merge, quantize and package for Ollama / vLLM"),
):
    register_screen(_spec)


def load_screen_class(spec: ScreenSpec) -> type[Screen]:
    """Import the screen's class. Raises ImportError / AttributeError when it cannot."""
    module_name, _, class_name = spec.target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, class_name)


def make_screen(name: str) -> Screen:
    """A new instance of the named screen, or a placeholder saying why there is none."""
    from screens.widgets.coming_soon import ComingSoonScreen

    spec = SCREENS[name]
    module_name = spec.target.partition(":")[0]
    try:
        return load_screen_class(spec)()
    except ModuleNotFoundError as exc:
        if exc.name == module_name:  # not written yet: expected, not an error
            return ComingSoonScreen(spec, "")
        return ComingSoonScreen(spec, f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # a broken screen must not take the rest of the app down
        return ComingSoonScreen(spec, f"{type(exc).__name__}: {exc}")
