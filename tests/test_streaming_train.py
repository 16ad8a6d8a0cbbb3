"""Training on streamed data (data.streaming, workbench/train/streaming.py): rows read one by
one, a held-out rule that needs no pass over the data, positions in checkpoints, resume after
kill -9 at the right row, and memory that does not grow with the file."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_MODEL, workbench
from test_run_control import wait_for

from workbench.profile import ProfileError, load_profile
from workbench.train.methods.sft import with_labels


def _conversations(n: int, start: int = 0, answer: str = "") -> str:
    return "".join(json.dumps({"messages": [
        {"role": "user", "content": f"Translate to French: row {i} the cat"},
        {"role": "assistant", "content": f"ligne {i} le chat{answer}"}]}) + "\n"
        for i in range(start, start + n))


def _profile(folder: Path, body: str, name: str = "stream") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(f'name = "{name}"\n[model]\nname_or_path = "{TINY_MODEL}"\n' + body)
    return path


TRAIN = """
[train]
max_steps = {steps}
batch_size = 2
grad_accum = 2
learning_rate = 1e-3
eval_steps = 0
save_steps = 3
save_total_limit = 10
max_seq_len = 64
logging_steps = 1
device = "cpu"
precision = "fp32"
[eval]
after_training = false
"""


# ---- the profile -----------------------------------------------------------------------------

def test_streaming_without_max_steps_is_a_profile_error_naming_the_key(tmp_path):
    (tmp_path / "d.jsonl").write_text(_conversations(4))
    path = _profile(tmp_path, '[data]\ntrain = "d.jsonl"\nstreaming = true\n'
                    + TRAIN.format(steps=-1))
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    assert "train.max_steps" in str(caught.value) and "data.streaming" in str(caught.value)
    load_profile(path, overrides=["train.max_steps=5"])  # with a step count it is fine


def test_auto_streams_local_data_above_the_size(tmp_path, monkeypatch):
    import workbench.profile as profile_module
    from workbench.train.streaming import streams

    (tmp_path / "d.jsonl").write_text(_conversations(50))
    path = _profile(tmp_path, '[data]\ntrain = "d.jsonl"\nstreaming = "auto"\n'
                    + TRAIN.format(steps=4))
    profile = load_profile(path)
    assert not streams(profile)
    monkeypatch.setattr(profile_module, "STREAMING_AUTO_BYTES", 1000)
    assert streams(profile)
    assert not streams(load_profile(path, overrides=["data.streaming=false"]))


# ---- the held-out rule and the reader's positions ----------------------------------------------

def test_the_held_out_rule_is_a_share_of_rows_fixed_by_their_content():
    from workbench.train.streaming import is_held_out

    records = [{"messages": [{"role": "user", "content": f"q{i}"},
                             {"role": "assistant", "content": f"a{i}"}]} for i in range(20000)]
    held = [is_held_out(r, 0.1, seed=7) for r in records]
    assert 0.09 < sum(held) / len(held) < 0.11
    # The same rows on every pass, and an exact duplicate falls on the same side.
    assert held == [is_held_out(json.loads(json.dumps(r)), 0.1, seed=7) for r in records]
    assert not any(is_held_out(r, 0.0, seed=7) for r in records)
    assert held != [is_held_out(r, 0.1, seed=8) for r in records]  # the seed chooses others


def _mixture(tmp_path: Path, validation_split: float = 0.1):
    (tmp_path / "a.jsonl").write_text(_conversations(120))
    (tmp_path / "b.jsonl").write_text(_conversations(40, start=1000))
    path = _profile(tmp_path, f"""
