"""`workbench export --format gguf [--quant ...]` through llama.cpp's own converter and
quantizer, proven by llama.cpp itself (llama-cpp-python) to answer like the trained model.

The converter is found in llama-cpp-python's source tree (`python -m workbench.export.llamacpp`
unpacks it into ~/.cache/workbench); tests that need it, or the llama-cpp-python runtime,
skip when they are absent (CI installs both). The full path runs on the bundled tiny model
(its SentencePiece tokenizer is llama.cpp's `llama` vocabulary) and on SmolLM2-135M-Instruct
(tier `real`), whose BPE tokenizer llama.cpp knows by its hash; a byte-level BPE it does not
know is refused by the converter, and that refusal must be explained as the tokenizer.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
from pathlib import Path

import pytest
from conftest import REPO, TINY_MODEL
from test_export_support import edit_adapter_config, make_run

from workbench.export.cli import main
from workbench.export.llamacpp import find_converter

CONVERTER = find_converter()
HAVE_RUNTIME = importlib.util.find_spec("llama_cpp") is not None
HAVE_SENTENCEPIECE = importlib.util.find_spec("sentencepiece") is not None
needs_converter = pytest.mark.skipif(
    CONVERTER is None or not HAVE_SENTENCEPIECE,
    reason="llama.cpp's converter or sentencepiece is absent (python -m workbench.export.llamacpp)")


def _export(capsys, *argv):
    code = main([*map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("runs"), r=8)
    assert main([str(run.path), "--format", "merged"]) == 0
    return run


def _with_tokenizer(folder: Path, build) -> None:
    """Replace `folder`'s tokenizer files with what `build(folder)` saves."""
    for name in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    build(folder)


@pytest.fixture
def swapped_tokenizer_run(tiny_run, tmp_path):
    """tiny_run with its merged export's tokenizer swapped; restored afterwards."""
    import shutil

    merged = tiny_run.path / "export" / "merged"
    saved = tmp_path / "merged-kept"
    shutil.copytree(merged, saved)
    yield tiny_run
    shutil.rmtree(merged)
    shutil.copytree(saved, merged)
    shutil.rmtree(tiny_run.path / "export" / "gguf", ignore_errors=True)


@needs_converter
def test_refused_tokenizer_is_named_as_the_cause(swapped_tokenizer_run, tmp_path, capsys):
    """The real converter on a model whose tokenizer is a byte-level BPE that llama.cpp's table
    does not know (the tiny model with its tokenizer swapped for one from tests/_tokenizers.py,
    in the base model and the merged export alike). The message says it is the tokenizer (not
    the architecture or the installation) and what to do; nothing is written."""
    import shutil

    from _tokenizers import build_chatml_tokenizer

    from workbench.profile import load_profile, save_profile

    run = swapped_tokenizer_run
    base = tmp_path / "bpe-base"
    shutil.copytree(TINY_MODEL, base)
    _with_tokenizer(base, build_chatml_tokenizer)
    _with_tokenizer(run.path / "export" / "merged", build_chatml_tokenizer)
    profile = load_profile(run.profile_path)
    kept = profile.model.name_or_path
    profile.model.name_or_path = str(base)  # the adapter names its base too: both move
    save_profile(profile, run.profile_path)
    edit_adapter_config(run, base_model_name_or_path=str(base))
    try:
        code, out, err = _export(capsys, run.path, "--format", "gguf")
    finally:
        profile.model.name_or_path = kept
        save_profile(profile, run.profile_path)
        edit_adapter_config(run, base_model_name_or_path=kept)
    assert code == 2, err
    assert "does not recognize this model's tokenizer" in err
    assert "architecture and your llama.cpp installation are fine" in err
    assert "SentencePiece" in err and "convert_hf_to_gguf_update.py" in err
    assert "Traceback (most recent call last)" not in err.split("said:")[0]
    assert not (run.path / "export" / "gguf").exists()


@needs_converter
@pytest.mark.skipif(not HAVE_RUNTIME, reason="llama-cpp-python is not installed")
def test_a_gguf_llama_cpp_aborts_on_is_an_error_not_a_crash(swapped_tokenizer_run, capsys):
    """A merged export whose tokenizer.json no longer matches the base's tokenizer.model: the
    converter writes a GGUF on which llama.cpp calls abort() when loading it. That must end the
    export with a message (exit 2, nothing written), not take the process down."""
    from _tokenizers import build_chatml_tokenizer

    run = swapped_tokenizer_run
    _with_tokenizer(run.path / "export" / "merged", build_chatml_tokenizer)
    code, out, err = _export(capsys, run.path, "--format", "gguf")
    assert code == 2, err
    assert "llama.cpp stopped (aborted) while loading" in err and "tokenizer" in err
    assert not (run.path / "export" / "gguf").exists()


@needs_converter
def test_unknown_quant_is_refused_before_work(tiny_run, capsys):
    code, out, err = _export(capsys, tiny_run.path, "--format", "gguf", "--quant", "q3_XXL")
    assert code == 2 and "unknown --quant 'q3_XXL'" in err and "q4_K_M" in err
    assert not (tiny_run.path / "export" / "gguf").exists()


def test_quant_without_gguf_is_refused(tiny_run, capsys):
    code, out, err = _export(capsys, tiny_run.path, "--format", "vllm", "--quant", "q4_K_M")
    assert code == 2 and "add --format gguf" in err


