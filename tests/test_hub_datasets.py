"""Hub datasets by name and folders in the Hub's layout, read through the real `datasets` code
(issue 27, item 1). Nothing here replaces the loader: every load goes through
datasets.load_dataset_builder / download_and_prepare / as_dataset.

The caches live in a temporary HF_HOME, laid out as the libraries write them:
- the huggingface_hub cache (`hub/datasets--org--name/{blobs,snapshots/<commit>,refs/main}`),
  what `hf download --repo-type dataset` and an online `load_dataset` leave behind;
- the datasets Arrow cache (`datasets/org___name/default/0.0.0/<commit>/`), written by the
  datasets Parquet builder itself (the builder an online load of a parquet repository runs),
  then placed under the repository's name: building it under that name needs the Hub API.
Offline, `load_dataset("org/name")` finds the Arrow copy through datasets'
CachedDatasetModuleFactory; datasets 5.2 does not look in the huggingface_hub cache offline,
which the workbench then reads as a local folder in the Hub's layout.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from workbench.data import hub_datasets
from workbench.data.errors import DataError
from workbench.data.load import LoadReport, dataset_hash, iter_source, load_records
from workbench.data.sources import SourceSpec

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
datasets = pytest.importorskip("datasets")

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "fedcba9876543210fedcba9876543210fedcba98"
REPO_ID = "org/tiny-chat"
EN = [{"instruction": f"Say {w}", "output": w} for w in ("one", "two", "three")]
FR = [{"instruction": f"Dis {w}", "output": w} for w in ("un", "deux")]
TEST = [{"instruction": "Say four", "output": "four"}]
README_CONFIGS = """---
configs:
- config_name: en
  data_files:
  - split: train
    path: en/train-*.parquet
  - split: test
    path: en/test-*.parquet
  default: true
- config_name: fr
  data_files:
  - split: train
    path: fr/train-*.parquet
---
# tiny chat

