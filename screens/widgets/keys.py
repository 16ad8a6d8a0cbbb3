"""Ids for Textual's own key bindings, and the widgets the app uses with them.

Textual declares its widgets' keys (text editing in an Input, scrolling, focus moves) without
ids, so the help screen could not name them and the keymap file could not remap them. These
subclasses declare the same keys again with ids ("input.home", "screen.focus_next"): a
subclass's binding for a key replaces its base's, so behaviour is unchanged.
"""

from __future__ import annotations

import dataclasses
import re

from textual.binding import Binding
from textual.widgets import DataTable, Input, OptionList, RichLog, Select


def _id_part(action: str) -> str:
    """"app.focus_next" -> "focus_next"; "cursor_left(True)" -> "cursor_left_select" (the
    argument of Textual's editing actions is `select`); other arguments are appended."""
    action = action.split(".", 1)[1] if action.startswith(("app.", "screen.")) else action
    match = re.fullmatch(r"(\w+)\((.*)\)", action)
    if not match:
        return action
    name, args = match.groups()
    if args.strip() == "True":
        return f"{name}_select"
    return "_".join([name, *re.findall(r"\w+", args)])


def with_ids(cls: type, prefix: str) -> list[Binding]:
    """Every key binding `cls` has (its own and inherited, as Textual merges them), copied
    with the id "<prefix>.<action>" where it had none. Put the result in a subclass's
    BINDINGS."""
    keys: dict[str, list[Binding]] = {}
    for base in reversed(cls.__mro__):
        if "BINDINGS" in base.__dict__:
            own: dict[str, list[Binding]] = {}
            for binding in Binding.make_bindings(base.__dict__["BINDINGS"]):
                own.setdefault(binding.key, []).append(binding)
            keys.update(own)  # a class's bindings for a key replace its bases' (as in Textual)
    return [b if b.id or b.system else dataclasses.replace(b, id=f"{prefix}.{_id_part(b.action)}")
            for bindings in keys.values() for b in bindings]


class KeyedInput(Input):
    BINDINGS = with_ids(Input, "input")


class KeyedSelect(Select):
    BINDINGS = with_ids(Select, "select")


class KeyedDataTable(DataTable):
    BINDINGS = with_ids(DataTable, "table")


class KeyedOptionList(OptionList):
    BINDINGS = with_ids(OptionList, "list")


class KeyedRichLog(RichLog):
    BINDINGS = with_ids(RichLog, "log")