@pytest.mark.skipif(not HAVE_SENTENCEPIECE, reason="sentencepiece is absent")
def test_installed_protobuf_reads_a_sentencepiece_model_as_the_converter_does():
    """llama.cpp's requirements pin protobuf < 5, the `gguf` extra does not: the converter's
    protobuf path (sentencepiece_model_pb2, used for T5 / BERT / InternLM vocabularies) must
    work with whatever protobuf the extra installed."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString((TINY_MODEL / "tokenizer.model").read_bytes())
    assert len(proto.pieces) == 768 and proto.trainer_spec.byte_fallback


def test_converter_is_found_in_a_llama_cpp_python_source_tree(tmp_path, monkeypatch):
    from workbench.export import llamacpp

    tree = tmp_path / "llama-cpp-python-9.9.9" / "vendor" / "llama.cpp"
    tree.mkdir(parents=True)
    (tree / "convert_hf_to_gguf.py").write_text("")
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(llamacpp, "COMMON_PLACES", ())
    monkeypatch.setattr(llamacpp.shutil, "which", lambda name: None)
    assert llamacpp.find_converter() == tree / "convert_hf_to_gguf.py"


# ---- the full path, on models llama.cpp converts --------------------------------------------

def _prove_full_path(run, capsys, n_prompts: int, min_q8_prefix: float):
    code, out, err = _export(capsys, run.path, "--format", "gguf,ollama", "--quant", "q4_K_M",
                             "--quant", "q8_0", "--json")
    assert code == 0, err
    result = json.loads(out)
    gguf = result["formats"]["gguf"]
    folder = run.path / "export" / "gguf"
    proof = json.loads((folder / "verify.json").read_text())
    assert proof == gguf["proof"] and proof["ok"] and proof["prompts"] == n_prompts
    assert set(proof["files"]) == {"f16", "q4_K_M", "q8_0"}  # f16 for a float32 run
    full = proof["files"]["f16"]
    assert full["identical"] + len(full["near_ties"]) == n_prompts, full
    assert full["prompt_tokens_identical"] == n_prompts  # llama.cpp tokenizes as the model does
    for quant in ("q8_0", "q4_K_M"):
        record = proof["files"][quant]
        assert 0 <= record["identical"] <= n_prompts and "exact_match" in record
        assert (folder / record["file"]).read_bytes()[:4] == b"GGUF"
    sizes = {k: v["bytes"] for k, v in gguf["files"].items()}
    assert sizes["q4_K_M"] < sizes["q8_0"] < sizes["f16"]
    # q8_0 answers follow the trained ones for most of their length (greedy answers of a small
    # model part at near-ties, so not all are identical); a quantizer writing garbage would not.
    assert proof["files"]["q8_0"]["prefix_agreement"] >= min_q8_prefix, proof["files"]["q8_0"]
    readme = (folder / "README.md").read_text()
    assert "--host 127.0.0.1" in readme and "identical answers" in readme
    # Ollama imports the quantized GGUF directly: FROM names it, no second quantization.
    from workbench.export.ollama import parse_modelfile

    mf = parse_modelfile((run.path / "export" / "ollama" / "Modelfile").read_text())
    assert mf["FROM"] == gguf["files"]["q4_K_M"]["path"]  # the first --quant
    command = shlex.split((run.path / "export" / "ollama" / "create.sh").read_text().splitlines()[-1])
    assert "--quantize" not in command
    return proof


@pytest.mark.skipif(not HAVE_RUNTIME, reason="llama-cpp-python is not installed")
@needs_converter
def test_tiny_model_gguf_answers_like_the_trained_model(tmp_path, capsys):
    """The demo's own model (its SentencePiece tokenizer is llama.cpp's `llama` vocabulary): f16
    answers exactly as the trained model, quantized files report their agreement."""
    run = make_run(tmp_path / "runs", name="tiny")
    _prove_full_path(run, capsys, 40, min_q8_prefix=0.8)


@pytest.mark.real
def test_gguf_f16_and_quantized_answer_like_the_trained_model(tmp_path, capsys):
    """SmolLM2 (tier real). Under WORKBENCH_REAL=1 (make test-real, CI) a missing piece
    fails: CI cannot pass this check by skipping it."""
    from workbench.models.smollm2 import model_dir

    missing = [what for what, ok in (
        ("SmolLM2 (python -m workbench.models.smollm2)", (model_dir() / "config.json").is_file()),
        ("llama.cpp's converter and sentencepiece (python -m workbench.export.llamacpp)",
         CONVERTER is not None and HAVE_SENTENCEPIECE),
        ("llama-cpp-python (python -m workbench.export.llamacpp)", HAVE_RUNTIME)) if not ok]
    if missing:
        (pytest.fail if os.environ.get("WORKBENCH_REAL") == "1" else pytest.skip)(
            "missing: " + "; ".join(missing))
    prompts = tmp_path / "prompts.jsonl"
    rows = (REPO / "assets" / "demo" / "prompts.jsonl").read_text().splitlines()[:6]
    prompts.write_text("\n".join(rows) + "\n")
    run = make_run(tmp_path / "runs", name="smol", model=model_dir(), prompts=prompts, b_std=0.02)
    _prove_full_path(run, capsys, 6, min_q8_prefix=0.5)