[data]
validation_split = {validation_split}
[[data.sources]]
path = "a.jsonl"
weight = 3
[[data.sources]]
path = "b.jsonl"
weight = 1
""" + TRAIN.format(steps=10))
    from workbench.data.sources import sources_of
    from workbench.train.streaming import StreamingData

    profile = load_profile(path)
    return lambda cls=StreamingData: cls(profile, None, None, sources_of(profile))


def _take(iterator, n):
    out = []
    for item in iterator:
        out.append(item)
        if len(out) == n:
            break
    return out


def test_a_mixture_streams_by_weight_and_restarts_from_any_position_identically(tmp_path):
    from workbench.train.streaming import Position

    stream = _mixture(tmp_path)
    # 400 draws: more than one pass over 160 rows (pass markers have source index -1).
    run = _take(stream().records(Position(read=[0, 0])), 400)
    first_pass = [i for i, _, _ in run[:run.index((-1, {}, []))]]
    assert len(first_pass) == 160  # every row of both sources once a pass
    head = first_pass[:80]  # while both sources last, draws follow the 3:1 weights
    assert 0.65 < head.count(0) / len(head) < 0.85
    # From the position before any draw (and across the pass boundary) the stream continues
    # with exactly the rows an uninterrupted stream gives.
    passes = 0
    for k, (i, record, before) in enumerate(run):
        if i < 0:
            passes += 1
            continue
        if k in (0, 37, 150, 170, 333):
            again = _take(stream().records(Position(passes, list(before))), len(run) - k)
            assert [(i2, r2.get("messages")) for i2, r2, _ in again] == \
                   [(i3, r3.get("messages")) for i3, r3, _ in run[k:]], k


def test_a_validation_file_gives_the_held_out_rows_and_the_stream_keeps_all(tmp_path):
    from workbench.data.sources import sources_of
    from workbench.train.streaming import HELD_OUT_CAP, StreamingData, held_out_records

    (tmp_path / "d.jsonl").write_text(_conversations(300))
    (tmp_path / "v.jsonl").write_text(_conversations(HELD_OUT_CAP + 5, start=5000))
    path = _profile(tmp_path, '[data]\ntrain = "d.jsonl"\nvalidation = "v.jsonl"\n'
                    'streaming = true\n' + TRAIN.format(steps=4))
    profile = load_profile(path)
    train, held, scanned = StreamingData(profile, None, None, sources_of(profile)).scan(1000)
    assert len(train) == scanned == 300  # no row of the stream held out
    assert len(held) == HELD_OUT_CAP and "row 5000 " in held[0]["messages"][0]["content"]
    evaluation = held_out_records(profile)
    assert [r["messages"] for r in evaluation.validation] == [r["messages"] for r in held]
    assert f"{HELD_OUT_CAP} held-out rows kept" in evaluation.notes[0]


@pytest.fixture(scope="module")
def tokenizer_and_format():
    from transformers import AutoTokenizer

    from workbench.data.chat_format import chat_format

    tokenizer = AutoTokenizer.from_pretrained(str(TINY_MODEL))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, chat_format(tokenizer)


@pytest.mark.parametrize("packed", [False, True])
def test_examples_resume_from_a_saved_position_exactly(tmp_path, tokenizer_and_format, packed):
    """Positions written as a checkpoint would write them: a new stream started there hands out
    the examples the uninterrupted stream handed out next, packs and held-out rows included."""
    tokenizer, fmt = tokenizer_and_format
    make = _mixture(tmp_path)

    def stream():
        s = make()
        s.tokenizer, s.fmt, s.packed, s.label = tokenizer, fmt, packed, with_labels
        return s

    reference = stream()
    examples = _take(reference.examples(), 150)
    held = {json.dumps(r["messages"]) for r in reference.scan()[1]}
    for n in (1, 40, 97, 149):
        reference.save_position(tmp_path, n)
        saved = json.loads((tmp_path / "stream_position.json").read_text())
        assert saved["examples"] == n and saved["next_row"] == sum(saved["read"])
        resumed = stream()
        at = resumed.resume_from(tmp_path)
        assert at.row == saved["next_row"]
        assert _take(resumed.examples(), 150 - n) == examples[n:], n
    # Held-out rows are never trained: their tokens never start an example's rows.
    trained = {tuple(e["input_ids"]) for e in examples} if not packed else set()
    for record_text in held:
        rows = with_labels(reference.render({"messages": json.loads(record_text)}))
        assert not any(tuple(r["input_ids"]) in trained for r in rows)


def test_a_checkpoint_without_a_stream_position_is_refused_with_a_reason(tmp_path):
    from workbench.train.checkpoints import CheckpointError
    from workbench.train.streaming import POSITION_FILE

    stream = _mixture(tmp_path)()
    (tmp_path / "checkpoint-5").mkdir()
    with pytest.raises(CheckpointError) as caught:
        stream.resume_from(tmp_path / "checkpoint-5")
    assert POSITION_FILE in caught.value.message and "--from" in caught.value.hint
    (tmp_path / "checkpoint-5" / POSITION_FILE).write_text(json.dumps(
        {"passes": 0, "read": [3], "part": 0, "examples": 2, "rows": 2, "sources": ["x.jsonl"]}))
    with pytest.raises(CheckpointError, match="is for the sources"):
        stream.resume_from(tmp_path / "checkpoint-5")


def test_a_record_rendered_into_several_rows_resumes_between_them(tmp_path, tokenizer_and_format):
    """Position bookkeeping only: a conversation the renderer splits into several rows (as it
    does for templates that drop earlier reasoning) can be cut by a checkpoint."""
    from workbench.train import streaming

    tokenizer, fmt = tokenizer_and_format
    make = _mixture(tmp_path, validation_split=0)

    class Split(streaming.StreamingData):
        def render(self, record):
            rows = super().render(record)
            return rows + [{**r, "assistant_masks": [0] + r["assistant_masks"][1:]} for r in rows]

    def stream():
        s = make(Split)
        s.tokenizer, s.fmt, s.label = tokenizer, fmt, with_labels
        return s

    reference = stream()
    examples = _take(reference.examples(), 21)
    reference.save_position(tmp_path, 7)  # after the first row of the 4th record
    saved = json.loads((tmp_path / "stream_position.json").read_text())
    assert saved["part"] == 1 and saved["next_row"] == 3
    resumed = stream()
    resumed.resume_from(tmp_path)
    assert _take(resumed.examples(), 14) == examples[7:]


# ---- end to end: memory, kill -9 and resume ----------------------------------------------------

def _peak_rss_of(args: list[str], cwd: Path) -> tuple[int, subprocess.CompletedProcess]:
    """Run the workbench in a fresh wrapper process whose only child is the run: its
    RUSAGE_CHILDREN peak is the run's peak resident memory (bytes)."""
    script = ("import json, resource, subprocess, sys\n"
              "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
              "print(json.dumps([resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,"
              " p.returncode, p.stdout, p.stderr]))\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    out = subprocess.run([sys.executable, "-c", script, sys.executable, "-m", "workbench", *args],
                         cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=True)
    peak, code, stdout, stderr = json.loads(out.stdout)
    return peak, subprocess.CompletedProcess(args, code, stdout, stderr)