Two configurations, as `datasets` reads a dataset card.
"""


def parquet(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def repo_with_configs(root: Path) -> Path:
    """A dataset repository as on the Hub: parquet shards per configuration and a README.md
    whose YAML header declares them."""
    parquet(root / "en" / "train-00000-of-00001.parquet", EN)
    parquet(root / "en" / "test-00000-of-00001.parquet", TEST)
    parquet(root / "fr" / "train-00000-of-00001.parquet", FR)
    (root / "README.md").write_text(README_CONFIGS, encoding="utf-8")
    return root


def repo_with_data_shards(root: Path) -> Path:
    """Only data/ shards, named the way push_to_hub names them: the split is in the file name."""
    parquet(root / "data" / "train-00000-of-00002.parquet", EN[:2])
    parquet(root / "data" / "train-00001-of-00002.parquet", EN[2:])
    parquet(root / "data" / "test-00000-of-00001.parquet", TEST)
    return root


@pytest.fixture
def hf_home(tmp_path, monkeypatch):
    """An empty HF_HOME for this test, offline (the libraries' own switch)."""
    home = tmp_path / "hf"
    monkeypatch.setenv("HF_HOME", str(home))
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


def cache_snapshot(hf_home: Path, repo: Path, repo_id: str = REPO_ID, commit: str = COMMIT,
                   ref: str = "main") -> Path:
    """`repo` in the huggingface_hub cache as a download leaves it: each file a blob named by its
    sha256, the snapshot of the commit made of links to the blobs, and refs/<ref> naming it."""
    cached = hf_home / "hub" / ("datasets--" + repo_id.replace("/", "--"))
    snapshot = cached / "snapshots" / commit
    for file in sorted(p for p in repo.rglob("*") if p.is_file()):
        data = file.read_bytes()
        blob = cached / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / file.relative_to(repo)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (cached / "refs").mkdir(exist_ok=True)
    (cached / "refs" / ref).write_text(commit)
    return snapshot


def cache_prepared(hf_home: Path, repo: Path, config: str | None = None, repo_id: str = REPO_ID,
                   commit: str = COMMIT) -> Path:
    """The datasets Arrow cache of `repo_id` at `commit`: datasets prepares the repository's
    files (load_dataset_builder + download_and_prepare, the module factory and builder a Hub
    load runs for the same files), and the result is placed where a Hub load puts it:
    datasets/<owner>___<name>/<config>/0.0.0/<commit>. `repo` is named like the dataset, so
    the Arrow files are named as a Hub load names them (<name>-<split>.arrow)."""
    owner, name = repo_id.split("/")
    assert repo.name == name
    builder = datasets.load_dataset_builder(str(repo), name=config,
                                            cache_dir=str(hf_home / "build-cache"))
    builder.download_and_prepare()
    built = Path(builder.cache_dir)
    target = hf_home / "datasets" / f"{owner}___{name}" / built.parts[-3] / built.parts[-2] / commit
    target.parent.mkdir(parents=True, exist_ok=True)
    built.rename(target)
    return target


def instructions(records: list[dict]) -> list[str]:
    return [r["messages"][0]["content"] for r in records]


# ---- (a) local folders in the Hub's layout ------------------------------------------------------

def test_a_folder_with_a_readme_configs_block_loads_by_config_split_and_data_files(tmp_path, hf_home):
    repo = repo_with_configs(tmp_path / "tiny-chat")
    report = LoadReport()
    default = load_records(repo, report=report)
    assert instructions(default) == ["Say one", "Say two", "Say three"]  # the default: true config
    assert [r["source"] for r in default] == [{"file": str(repo), "row": i} for i in range(3)]
    assert report.kinds == {str(repo): "hub_folder"} and report.revisions == {}
    assert instructions(load_records(repo, config="fr")) == ["Dis un", "Dis deux"]
    assert instructions(load_records(repo, config="en", split="test")) == ["Say four"]
    assert instructions(load_records(repo, data_files=["fr/*.parquet"])) == ["Dis un", "Dis deux"]
    with pytest.raises(DataError, match=r"has no configuration 'de'; its configurations are \['en', 'fr'\]"):
        load_records(repo, config="de")
    with pytest.raises(DataError, match=r"has no split 'validation'; its splits are \['train', 'test'\]"):
        load_records(repo, split="validation")
    with pytest.raises(DataError, match=r"no data files matching data_files = \['zz/\*.parquet'\]"):
        load_records(repo, data_files=["zz/*.parquet"])


def test_a_folder_of_data_shards_loads_its_splits_and_hashes_its_files(tmp_path, hf_home):
    repo = repo_with_data_shards(tmp_path / "shards")
    (repo / ".cache").mkdir()
    (repo / ".cache" / "junk").write_text("not data")
    assert instructions(load_records(repo)) == ["Say one", "Say two", "Say three"]
    assert instructions(load_records(repo, split="test")) == ["Say four"]
    # The same rows through a [[data.sources]] table.
    spec = SourceSpec(label="shards", path=str(repo), split="test",
                      data_files=("data/test-*.parquet",))
    (record,) = iter_source(spec)
    assert record["source"] == {"file": str(repo), "row": 0, "label": "shards"}
    # The hash covers the shards (not hidden folders), and changes when a shard does.
    before = dataset_hash(repo)
    (repo / ".cache" / "junk").write_text("other junk")
    assert dataset_hash(repo) == before
    parquet(repo / "data" / "test-00000-of-00001.parquet", TEST + TEST)
    assert dataset_hash(repo) != before


def test_a_folder_without_data_files_is_still_an_error(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes.doc").write_text("x")
    with pytest.raises(DataError, match="is a directory with no data files") as err:
        load_records(tmp_path)
    assert "it contains 2 entries: notes.doc, notes/" in str(err.value)


def test_config_and_data_files_do_not_apply_to_one_file(tmp_path):
    file = parquet(tmp_path / "one.parquet", EN)
    with pytest.raises(DataError, match="is a single file; `config` and `data_files` choose"):
        load_records(file, config="en")


# ---- (b) a populated offline cache ----------------------------------------------------------------

def test_offline_a_prepared_dataset_loads_from_the_datasets_cache(tmp_path, hf_home):
    cache_prepared(hf_home, repo_with_data_shards(tmp_path / "tiny-chat"))
    opened = hub_datasets.open_hub(REPO_ID)
    assert opened.where == "datasets cache" and opened.revision == COMMIT
    report = LoadReport()
    records = load_records(REPO_ID, report=report)
    assert instructions(records) == ["Say one", "Say two", "Say three"]
    assert [r["source"] for r in records] == [{"file": REPO_ID, "row": i} for i in range(3)]
    assert report.revisions == {REPO_ID: COMMIT} and report.kinds == {REPO_ID: "hub"}
    assert instructions(load_records(REPO_ID, split="test")) == ["Say four"]
    # The run's hash names the commit it read.
    assert dataset_hash(REPO_ID, revisions=report.revisions) == dataset_hash(REPO_ID, revision=COMMIT)
    assert dataset_hash(REPO_ID, revisions=report.revisions) != dataset_hash(REPO_ID)
    # A pinned revision that the cache does not hold is not replaced by the one it does.
    with pytest.raises(DataError, match=f"the cache holds commit {COMMIT} of this dataset, not the "
                                        f"revision '{OTHER_COMMIT}'"):
        load_records(REPO_ID, revision=OTHER_COMMIT)
    assert len(load_records(REPO_ID, revision=COMMIT)) == 3


def test_offline_a_downloaded_snapshot_loads_from_the_hub_cache(tmp_path, hf_home):
    cache_snapshot(hf_home, repo_with_configs(tmp_path / "repo"))
    opened = hub_datasets.open_hub(REPO_ID)
    assert opened.where == "hub cache" and opened.revision == COMMIT
    report = LoadReport()
    spec = SourceSpec(label="chat-fr", name=REPO_ID, config="fr")
    records = list(iter_source(spec, report=report))
    assert instructions(records) == ["Dis un", "Dis deux"]
    assert records[1]["source"] == {"file": REPO_ID, "row": 1, "label": "chat-fr"}
    assert report.revisions == {REPO_ID: COMMIT}
    assert instructions(load_records(REPO_ID, revision="main", split="test")) == ["Say four"]
    assert instructions(load_records(REPO_ID, data_files=["fr/*.parquet"])) == ["Dis un", "Dis deux"]
    with pytest.raises(DataError, match="this Hub dataset \\(revision 'v2'\\) is not in the Hugging Face cache"):
        load_records(REPO_ID, revision="v2")


def test_offline_the_datasets_cache_and_the_snapshot_together(tmp_path, hf_home):
    """Both caches, as an online load leaves them: the prepared copy is read; a configuration
    it was not prepared for comes from the snapshot."""
    repo = repo_with_configs(tmp_path / "tiny-chat")
    cache_snapshot(hf_home, repo)
    assert cache_prepared(hf_home, repo, config="en").parts[-3] == "en"
    assert hub_datasets.open_hub(REPO_ID).where == "datasets cache"
    fr = hub_datasets.open_hub(REPO_ID, config="fr")
    assert fr.where == "hub cache" and [v["output"] for _, v in fr.rows] == ["un", "deux"]


# ---- (c) offline and not cached -----------------------------------------------------------------

@pytest.mark.parametrize("variable", ["HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"])
def test_offline_and_not_cached_is_one_fast_line(hf_home, monkeypatch, variable):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if variable == "HF_HUB_OFFLINE" else "")
    monkeypatch.setenv(variable, "1")
    started = time.monotonic()
    with pytest.raises(DataError) as err:
        load_records("someone/not-cached")
    assert time.monotonic() - started < 5
    error = err.value
    assert "\n" not in error.message and error.file == "someone/not-cached"
    assert error.message == (f"this Hub dataset is not in the Hugging Face cache ({hf_home / 'datasets'} "
                             f"or {hf_home / 'hub'}), and {variable}=1 is set, so nothing is downloaded")
    assert "hf download someone/not-cached --repo-type dataset" in error.hint


def test_the_command_line_says_it_in_one_line_without_a_traceback(tmp_path):
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "workbench", "data", "inspect", "someone/not-cached"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("error: someone/not-cached: this Hub dataset is not in the Hugging "
                               "Face cache"), proc.stderr
    assert lines[0].endswith("HF_HUB_OFFLINE=1 is set, so nothing is downloaded")
    assert "Traceback" not in proc.stderr and time.monotonic() - started < 60


# ---- (d) the Hub's refusals, said in a sentence -------------------------------------------------

def hub_refusal(status: int, code: str | None, message: str, url: str):
    """The exception huggingface_hub raises for this answer: hf_raise_for_status on a response
    as the Hub sends it (X-Error-Code / X-Error-Message headers)."""
    import httpx2
    from huggingface_hub.utils import hf_raise_for_status

    headers = {"X-Error-Message": message, "X-Request-Id": "test-request"}
    if code:
        headers["X-Error-Code"] = code
    response = httpx2.Response(status, headers=headers, request=httpx2.Request("GET", url))
    with pytest.raises(Exception) as raised:
        hf_raise_for_status(response)
    return raised.value


def wrapped_as_datasets_does(err: Exception, text: str) -> Exception:
    """datasets re-raises Hub refusals as DatasetNotFoundError `from` the Hub's error."""
    from datasets.exceptions import DatasetNotFoundError

    try:
        raise DatasetNotFoundError(text) from err
    except DatasetNotFoundError as wrapped:
        return wrapped


URL = "https://huggingface.co/api/datasets/org/x/revision/main"


@pytest.mark.parametrize(("status", "code", "said", "expected", "hint"), [
    (401, "GatedRepo", "Access to dataset org/x is restricted. You must have access to it and be authenticated to access it. Please log in.",
     "is a gated dataset on the Hugging Face Hub, and this request was not authenticated (the Hub says: Access to dataset org/x is restricted",
     "set HF_TOKEN in the environment"),
    (403, "GatedRepo", "Access to dataset org/x is restricted and you are not in the authorized list.",
     "is a gated dataset on the Hugging Face Hub, and your account is not (yet) allowed to read it",
     "ask for access at https://huggingface.co/datasets/org/x"),
    (404, "RepoNotFound", "Repository not found",
     "no such dataset on the Hugging Face Hub, or it is private and this request may not read it",
     "check the name at https://huggingface.co/datasets/org/x"),
    (404, "RevisionNotFound", "Invalid rev id: v9",
     "the Hub has no revision 'v9' of this dataset (the Hub says: Invalid rev id: v9)",
     "branch, tag or commit"),
    (429, None, "Too many requests", "the Hugging Face Hub is rate-limiting this machine", "wait a few minutes"),
    (503, None, "Service unavailable", "the Hugging Face Hub answered HTTP 503: Service unavailable",
     "status.huggingface.co"),
])
def test_hub_refusals_become_one_sentence(status, code, said, expected, hint):
    from huggingface_hub import errors as hf

    err = hub_refusal(status, code, said, URL)
    assert isinstance(err, hf.HfHubHTTPError)
    for raised in (err, wrapped_as_datasets_does(err, "Dataset 'org/x' doesn't exist on the Hub")):
        error = hub_datasets.load_error(raised, "org/x", revision="v9")
        assert error.file == "org/x" and expected in error.message
        assert "\n" not in error.message and "Traceback" not in str(error)
        assert hint in error.hint


class _GatedHub(http.server.BaseHTTPRequestHandler):
    """A server that answers every request as the Hub answers for a gated dataset."""

    def _refuse(self):
        self.send_response(401)
        self.send_header("X-Error-Code", "GatedRepo")
        self.send_header("X-Error-Message", "Access to dataset org/gated is restricted. "
                                             "You must have access to it and be authenticated to access it. Please log in.")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_POST = _refuse

    def log_message(self, *args):
        pass


def test_a_gated_dataset_through_the_real_library_is_one_sentence(tmp_path):
    """`workbench data inspect org/gated` online, with HF_ENDPOINT on a local server that
    answers as the Hub does for a gated dataset: datasets and huggingface_hub run as usual."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GatedHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {k: v for k, v in os.environ.items()
               if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN")
               and not k.lower().endswith("_proxy")}
        env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=f"http://127.0.0.1:{server.server_port}",
                   HF_HUB_DISABLE_TELEMETRY="1")
        proc = subprocess.run([sys.executable, "-m", "workbench", "data", "inspect", "org/gated"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    finally:
        server.shutdown()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    first = next(line for line in proc.stderr.splitlines() if line.startswith("error:"))
    # datasets re-raises the Hub's GatedRepoError `from None`: its words are what is left.
    assert first == ("error: org/gated: is a gated dataset on the Hugging Face Hub, and this "
                     "request was not authenticated"), proc.stderr
    assert "accept its conditions at https://huggingface.co/datasets/org/gated" in proc.stderr
    assert "set HF_TOKEN in the environment" in proc.stderr


# ---- profile check ------------------------------------------------------------------------------

def test_profile_check_names_cached_and_uncached_hub_data(tmp_path, hf_home):
    from workbench import profile as P

    cache_snapshot(hf_home, repo_with_configs(tmp_path / "repo"))
    text = ('[model]\nname_or_path = "./model"\n\n[data]\n'
            f'[[data.sources]]\nname = "{REPO_ID}"\nweight = 1\n'
            '[[data.sources]]\nname = "someone/not-cached"\nweight = 1\n')
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    path = tmp_path / "p.toml"
    path.write_text(text)
    issues = P.check_hub_ids(P.load_profile(path))
    assert [i.key for i in issues] == ["data.sources"]
    (issue,) = issues
    assert "[1] 'someone/not-cached' is not in the Hugging Face cache" in issue.message
    assert "HF_HUB_OFFLINE=1" in issue.message and REPO_ID not in issue.message
    json.dumps([i.message for i in issues])  # plain strings


def test_a_bad_row_of_a_hub_dataset_is_placed_by_its_row(tmp_path, hf_home):
    repo = tmp_path / "messy"
    (repo / "data").mkdir(parents=True)
    (repo / "data" / "train.jsonl").write_text(
        '{"instruction": "Say one", "output": "one"}\n{"instruction": "Say two", "output": 2}\n')
    cache_snapshot(hf_home, repo, repo_id="org/messy")
    stream = iter(load_records("org/messy", on_bad_line="skip", report=(report := LoadReport())))
    assert [r["source"]["row"] for r in stream] == [0]
    assert report.location(*report.skipped[0][:2]) == "org/messy row 2"
    with pytest.raises(DataError, match=r"^org/messy: row 2: "):
        load_records("org/messy")


@pytest.mark.parametrize("name", ["tiny-chat", "TinyChat", "alpaca_gpt4_data", "OpenOrca", "SQuAD-v2"])
def test_the_cache_look_up_names_folders_as_datasets_does(name):
    from datasets.naming import camelcase_to_snakecase

    assert hub_datasets._snake_case(name) == camelcase_to_snakecase(name)


def test_a_run_on_a_cached_hub_dataset_records_the_commit_it_read(tmp_path, hf_home):
    """data.train = "org/name", offline, from the cache: the run's record names the commit, in
    a single-source run as in a mixture (tests/test_mixture.py)."""
    from conftest import TINY_MODEL

    from workbench.profile import profile_from_dict
    from workbench.train.plan import load_training_data

    cache_snapshot(hf_home, repo_with_data_shards(tmp_path / "tiny-chat"))
    profile = profile_from_dict({"name": "hub", "model": {"name_or_path": str(TINY_MODEL)},
                                 "data": {"train": REPO_ID, "validation_split": 0.0}})
    data = load_training_data(profile)
    assert instructions(data.train) == ["Say one", "Say two", "Say three"]
    assert data.sources == [{"label": REPO_ID, "name": REPO_ID, "revision_resolved": COMMIT}]
    assert f"data: {REPO_ID} read at commit {COMMIT}" in data.notes
    assert data.dataset_hash == dataset_hash(REPO_ID, revision=COMMIT)


def test_streaming_reads_the_data_files_without_preparing_an_arrow_copy(tmp_path, hf_home):
    """data.streaming: a Hub-layout folder and a downloaded snapshot are read straight from
    their shards (nothing prepared in the datasets cache); a copy the cache already prepared is
    read memory-mapped. The rows are the same either way, and so is the commit recorded."""
    folder = repo_with_configs(tmp_path / "repo")
    spec = SourceSpec(label="en", path=str(folder), split="test")
    assert list(iter_source(spec, streaming=True)) == list(iter_source(spec))
    prepared = hf_home / "datasets"
    before = sorted(p.name for p in prepared.rglob("*.arrow")) if prepared.exists() else []

    cache_snapshot(hf_home, repo_with_data_shards(tmp_path / "tiny-chat"))
    report = LoadReport()
    streamed = list(iter_source(SourceSpec(label="hub", name=REPO_ID), report=report,
                                streaming=True))
    assert instructions(streamed) == ["Say one", "Say two", "Say three"]
    assert report.revisions == {REPO_ID: COMMIT}
    after = sorted(p.name for p in prepared.rglob("*.arrow")) if prepared.exists() else []
    assert after == before  # the snapshot was streamed, not converted into the Arrow cache


def test_streaming_a_dataset_the_cache_prepared_reads_the_prepared_copy(tmp_path, hf_home):
    cache_prepared(hf_home, repo_with_data_shards(tmp_path / "tiny-chat"))
    report = LoadReport()
    records = list(iter_source(SourceSpec(label="hub", name=REPO_ID), report=report,
                               streaming=True))
    assert instructions(records) == ["Say one", "Say two", "Say three"]
    assert report.revisions == {REPO_ID: COMMIT}
