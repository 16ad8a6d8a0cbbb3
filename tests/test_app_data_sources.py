"""The Data screen opens more than a file: a profile's mixture of [[data.sources]] (each source
with its share), and a dataset larger than a page, read a page at a time (m reads the next)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app_helpers import screen_text, wait_for
from screens.data import DataScreen
from screens.widgets import data_sources
from screens.widgets.data_stats import StatsPanel
from test_app_data import DataApp, sync

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "assets" / "demo"


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _mixture_profile(tmp_path: Path) -> Path:
    """Three local sources by weight: two JSONL files and one JSON array."""
    identity = tmp_path / "identity.json"
    identity.write_text(json.dumps([{"instruction": f"Who are you? ({i})",
                                     "output": "I am Petit, a tiny demo model."}
                                    for i in range(10)]), encoding="utf-8")
    profile = tmp_path / "mix.toml"
    profile.write_text(f"""
name = "mix"
[model]
name_or_path = "{REPO / 'assets' / 'tiny-model'}"
[data]
validation_split = 0.0
mix_rows = 400
[[data.sources]]
path = "{DEMO / 'translate_en_fr.jsonl'}"
label = "translations"
weight = 0.7
[[data.sources]]
path = "{DEMO / 'prompts.jsonl'}"
label = "prompts"
format = "prompt_completion"
columns = {{ completion = "reference" }}
weight = 0.2
[[data.sources]]
path = "{identity}"
label = "identity"
weight = 0.1
""", encoding="utf-8")
    return profile


@sync
async def test_a_profile_opens_as_its_mixture_with_each_source_share(tmp_path):
    profile = _mixture_profile(tmp_path)
    app = DataApp(lambda: DataScreen(auto_inspect=False))
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.screen
        await pilot.press("ctrl+o")
        screen.query_one("#data-path").value = str(profile)
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.sources is not None, timeout=20)
        assert len(screen.records) == 400
        shares = {s["label"]: (s["rows_drawn"], s["share"]) for s in screen.sources}
        assert shares == {"translations": (280, 0.7), "prompts": (80, 0.2),
                          "identity": (40, 0.1)}
        # The identity rows were repeated to fill their share: the drawn count is flagged.
        labels = {r["source"]["label"] for r in screen.records}
        assert labels == {"translations", "prompts", "identity"}
        text = screen_text(app)
        assert "a mixture of 3 sources, 400 training rows" in text
        panel = screen.query_one(StatsPanel).query_one("#stats-sources")
        assert panel.display
        for label, share in (("translations", "70.0%"), ("prompts", "20.0%"),
                             ("identity", "10.0%")):
            assert label in text and share in text


@sync
async def test_a_profile_with_a_bad_key_says_where_not_a_traceback(tmp_path):
    profile = tmp_path / "bad.toml"
    profile.write_text('name = "bad"\n[model]\nname_or_path = "m"\n[data]\n'
                       '[[data.sources]]\npath = "x.jsonl"\nwieght = 1\n', encoding="utf-8")
    app = DataApp(lambda: DataScreen(str(profile), auto_inspect=False))
    async with app.run_test(size=(160, 48)) as pilot:
        await wait_for(pilot, lambda: "could not open" in screen_text(app), timeout=20)
        shown = " ".join(str(n.message) for n in app._notifications)
        assert "data.sources[0].wieght" in shown and "did you mean 'weight'" in shown
        assert "Traceback" not in shown


@sync
async def test_a_big_dataset_is_read_a_page_at_a_time(monkeypatch):
    monkeypatch.setattr(data_sources, "PAGE_ROWS", 250)
    app = DataApp(lambda: DataScreen(str(DEMO / "translate_en_fr.jsonl"), auto_inspect=False))
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: len(screen.records) == 250, timeout=20)
        assert "the first 250: m reads 250 more" in screen_text(app)
        rows = [r["source"]["row"] for r in screen.records]
        assert rows == list(range(1, 251))  # JSON Lines rows are numbered by line
        await pilot.press("m")
        await wait_for(pilot, lambda: len(screen.records) == 500, timeout=20)
        assert "the first 500: m reads 250 more" in screen_text(app)
        await pilot.press("m")
        await wait_for(pilot, lambda: len(screen.records) == 600, timeout=20)
        assert [r["source"]["row"] for r in screen.records] == list(range(1, 601))
        assert "m reads" not in screen_text(app)  # every row is loaded now
        await pilot.press("m")
        await wait_for(pilot, lambda: any("Every row is loaded" in str(n.message)
                                          for n in app._notifications))


@sync
async def test_a_hub_dataset_id_opens_from_the_offline_cache(tmp_path, monkeypatch):
    """The Data screen reads a Hub id as `load_dataset` would: here from a snapshot in the
    Hugging Face cache (laid out as a download leaves it), with the Hub unreachable."""
    from test_hub_datasets import REPO_ID, cache_snapshot, repo_with_data_shards

    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE"):
        monkeypatch.delenv(name, raising=False)
    cache_snapshot(home, repo_with_data_shards(tmp_path / "tiny-chat"))
    app = DataApp(lambda: DataScreen(auto_inspect=False))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        await pilot.press("ctrl+o")
        screen.query_one("#data-path").value = REPO_ID
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(screen.records) == 3, timeout=20)
        assert screen.records[0]["messages"][0]["content"] == "Say one"
        assert f"{REPO_ID}: 3 rows" in screen_text(app)
        # Not cached: the one line that says what to do, not a traceback.
        await pilot.press("ctrl+o")
        screen.query_one("#data-path").value = "org/not-cached"
        await pilot.press("enter")
        await wait_for(pilot, lambda: "could not open org/not-cached" in screen_text(app))
        shown = " ".join(str(n.message) for n in app._notifications)
        assert "is not in the Hugging Face cache" in shown and "Traceback" not in shown


@sync
async def test_a_load_that_ends_while_typing_leaves_the_keys_in_the_field(tmp_path):
    """Open a mixture, then start typing the next path before it has loaded: the load ending
    must not move the keys to the rows (where `s` would save)."""
    profile = _mixture_profile(tmp_path)
    app = DataApp(lambda: DataScreen(auto_inspect=False))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = app.screen
        box = screen.query_one("#data-path")
        await pilot.press("ctrl+o")
        box.value = str(profile)
        await pilot.press("enter")
        await pilot.press("ctrl+o")
        box.value = ""
        await pilot.press(*"assets/dem")
        await wait_for(pilot, lambda: screen.sources is not None, timeout=20)
        await pilot.press(*"o/identity.jsonl")
        assert box.has_focus and box.value == "assets/demo/identity.jsonl"
        assert screen.saved_to is None
        await pilot.press("enter")
        await wait_for(pilot, lambda: len(screen.records) == 18, timeout=20)
        assert screen.query_one("#data-rows").has_focus  # opened: the rows, as before