MEMORY_CAP = 900 * 1024**2  # the run must stay under this; the file is larger


@pytest.mark.slow
def test_a_file_larger_than_the_memory_cap_trains_under_it(tmp_path):
    # ~1 GB of conversations with long answers (cut at max_seq_len): loading them all would
    # take several times the file's size; the stream holds a batch and 1000 held-out rows.
    data = tmp_path / "big.jsonl"
    block = _conversations(1000, answer=" " + "très long " * 100)
    with open(data, "w") as fh:
        while fh.tell() < MEMORY_CAP + 100 * 1024**2:
            fh.write(block)
    assert data.stat().st_size > MEMORY_CAP
    profile = _profile(tmp_path, '[data]\ntrain = "big.jsonl"\nstreaming = true\n'
                       + TRAIN.format(steps=6))
    peak, proc = _peak_rss_of(["run", str(profile), "--runs-dir", "runs"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "data: streaming" in proc.stdout and "1000 held-out rows kept" in proc.stdout
    assert peak < MEMORY_CAP, f"peak resident memory {peak / 2**20:.0f} MiB"
    run = next((tmp_path / "runs").iterdir())
    position = json.loads((run / "checkpoints" / "checkpoint-6" / "stream_position.json").read_text())
    assert position["examples"] == 6 * 2 * 2  # steps x grad_accum x batch_size
    assert 0 < position["next_row"] < 1000  # a few dozen rows of the file were read to train


def _wait(predicate):
    return wait_for(predicate, timeout=180)


def _status(run: Path) -> dict:
    try:
        return json.loads((run / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _losses(run: Path) -> dict[int, float]:
    events = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    return {e["step"]: e["loss"] for e in events if e["type"] == "log"}


def _position(run: Path, step: int) -> dict:
    return json.loads((run / "checkpoints" / f"checkpoint-{step}" / "stream_position.json").read_text())


def _run_until(profile: Path, runs: str, cwd: Path, step: int) -> Path:
    workbench("run", str(profile), "--runs-dir", runs, "--detach", cwd=cwd, check=True)
    run = next((cwd / runs).iterdir())
    _wait(lambda: (run / "checkpoints" / f"checkpoint-{step}").is_dir())
    workbench("stop", run.name, "--runs-dir", runs, cwd=cwd, check=True)
    _wait(lambda: _status(run).get("state") == "stopped")
    return run


@pytest.mark.slow
def test_kill_9_then_resume_continues_the_stream_at_the_recorded_row(tmp_path):
    (tmp_path / "d.jsonl").write_text(_conversations(3000))
    # Long enough not to finish while the test watches; both runs are stopped at step 12+.
    profile = _profile(tmp_path, '[data]\ntrain = "d.jsonl"\nstreaming = true\n'
                       + TRAIN.format(steps=400))
    reference = _run_until(profile, "ref", tmp_path, 12)

    workbench("run", str(profile), "--runs-dir", "runs", "--detach", cwd=tmp_path, check=True)
    run = next((tmp_path / "runs").iterdir())
    _wait(lambda: (run / "checkpoints" / "checkpoint-3").is_dir())
    os.kill(_status(run)["pid"], signal.SIGKILL)
    _wait(lambda: json.loads(workbench("runs", "--json", "--runs-dir", "runs", cwd=tmp_path)
                             .stdout)[0]["state"] == "interrupted")
    killed_at = max(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("checkpoint-*"))
    assert killed_at < 12
    saved = _position(run, killed_at)

    workbench("resume", run.name, "--runs-dir", "runs", "--detach", cwd=tmp_path, check=True)
    _wait(lambda: (run / "checkpoints" / "checkpoint-12").is_dir())
    workbench("stop", run.name, "--runs-dir", "runs", cwd=tmp_path, check=True)
    _wait(lambda: _status(run).get("state") == "stopped")

    # The log says where the stream resumed: the row recorded in the checkpoint, not row 0.
    log = (run / "stdout.log").read_text()
    said = re.findall(r"resuming the stream at row (\d+)", log)
    assert said == [str(saved["next_row"])] and saved["next_row"] > 0, log[-2000:]
    assert f"resuming from checkpoint-{killed_at}" in log
    # The rows consumed after the resume are the uninterrupted run's: the same positions at
    # every later checkpoint, and the same losses step by step.
    for step in range(killed_at + 3, 13, 3):
        assert _position(run, step) == _position(reference, step), step
    assert _position(run, 12)["examples"] == 12 * 2 * 2
    ref_losses, losses = _losses(reference), _losses(run)
    for step in range(killed_at + 1, 13):
        assert losses[step] == pytest.approx(ref_losses[step], rel=1e-4), step
