"""The Data screen driven by Pilot: open, inspect, filter, row detail, clean toggles, split and
save, a 100,000-row file, and SVG snapshots at 80x24 and 160x48."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
from pathlib import Path

import pytest
from textual.app import App

from app_helpers import screen_text, wait_for
from screens.data import DataScreen
from screens.widgets.data_clean import CleanPanel
from screens.widgets.data_detail import TRAINED_STYLE
from screens.widgets.data_table import RowsView

REPO = Path(__file__).resolve().parent.parent
DEMO = "assets/demo/translate_en_fr.jsonl"


class DataApp(App):
    """The screen alone, with the app's theme: what the real app shows in its data mode."""

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


def sync(test):
    """Run an async Pilot test with asyncio.run (the suite has no async plugin)."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        return asyncio.run(test(*args, **kwargs))

    return run


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    # Paths on screen are shown as typed: relative to the repository keeps snapshots stable.
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@sync
async def test_open_inspect_filter_detail_clean_save(tmp_path):
    app = DataApp(lambda: DataScreen(max_seq_len=128))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        path_box = screen.query_one("#data-path")
        assert not path_box.has_focus  # arrived on the rows; ctrl+o enters the path field
        await pilot.press("ctrl+o")
        assert path_box.has_focus
        await pilot.press(*DEMO[:12])  # typed, then completed: a prefix and the rest
        path_box.value = DEMO
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.report is not None)
        assert len(screen.records) == 600
        assert screen.report["rows"] == 600
        summary = screen_text(app)
        assert "600" in summary

        # Flagged-only filter: the demo's near-duplicate pair (second of each group) shows.
        flagged = [i for i, f in enumerate(screen.flags) if f]
        assert flagged
        await pilot.press("f")
        table = screen.query_one(RowsView)
        assert table.row_count == len(flagged)
        assert "filter: flagged" in screen_text(app)

        # Row detail: rendered through the chat template, the answer marked as trained.
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.detail_text is not None)
        record = screen.records[table.current_index]
        answer = next(m["content"] for m in record["messages"] if m["role"] == "assistant")
        trained = "".join(screen.detail_text.plain[s.start:s.end]
                          for s in screen.detail_text.spans if s.style == TRAINED_STYLE)
        assert answer in trained
        assert "Translate" not in trained  # the prompt is not trained on

        # Cleaning toggles, by keyboard: c focuses the first box; Tab moves, Space toggles.
        await pilot.press("c", "tab", "space", "tab", "tab", "space")
        panel = screen.query_one(CleanPanel)
        assert panel.steps == ["drop_short", "dedup_exact"]
        await wait_for(pilot, lambda: screen.clean_report is not None
                       and [op.name for op in screen.clean_report.operations] == panel.steps)
        assert screen.clean_report.rows_in == 600
        assert "kept" in screen_text(app)

        # Split and save into tmp_path: the manifest is written and named on screen.
        out = tmp_path / "split"
        screen.query_one("#split-out").value = str(out)
        await pilot.press("escape", "s")
        await wait_for(pilot, lambda: screen.saved_to is not None)
        manifest = json.loads((out / "manifest.json").read_text())
        assert sum(s["rows"] for s in manifest["splits"].values()) == screen.clean_report.rows_out
        assert [op["name"] for op in manifest["operations"]] == ["drop_short", "dedup_exact"]
        assert "saved" in screen_text(app)


@sync
async def test_clean_counts_update_as_steps_toggle(tmp_path):
    rows = [{"instruction": f"question {i}", "output": f"answer number {i}"} for i in range(20)]
    rows += [rows[0], rows[1], {"instruction": "short", "output": "k"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    app = DataApp(lambda: DataScreen(path, auto_inspect=False))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: len(screen.records) == 23)
        await pilot.press("c")
        panel = screen.query_one(CleanPanel)
        panel.set_step("dedup_exact", True)
        await wait_for(pilot, lambda: screen.clean_report is not None)
        assert screen.clean_report.removed_total == 2
        panel.set_step("drop_short", True)
        await wait_for(pilot, lambda: len(screen.clean_report.operations) == 2)
        assert screen.clean_report.removed_total == 3
        assert len(screen.kept) == 20
        result = screen_text(app)
        assert "20" in result and "dedup_exact" in result


@sync
async def test_clean_settings_are_editable_and_checked(tmp_path):
    """The minimum answer length is a setting: raising it removes more; a bad value is named
    in the panel and no clean runs with it."""
    rows = [{"instruction": f"q{i}", "output": "x" * (i + 1)} for i in range(10)]  # 1..10 chars
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    app = DataApp(lambda: DataScreen(path, auto_inspect=False, max_seq_len=256))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: len(screen.records) == 10)
        await pilot.press("c")
        panel = screen.query_one(CleanPanel)
        assert panel.settings() == {"min_answer_chars": 2, "near_dup_threshold": 0.85,
                                    "max_tokens": 256}
        panel.set_step("drop_short", True)
        await wait_for(pilot, lambda: screen.clean_report is not None)
        assert screen.clean_report.removed_total == 1  # the 1-character answer
        panel.set_setting("min_answer_chars", 6)
        await wait_for(pilot, lambda: screen.clean_report.removed_total == 5)
        assert screen.clean_report.operations[0].params == {"min_answer_chars": 6}
        assert len(screen.kept) == 5

        report = screen.clean_report
        panel.set_setting("near_dup_threshold", 1.5)
        await wait_for(pilot, lambda: "near-dup: expected" in screen_text(app))
        assert "got '1.5'" in screen_text(app)
        assert screen.clean_report is report  # nothing ran with the bad value
        screen.query_one("#split-out").value = str(tmp_path / "out")
        await pilot.press("escape", "s")
        await wait_for(pilot, lambda: any("Fix the clean settings" in str(n.message)
                                          for n in app._notifications))
        assert not (tmp_path / "out").exists()  # nor was anything saved with it


@sync
async def test_bad_file_is_a_notification_not_a_traceback(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("", encoding="utf-8")
    app = DataApp(lambda: DataScreen(bad, auto_inspect=False))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: app._notifications)
        note = list(app._notifications)[0]
        assert "no records" in note.message and note.severity == "error"
        assert "Traceback" not in note.message


@sync
async def test_100k_rows_load_and_scroll_to_the_end(tmp_path):
    path = tmp_path / "big.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for i in range(100_000):
            fh.write(json.dumps({"instruction": f"Translate sentence {i}", "output": f"Phrase {i}"}) + "\n")
    app = DataApp(lambda: DataScreen(path, auto_inspect=False))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: len(screen.records) == 100_000, timeout=20)
        table = screen.query_one(RowsView)
        started = time.perf_counter()
        await pilot.press("end")
        await pilot.pause()
        assert time.perf_counter() - started < 1.0
        assert table.current_index == 99_999
        assert table.scroll_offset.y >= 100_000 - table.size.height
        for _ in range(20):
            await pilot.press("pageup")
        assert table.cursor < 99_999 - 20 * 10


# ---------------------------------------------------------------------------------------------
# Snapshots: the demo file, inspected with the bundled tiny tokenizer, flagged-only filter.


def _snapshot_app() -> DataApp:
    return DataApp(lambda: DataScreen(DEMO, max_seq_len=128, out_dir="translate_en_fr-split"))


async def _inspected(pilot) -> None:
    await wait_for(pilot, lambda: pilot.app.screen.report is not None)


async def _inspected_and_detail(pilot) -> None:
    await _inspected(pilot)
    await pilot.press("f", "enter")
    await wait_for(pilot, lambda: pilot.app.screen.detail_text is not None)


def test_snapshot_data_80x24(snap_compare):
    assert snap_compare(_snapshot_app(), terminal_size=(80, 24), run_before=_inspected)


def test_snapshot_data_160x48(snap_compare):
    assert snap_compare(_snapshot_app(), terminal_size=(160, 48), run_before=_inspected_and_detail)


@pytest.mark.skipif(not os.environ.get("WORKBENCH_SCREENSHOTS"),
                    reason="writes assets/screenshots/data.svg; set WORKBENCH_SCREENSHOTS=1")
@sync
async def test_readme_screenshot():
    app = _snapshot_app()
    async with app.run_test(size=(120, 32)) as pilot:
        await _inspected(pilot)
        await pilot.press("down", "down", "enter")
        await wait_for(pilot, lambda: app.screen.detail_text is not None)
        (REPO / "assets" / "screenshots").mkdir(parents=True, exist_ok=True)
        app.save_screenshot("data.svg", path=str(REPO / "assets" / "screenshots"))


# ---------------------------------------------------------------------------------------------
# Preference data: the checks in the stats pane, the pair view (prompt above, the two answers
# side by side or stacked, trained tokens styled as the row detail styles them), n / p between
# pairs, unpaired (KTO) rows with their label, and split + save keeping prompts together.

PAIRS = "assets/demo/translate_en_fr_pairs.jsonl"


def _trained(text) -> str:
    return "".join(text.plain[s.start:s.end] for s in text.spans if s.style == TRAINED_STYLE)


@sync
async def test_preference_pairs_show_both_sides_and_move_between_pairs(tmp_path):
    from screens.widgets.data_preference import PairView

    app = DataApp(lambda: DataScreen(PAIRS, max_seq_len=128))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.report is not None)
        assert screen.kind == "paired" and len(screen.records) == 600
        text = screen_text(app)
        assert "600 pairs" in text and "chosen" in text and "rejected" in text  # table header
        assert "can train" in text and "chosen longer" in text                  # the checks

        await pilot.press("down", "enter")  # the second pair
        await wait_for(pilot, lambda: screen.pair_shown is not None)
        record = screen.records[1]
        shown = screen.pair_shown
        assert [title.split(" ·")[0] for title, _, _ in shown.sides] == ["chosen", "rejected"]
        for (_, body, _), side in zip(shown.sides, ("chosen", "rejected")):
            answer = record[side][0]["content"]
            assert answer in _trained(body)  # every answer token trains, styled as in SFT
        assert record["prompt"][-1]["content"] in shown.prompt.plain
        assert not _trained(shown.prompt)  # the prompt is not trained on
        text = screen_text(app)
        assert "pair 2 of 600" in text and "prompt" in text
        assert record["chosen"][0]["content"] in text and record["rejected"][0]["content"] in text
        assert not screen.query_one(RowsView).display  # the pair view takes its place

        await pilot.press("n")  # next pair, the table's cursor follows
        await wait_for(pilot, lambda: screen.pair_shown is not None and "pair 3 of" in screen.pair_shown.header)
        assert screen.query_one(RowsView).current_index == 2
        await pilot.press("p", "p")
        await wait_for(pilot, lambda: screen.pair_shown is not None and "pair 1 of" in screen.pair_shown.header)
        await pilot.press("p")  # before the first: said, not wrapped around
        await pilot.pause()
        assert "pair 1 of" in screen.pair_shown.header
        assert any("first row" in str(n.message) for n in app._notifications)

        await pilot.press("escape")  # back to the table, on the pair last shown
        await pilot.pause()
        assert screen.query_one(RowsView).has_focus and not screen.pairs_shown
        assert screen.query_one(RowsView).current_index == 0
        assert not screen.query_one(PairView).display


@sync
async def test_pairs_stack_when_the_terminal_is_narrow():
    app = DataApp(lambda: DataScreen(PAIRS, max_seq_len=128, auto_inspect=False))
    async with app.run_test(size=(70, 24)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: len(screen.records) == 600)
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.pair_shown is not None)
        sides = screen.query_one("#pair-sides")
        assert sides.has_class("-stacked")
        a, b = screen.query_one("#pair-a"), screen.query_one("#pair-b")
        assert b.region.y > a.region.y and a.region.x == b.region.x  # one above the other


@sync
async def test_preference_checks_flag_rows_that_cannot_train(tmp_path):
    rows = [{"prompt": f"Say {i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(6)]
    rows[2]["rejected"] = rows[2]["chosen"]  # identical sides: no preference in it
    rows[4]["chosen"] = ""                   # an empty answer
    rows.append(dict(rows[0]))               # an identical copy
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    app = DataApp(lambda: DataScreen(path, max_seq_len=256))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.report is not None)
        assert screen.report["kept"] == 5
        text = screen_text(app)
        assert "identical sides" in text and "empty answer" in text
        flagged = [screen.records[i]["source"]["row"] for i, f in enumerate(screen.flags) if f]
        assert flagged == [3, 5, 7]  # file lines: identical, empty, the copy
        await pilot.press("f", "f")  # flagged, then "cannot train"
        assert "filter: cannot train (2)" in screen_text(app)
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.pair_shown is not None)
        assert any("chosen and rejected are the same answer" in n for n in screen.pair_shown.notes)
        assert "pair 1 of 2 (row 3)  ·  filter: cannot train" in screen.pair_shown.header


@sync
async def test_unpaired_rows_show_the_answer_and_its_label(tmp_path):
    rows = [{"prompt": "Capital of France?", "completion": "Paris.", "label": True},
            {"prompt": "Capital of France?", "completion": "Berlin, I think.", "label": False}]
    path = write_jsonl(tmp_path / "kto.jsonl", rows)
    app = DataApp(lambda: DataScreen(path, max_seq_len=256))
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.report is not None)
        assert screen.kind == "unpaired"
        text = screen_text(app)
        assert "label" in text and "completion" in text and "1 desirable, 1 not" in text
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: screen.pair_shown is not None)
        (title, body, style), = screen.pair_shown.sides
        assert title.startswith("undesirable (label false)") and style == "rejected"
        assert "Berlin, I think." in _trained(body)
        assert "undesirable (label false)" in screen_text(app)


@sync
async def test_preference_split_keeps_each_prompt_in_one_split(tmp_path):
    app = DataApp(lambda: DataScreen(PAIRS, auto_inspect=False))
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: len(screen.records) == 600)
        await pilot.press("c")
        # The steps are for conversations: the panel takes focus, never its split field.
        assert screen.query_one(CleanPanel).has_focus
        assert screen.query_one("#step-drop_empty").disabled
        assert "Preference data" in screen_text(app)
        out = tmp_path / "pairs-split"
        screen.query_one("#split-out").value = str(out)
        await pilot.press("escape", "s")
        await wait_for(pilot, lambda: screen.saved_to is not None)
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["kind"] == "preference" and manifest["split"]["prompts_shared"] == 0
        first = json.loads((out / "train.jsonl").read_text().splitlines()[0])
        assert {"prompt", "chosen", "rejected"} <= set(first)


def _pairs_app() -> DataApp:
    return DataApp(lambda: DataScreen(PAIRS, max_seq_len=128, out_dir="pairs-split"))


async def _pair_shown(pilot) -> None:
    await _inspected(pilot)
    await pilot.press("down", "down", "enter")
    await wait_for(pilot, lambda: pilot.app.screen.pair_shown is not None)


def test_snapshot_data_pairs_80x24(snap_compare):
    assert snap_compare(_pairs_app(), terminal_size=(80, 24), run_before=_pair_shown)


def test_snapshot_data_pairs_stats_160x48(snap_compare):
    assert snap_compare(_pairs_app(), terminal_size=(160, 48), run_before=_inspected)
