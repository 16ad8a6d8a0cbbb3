"""The README's key table against the app: every id it names is a binding of the app, its
screens or their widgets, bound to the key the table shows."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest
from textual.binding import Binding

README = Path(__file__).resolve().parent.parent / "README.md"
KEY_NAMES = {"?": "question_mark", "enter": "enter", "esc": "escape"}


def app_bindings() -> dict[str, set[str]]:
    """id -> the keys bound to it, over every class in screens/ that declares BINDINGS."""
    import screens
    from screens.app import WorkbenchApp, _screen_bindings

    modules = [importlib.import_module(m.name)
               for m in pkgutil.walk_packages(screens.__path__, "screens.")]
    found: dict[str, set[str]] = {}
    classes = {WorkbenchApp}
    for module in modules:
        classes |= {c for _, c in inspect.getmembers(module, inspect.isclass) if "BINDINGS" in c.__dict__}
    for cls in classes:
        for b in Binding.make_bindings(cls.__dict__.get("BINDINGS", [])):
            if b.id:
                found.setdefault(b.id, set()).update(k.strip() for k in b.key.split(","))
    for b in _screen_bindings():
        found.setdefault(b.id, set()).update(b.key.split(","))
    return found


def table_rows() -> list[tuple[str, str, str]]:
    text = README.read_text(encoding="utf-8")
    table = text[text.index("| key | action | id |"):]
    table = table[: table.index("\n\n")]
    rows = []
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows.append((cells[0], cells[1], cells[2]))
    return rows


def ids_of(cell: str) -> list[str]:
    ids = []
    for raw in re.findall(r"`([^`]+)`", cell):
        if raw == "app.show.<screen>":
            from screens.app import SCREENS
            ids += [f"app.show.{name}" for name in SCREENS]
        elif raw.endswith(".N"):
            ids += [f"{raw[:-2]}.{n}" for n in range(1, 7)]
        else:
            ids.append(raw)
    return ids


def keys_of(cell: str) -> list[str]:
    cell = cell.split(":", 1)[1] if ":" in cell and not cell.startswith("ctrl") else cell
    keys = []
    for part in re.split(r",\s*", cell):
        first = part.split("/")[0].strip().lower()
        if first:
            keys.append(KEY_NAMES.get(first, first))
    return keys


ROWS = table_rows()


def test_the_key_table_is_read():
    assert len(ROWS) >= 10


@pytest.mark.parametrize("key_cell, action, id_cell", ROWS)
def test_every_id_in_the_readme_exists(key_cell, action, id_cell):
    bindings = app_bindings()
    for binding_id in ids_of(id_cell):
        if binding_id.endswith(".*") or "<" in binding_id:  # a family: some binding has the prefix
            prefix = binding_id.split("<")[0].rstrip("*")
            assert any(i.startswith(prefix) for i in bindings), binding_id
        else:
            assert binding_id in bindings, f"{binding_id} ({action}) is not a binding id of the app"


@pytest.mark.parametrize("key_cell, action, id_cell", [r for r in ROWS if not r[0].startswith("fields")])
def test_keys_match_their_ids(key_cell, action, id_cell):
    """Where the table lists one key per id, in order, each id is bound to that key."""
    ids = [i for i in re.findall(r"`([^`]+)`", id_cell) if "*" not in i and "<" not in i]
    keys = keys_of(key_cell)
    if len(keys) != len(ids) or not ids:
        pytest.skip("not a one-key-per-id row")
    bindings = app_bindings()
    for key, binding_id in zip(keys, ids):
        if binding_id.endswith(".N"):
            continue
        assert key in {k.lower() for k in bindings[binding_id]}, (key, binding_id, bindings[binding_id])
