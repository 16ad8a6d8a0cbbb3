"""The shipped mixture, on bundled files only (so it runs on a fresh clone, without the shared
samples): `profiles/mixture-demo.toml` mixes the demo's JSONL, a folder in the Hub's layout and
identity rows by weight; it inspects per source, trains the tiny model and its run records every
source."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from conftest import workbench

from workbench.profile import load_profile
from workbench.train.plan import load_training_data

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "profiles" / "mixture-demo.toml"


def test_the_demo_mixture_draws_its_weights_from_three_kinds_of_source():
    profile = load_profile(DEMO)
    data = load_training_data(profile)
    by = {s["label"]: s for s in data.sources}
    assert list(by) == ["translations", "more-translations", "identity"]
    assert len(data.train) == 800
    assert [by[k]["rows_drawn"] for k in by] == [480, 240, 80]
    assert [by[k]["share"] for k in by] == [0.6, 0.3, 0.1]
    # The Hub-layout folder is read as `datasets` reads a repository: its card's configs block.
    assert by["more-translations"]["rows_loaded"] == 300
    assert by["identity"]["rows_drawn"] > by["identity"]["rows_available"] == 18  # repeated
    # Validation only from held-out sources, and none of its rows is trained on.
    assert {r["source"]["label"] for r in data.validation} == {"translations", "more-translations"}
    trained = {json.dumps(r["messages"]) for r in data.train}
    assert not any(json.dumps(r["messages"]) in trained for r in data.validation)


def test_the_demo_mixture_inspects_trains_and_records_its_sources(tmp_path):
    shown = workbench("data", "inspect", "--profile", str(DEMO), cwd=tmp_path, check=True).stdout
    for label in ("translations", "more-translations", "identity"):
        assert label in shown
    assert "60.0% (480)" in shown and "10.0% (80)" in shown
    workbench("run", str(DEMO), "--runs-dir", "runs", "--set", "train.max_steps=2",
              "--set", "eval.after_training=false", cwd=tmp_path, check=True)
    (run,) = (tmp_path / "runs").iterdir()
    recorded = tomllib.loads((run / "profile.toml").read_text())["resolved"]["sources"]
    assert [s["label"] for s in recorded] == ["translations", "more-translations", "identity"]
    assert all(len(s["hash"]) == 64 for s in recorded)
    assert recorded[1]["path"].endswith("assets/demo/hub-layout")
    # The recorded profile loads back (resume, `workbench eval RUN` read it).
    assert load_profile(run / "profile.toml").data.sources
