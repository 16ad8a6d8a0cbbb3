"""Raw text / continued pretraining (issue 27, item 4): documents from JSON Lines `text` rows, a
.txt / .md file or a folder of them; tokenized without the chat template, joined with the
end-of-text token and cut into max_seq_len blocks, every token trained; inspect counts
documents, tokens and blocks; held-out documents never train; a run's report gives held-out
perplexity, base against fine-tuned, with its interval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO, SHARED_DATA, TINY_MODEL, workbench

C4 = SHARED_DATA / "c4_demo.jsonl"
EXAMPLE = REPO / "profiles" / "examples" / "continued-pretraining.toml"

DOCS = {  # distinct enough that no two are near duplicates (the split groups those)
    "a.txt": "The harbour master counted forty boats before the storm reached the pier.\n",
    "notes/b.md": "# Soil\n\nClay holds water; sand lets it drain. Gardeners mix both.\n",
    "notes/c.md": "Violins are tuned in fifths: G, D, A and E, from the lowest string up.\n",
    "d.txt": "Copper turns green because it reacts with carbon dioxide and moisture.\n",
    "e.markdown": "A marathon is 42.195 kilometres, a distance fixed at the 1908 Olympics.\n",
    "f.txt": "Bees dance to tell the hive where flowers are, and how far away they lie.\n",
}


def c4() -> Path:
    if not C4.is_file():
        pytest.skip(f"the shared sample {C4} is not present")
    return C4


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(TINY_MODEL))


def text_folder(root: Path) -> Path:
    folder = root / "corpus"
    for name, text in DOCS.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text, encoding="utf-8")
    (folder / ".hidden.txt").write_text("an editor's swap file, not a document", encoding="utf-8")
    (folder / "script.py").write_text("print('not text data')\n", encoding="utf-8")
    return folder


# ---- reading documents ------------------------------------------------------------------------


def test_a_folder_of_txt_and_md_files_loads_one_document_a_file(tmp_path):
    from workbench.data.load import LoadReport, load_records

    folder = text_folder(tmp_path)
    report = LoadReport()
    records = load_records(folder, report=report)
    # Sorted by path, hidden files and non-text files left out, each file whole.
    assert [r["messages"][-1]["content"] for r in records] == [DOCS[n] for n in sorted(DOCS)]
    assert all(r["text_only"] for r in records)  # detected as text with data.format = "auto"
    assert report.kinds[str(folder)] == "text"
    one = load_records(folder / "notes" / "b.md")
    assert [r["messages"][-1]["content"] for r in one] == [DOCS["notes/b.md"]]


def test_a_folder_with_data_files_is_not_read_as_documents(tmp_path):
    from workbench.data import DataError
    from workbench.data.load import LoadReport, load_records
    from workbench.data.raw_text import is_text_path

    folder = text_folder(tmp_path)
    (folder / "extra.jsonl").write_text('{"text": "x"}\n', encoding="utf-8")
    assert not is_text_path(folder)  # Hub-layout and saved folders are never text folders
    report = LoadReport()
    try:  # the folder is then the data folders' business (readers.open_source), not ours
        load_records(folder, report=report)
    except DataError:
        return
    assert report.kinds[str(folder)] != "text"


def test_an_empty_document_names_its_file_and_can_be_skipped(tmp_path):
    from workbench.data import DataError
    from workbench.data.load import LoadReport, load_records

    folder = text_folder(tmp_path)
    (folder / "notes" / "empty.md").write_text("  \n", encoding="utf-8")
    with pytest.raises(DataError, match="notes/empty.md: the file holds no text"):
        load_records(folder)
    report = LoadReport()
    assert len(load_records(folder, on_bad_line="skip", report=report)) == len(DOCS)
    assert "notes/empty.md" in report.skipped[0][2]


# ---- tokens and blocks ------------------------------------------------------------------------


def test_blocks_are_exactly_max_seq_len_and_joined_with_eos(tmp_path, tokenizer):
    from workbench.data.load import load_records
    from workbench.data.raw_text import pack_blocks, prepare_text
    from workbench.train.methods.sft import with_labels

    records = load_records(text_folder(tmp_path))
    # The tiny model's eos_token is its end of turn (<|im_end|>); documents are joined with
    # the end-of-text token it also ships, as pretraining data is.
    assert tokenizer.eos_token == "<|im_end|>"
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    text = prepare_text(records, [], tokenizer, 16)
    assert text.eos == eos and text.eos_text == "<|endoftext|>"
    assert text.train.blocks and all(len(b) == 16 for b in text.train.blocks)
    # The blocks are the documents' own tokens (no chat template, no special tokens added),
    # each document followed by one end-of-text token, in order, cut every 16 tokens; the last
    # partial block is dropped and counted.
    stream = []
    for name in sorted(DOCS):
        stream += tokenizer(DOCS[name], add_special_tokens=False)["input_ids"] + [eos]
    joined = [t for b in text.train.blocks for t in b]
    assert joined == stream[:len(joined)]
    assert text.train.dropped == len(stream) - len(joined) == len(stream) % 16
    assert text.train.tokens == len(stream) - len(DOCS) and text.train.documents == len(DOCS)
    assert not any("<|im_start|>" in tokenizer.decode(b) for b in text.train.blocks)
    # Every token trained: the labels are the inputs (the first is never a target in a causal
    # LM's shifted loss, whatever it holds).
    for row in with_labels(text.train.rows()):
        assert row["labels"][1:] == row["input_ids"][1:]
    # Held-out text keeps its last partial block: every held-out token is scored.
    kept = pack_blocks([[1, 2, 3], [4, 5]], eos, 4, keep_last=True)
    assert kept.blocks == [[1, 2, 3, eos], [4, 5, eos]] and kept.dropped == 0


def test_inspect_counts_documents_tokens_and_blocks_of_c4(tokenizer, tmp_path):
    path = c4()
    texts = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]
    tokens = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    proc = workbench("data", "inspect", str(path), "--model", str(TINY_MODEL),
                     "--max-seq-len", "128", "--json", cwd=tmp_path, check=True)
    report = json.loads(proc.stdout)
    assert report["format"] == "text" and report["documents"] == len(texts) == 300
    assert report["tokens"] == tokens
    assert report["blocks"] == (tokens + 300) // 128  # one end-of-text token per document
    assert report["dropped"] == (tokens + 300) % 128
    assert report["eos"] == "<|endoftext|>"
    text = workbench("data", "inspect", str(path), "--model", str(TINY_MODEL), "--max-seq-len",
                     "128", cwd=tmp_path, check=True).stdout
    assert "documents: 300" in text and f"blocks: {(tokens + 300) // 128:,} of 128" in text


# ---- training and the held-out perplexity -----------------------------------------------------


def test_the_interval_decides_whether_perplexity_fell():
    from workbench.evaluate.text_perplexity import paired_bootstrap, text_verdict

    tokens = [100] * 20
    base = [300.0 + 10 * (i % 5) for i in range(20)]  # about 3.2 nats a token: ppl ~ 25
    same = paired_bootstrap(base, base, tokens, seed=1)
    assert same["change"]["interval"] == [0.0, 0.0] and not text_verdict(same)["fell"]
    assert "did not change measurably" in text_verdict(same)["text"]
    noisy = paired_bootstrap(base, [b + (40 if i % 2 else -40) for i, b in enumerate(base)],
                             tokens, seed=1)  # up on half the blocks, down on the others
    assert noisy["change"]["interval"][0] < 0 < noisy["change"]["interval"][1]
    assert not text_verdict(noisy)["fell"]
    lower = paired_bootstrap(base, [b - 50 for b in base], tokens, seed=1)
    assert lower["fine-tuned"]["ppl"] == pytest.approx(
        2.718281828 ** ((sum(base) - 50 * 20) / 2000), rel=1e-4)  # token-weighted
    assert lower["change"]["interval"][1] < 0 and text_verdict(lower)["fell"]
    assert text_verdict(lower)["text"].startswith("held-out perplexity fell")


def _plan(runs: Path, data: Path, overrides: list[str] = ()):
    from workbench.profile import load_profile
    from workbench.train.plan import plan_run

    # The example profile, made quicker: what a person would start from.
    profile = load_profile(EXAMPLE, [
        f'model.name_or_path="{TINY_MODEL}"', f'data.train="{data}"', "train.max_seq_len=128",
        "train.batch_size=4", "train.grad_accum=1", "train.learning_rate=2e-3",
        'train.scheduler="constant"', "train.warmup_ratio=0", "train.eval_steps=0",
        "train.logging_steps=5", "train.save_steps=1000", 'train.device="cpu"',
        'train.precision="fp32"', "train.gradient_checkpointing=false", "lora.r=16",
        "lora.alpha=32", "eval.max_test_rows=64", f'train.runs_dir="{runs}"', *overrides])
    return plan_run(profile)


def test_held_out_documents_are_never_trained(tmp_path, tokenizer):
    from workbench.train.plan import load_training_data

    folder = text_folder(tmp_path)
    plan = _plan(tmp_path / "runs", folder, ["data.validation_split=0.34",
                                             "train.max_seq_len=16"])
    data = load_training_data(plan.profile)
    assert len(data.validation) == 2 and len(data.train) == len(DOCS) - 2
    train_text = tokenizer.decode([t for r in plan.train_rows for t in r["input_ids"]])
    held_text = tokenizer.decode([t for r in plan.eval_rows for t in r["input_ids"]])
    for record in data.validation:
        doc = record["messages"][-1]["content"]
        assert doc in held_text and doc not in train_text
    assert all(len(r["input_ids"]) == 16 for r in plan.train_rows)
    assert any("raw text" in note and "'<|endoftext|>'" in note for note in plan.notes)


@pytest.mark.slow
def test_c4_trains_the_tiny_model_and_held_out_perplexity_falls(tmp_path):
    from workbench.evaluate.evaluation import evaluate_run
    from workbench.pipeline.run import run_pipeline
    from workbench.train.control import create_run

    plan = _plan(tmp_path, c4(), ["train.max_steps=12"])
    assert all(len(r["input_ids"]) == 128 for r in plan.train_rows)
    run = create_run(plan, tmp_path)
    assert run_pipeline(run, plan) == "finished"

    report = json.loads((run.path / "report.json").read_text())
    text = report["evaluation"]["text"]
    assert text["documents"] == 30 and text["blocks"] == 64  # 10% of 300 documents, capped
    assert text["fine-tuned"]["ppl"] < text["base"]["ppl"]
    assert text["change"]["interval"][1] < 0 and text["fell"] is True
    assert report["verdict"].startswith("held-out perplexity fell")
    md = (run.path / "report.md").read_text()
    assert "| base |" in md and "| fine-tuned |" in md and "95% interval" in md
    log = run.log_path.read_text()
    assert "joined with '<|endoftext|>'" in log  # the end-of-text token, said in the run's log

    # `workbench eval RUN` later packs the held-out text again: the same blocks, the same numbers.
    again = evaluate_run(run, device="cpu", write=False)["text"]
    assert again["blocks"] == text["blocks"] and again["tokens"] == text["tokens"]
    assert again["base"]["ppl"] == pytest.approx(text["base"]["ppl"], rel=1e-3)
    assert again["fine-tuned"]["ppl"] == pytest.approx(text["fine-tuned"]["ppl"], rel=1e-3)


@pytest.mark.real
def test_c4_on_smollm2_lowers_held_out_perplexity(tmp_path):
    """The real tier (`make test-real`): SmolLM2-135M-Instruct's own tokenizer and end-of-text
    token, 20 steps of 2 blocks of 256 tokens (about 2.5 minutes on 2 CPU cores); measured:
    49.92 -> 44.59 (-10.7%, 95% interval -12.0% to -9.4%)."""
    import os

    from workbench.models.smollm2 import model_dir
    from workbench.pipeline.run import run_pipeline
    from workbench.train.control import create_run

    model = model_dir()
    if not (model / "config.json").is_file():
        if os.environ.get("WORKBENCH_REAL") == "1":
            pytest.fail(f"the converted SmolLM2 model is missing at {model}")
        pytest.skip(f"the converted SmolLM2 model is not at {model}")
    plan = _plan(tmp_path, c4(), [f'model.name_or_path="{model}"', "train.max_seq_len=256",
                                  "train.batch_size=2", "train.learning_rate=3e-4",
                                  "train.max_steps=20", 'lora.target_modules="all-linear"',
                                  "eval.max_test_rows=32"])
    # SmolLM2-Instruct's eos_token is <|im_end|> (end of turn); its pretraining documents
    # were separated by <|endoftext|> (token 0).
    assert any("'<|endoftext|>' (token 0)" in note for note in plan.notes)
    run = create_run(plan, tmp_path)
    assert run_pipeline(run, plan) == "finished"
    text = json.loads((run.path / "report.json").read_text())["evaluation"]["text"]
    assert text["fell"] and text["change"]["pct_interval"][1] < -2, text


@pytest.mark.slow
def test_a_folder_of_markdown_trains_without_the_shared_samples(tmp_path):
    """Continued pretraining on bundled text (this repository's own Markdown, one document a
    file), so a fresh clone runs it: the run finishes and held-out perplexity falls."""
    import shutil

    from workbench.pipeline.run import run_pipeline
    from workbench.train.control import create_run

    repo = Path(__file__).resolve().parents[1]
    corpus = tmp_path / "docs"
    corpus.mkdir()
    for doc in sorted((repo / "bench").glob("*.md")) + [repo / "README.md"]:
        shutil.copy(doc, corpus / doc.name)
    plan = _plan(tmp_path, corpus, ["train.max_steps=8", "data.validation_split=0.2"])
    assert any("raw text" in note for note in plan.notes)
    run = create_run(plan, tmp_path)
    assert run_pipeline(run, plan) == "finished"
    text = json.loads((run.path / "report.json").read_text())["evaluation"]["text"]
    assert text["documents"] >= 2
    assert text["fine-tuned"]["ppl"] < text["base"]["ppl"] and text["fell"] is True
