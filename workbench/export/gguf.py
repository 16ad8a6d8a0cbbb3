"""GGUF, only through llama.cpp's own tools: `convert_hf_to_gguf.py` writes the full-precision
file (f16 / bf16 / f32), llama.cpp's quantizer writes q4_K_M / q5_K_M / q8_0 from it. Nothing
else here writes the format; every output is checked for the GGUF magic, and then proven with
llama.cpp itself (gguf_check.py): the files answer the prompt suite as the trained model does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from workbench.export.common import ExportError, ProofFailed, staged_dir, write_text
from workbench.export.llamacpp import (COMMON_PLACES, HOW_TO, INSTALL_RUNTIME, SCRIPT,  # noqa: F401
                                       find_converter, find_quantize_binary, have_runtime)
from workbench.rundir import write_json_atomic

# The full-precision file for each training dtype: bf16 stays bf16 (lossless); a float32 model
# (a CPU run) is written as f16, what runtimes load and half the size; f32 is kept for
# `--gguf-type f32`. The proof allows f16 only rounding near-ties (gguf_check.py).
OUTTYPES = {"float32": "f16", "bfloat16": "bf16", "float16": "f16"}
# llama.cpp's file types (enum llama_ftype) for the quantizations offered.
QUANTS = {"q4_K_M": 15, "q5_K_M": 17, "q8_0": 7}

TOKENIZER_REFUSED = (
    "llama.cpp's converter does not recognize this model's tokenizer: it identifies BPE "
    "tokenizers by a hash of their output, and this one is not in its table. The model's "
    "architecture and your llama.cpp installation are fine; the tokenizer is the cause.")
TOKENIZER_HINT = (
    "use a model whose tokenizer llama.cpp knows (a SentencePiece tokenizer.model, or a BPE "
    "tokenizer of a model family llama.cpp lists in convert_hf_to_gguf_update.py), or add this "
    "tokenizer to llama.cpp: run convert_hf_to_gguf_update.py with its repository, which adds "
    "its hash to get_vocab_base_pre()")


def require_converter() -> Path:
    converter = find_converter()
    if converter is None:
        where = os.environ.get("LLAMA_CPP_DIR")
        detail = f" (LLAMA_CPP_DIR={where} has no {SCRIPT})" if where else ""
        raise ExportError(f"no GGUF converter found: {SCRIPT} is not in LLAMA_CPP_DIR, on PATH, "
                          f"in {', '.join(COMMON_PLACES)} or in a llama-cpp-python source "
                          f"tree{detail}", hint=HOW_TO)
    return converter


def check_quants(quants: list[str]) -> list[str]:
    """The requested quantizations, by llama.cpp's names (case as llama.cpp writes them)."""
    by_lower = {q.lower(): q for q in QUANTS}
    out = []
    for q in quants:
        name = by_lower.get(q.strip().lower())
        if name is None:
            raise ExportError(f"unknown --quant {q!r}",
                              hint=f"choose from {', '.join(QUANTS)}")
        if name not in out:
            out.append(name)
    if out and find_quantize_binary() is None and not have_runtime():
        raise ExportError(f"--quant {','.join(out)} needs llama.cpp's quantizer: no llama-quantize "
                          "on PATH and llama-cpp-python is not installed", hint=INSTALL_RUNTIME)
    return out


def _explain_converter_failure(proc: subprocess.CompletedProcess) -> ExportError:
    output = (proc.stderr or "") + (proc.stdout or "")
    tail = "\n".join(output.strip().splitlines()[-8:])
    if "BPE pre-tokenizer was not recognized" in output:
        return ExportError(f"{TOKENIZER_REFUSED}\n{SCRIPT} said:\n{tail}", hint=TOKENIZER_HINT)
    missing = next((line.split("No module named", 1)[1].strip(" '\"") for line in
                    output.splitlines() if "No module named" in line), None)
    if missing:
        return ExportError(f"{SCRIPT} needs the Python package {missing!r}, which is not "
                           "installed", hint=f"pip install '.[gguf]' (or pip install {missing})")
    if "not supported" in output.lower() and "model" in output.lower():
        return ExportError(f"llama.cpp's converter does not support this model's "
                           f"architecture:\n{tail}",
                           hint="update llama.cpp (a newer converter may know it), or serve the "
                                "merged model with vLLM instead")
    return ExportError(f"{SCRIPT} failed (exit {proc.returncode}):\n{tail}", hint=HOW_TO)


def _check_magic(path: Path, what: str) -> None:
    with open(path, "rb") if path.exists() else open(os.devnull, "rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise ExportError(f"{what} exited 0 but {path.name} is not a GGUF file "
                          f"(starts with {magic!r})", hint="check the llama.cpp installation")


def _converter_view(merged: Path, work: Path, base: Path | None = None) -> Path:
    """The merged folder as llama.cpp's converter needs it. The converter learns which pieces
    of a SentencePiece vocabulary are special (CONTROL: parsed as one token in a prompt) from
    tokenizer_config.json's added_tokens_decoder, which transformers 5 no longer writes (it
    keeps them in tokenizer.json); without it <|im_start|> is spelled out byte by byte and
    the GGUF sees another prompt. transformers 5 also saves no tokenizer.model, the
    SentencePiece file the converter reads (it falls back to another vocabulary reader): it is
    taken from the base model. So: links to every file, the base's tokenizer.model, and a
    tokenizer_config.json with the list added back. The merged export is left as it is."""
    import json

    config_path, tok_path = merged / "tokenizer_config.json", merged / "tokenizer.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        added = json.loads(tok_path.read_text(encoding="utf-8")).get("added_tokens", [])
    except (OSError, ValueError):
        return merged
    spm = base / "tokenizer.model" if base is not None else None
    add_spm = spm is not None and spm.is_file() and not (merged / "tokenizer.model").exists()
    if (config.get("added_tokens_decoder") or not added) and not add_spm:
        return merged
    view = work / "merged-for-converter"
    view.mkdir()
    for item in merged.iterdir():
        if item.name != "tokenizer_config.json":
            (view / item.name).symlink_to(item.resolve())
    if add_spm:
        (view / "tokenizer.model").symlink_to(spm.resolve())
    keys = ("content", "lstrip", "normalized", "rstrip", "single_word", "special")
    if not config.get("added_tokens_decoder"):
        config["added_tokens_decoder"] = {str(t["id"]): {k: t[k] for k in keys if k in t}
                                          for t in added}
    (view / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False),
                                                encoding="utf-8")
    return view


def convert(converter: Path, merged: Path, outfile: Path, outtype: str,
            base: Path | None = None) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="gguf-convert-") as work:
        argv = [sys.executable, str(converter), str(_converter_view(merged, Path(work), base)),
                "--outfile", str(outfile), "--outtype", outtype]
        proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise _explain_converter_failure(proc)
    _check_magic(outfile, SCRIPT)


_QUANTIZE_PY = """
import sys, llama_cpp
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = int(sys.argv[3])
params.nthread = 0
rc = llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), params)
sys.exit(1 if rc != 0 else 0)
"""


def quantize(source: Path, outfile: Path, quant: str) -> str:
    """Through llama.cpp's quantizer in a child process (its log and any crash stay there).
    Returns which quantizer ran."""
    binary = find_quantize_binary()
    if binary:
        argv, tool = [binary, str(source), str(outfile), quant], binary
    else:
        argv = [sys.executable, "-c", _QUANTIZE_PY, str(source), str(outfile),
                str(QUANTS[quant])]
        tool = "llama_cpp.llama_model_quantize"
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise ExportError(f"llama.cpp's quantizer ({tool}) failed on {quant} "
                          f"(exit {proc.returncode}):\n{tail}")
    _check_magic(outfile, tool)
    return tool


README = """# GGUF files for {name}

{files}

Made with llama.cpp's own converter ({converter}){quantizer}.

## What the proof says (verify.json)

Each file was loaded with llama.cpp (llama-cpp-python {runtime}) and answered the {prompts}
prompts of {source} greedily, each prompt tokenized by llama.cpp itself from the chat
template's text. The answers were compared with the trained model's (the merged model, which
is proven to answer like the adapter model):

{table}

A full-precision file must give the trained model's answers exactly; a quantized one changes
the weights, so it reports how many answers stay identical and the exact-match score against
the references next to the trained model's.

## Run it

    llama-server -m {first} --host 127.0.0.1 --port 8080     # llama.cpp's server, this machine only
    python -m llama_cpp.server --model {first} --host 127.0.0.1 --port 8080

Both bind 127.0.0.1; to open the server to other machines, pass --host 0.0.0.0 and a key
(`--api-key KEY` for llama-server, or LLAMA_API_KEY in its environment). The Ollama package
(`--format ollama` in the same export) imports this GGUF directly.
"""


def export_gguf(merged: Path, target: Path, *, name: str, dtype_name: str, force: bool,
                quants: list[str] | None = None, outtype: str | None = None, profile=None,
                log=print) -> dict:
    converter = require_converter()
    quants = check_quants(quants or [])
    outtype = outtype or OUTTYPES.get(dtype_name, "f16")
    files: dict[str, dict] = {}
    with staged_dir(target, force) as staging:
        full = staging / f"{name}-{outtype}.gguf"
        log(f"converting with {converter}")
        start = time.monotonic()
        base = Path(profile.model.name_or_path).expanduser() if profile is not None else None
        convert(converter, merged, full, outtype, base if base and base.is_dir() else None)
        files[outtype] = {"file": full.name, "seconds": round(time.monotonic() - start, 1)}
        quantizer = None
        for quant in quants:
            out = staging / f"{name}-{quant}.gguf"
            log(f"quantizing to {quant}")
            start = time.monotonic()
            quantizer = quantize(full, out, quant)
            files[quant] = {"file": out.name, "seconds": round(time.monotonic() - start, 1)}
        for entry in files.values():
            entry["bytes"] = (staging / entry["file"]).stat().st_size

        proof = None
        if profile is not None and have_runtime():
            from workbench.export.gguf_check import check_files

            log("answering the prompt suite with llama.cpp (each GGUF) and the trained model")
            proof = check_files(merged, staging, files, outtype, profile, log=log)
            write_json_atomic(staging / "verify.json", proof)
            if not proof["ok"]:
                raise ProofFailed(proof["summary"], proof)
        elif profile is not None:
            log(f"note: the GGUF was not run (llama-cpp-python is not installed: "
                f"{INSTALL_RUNTIME})")
        write_text(staging / "README.md", _readme(name, files, converter, quantizer, proof))
    return {"path": str(target), "file": str(target / full.name), "outtype": outtype,
            "converter": str(converter), "quantizer": quantizer,
            "files": {k: {**v, "path": str(target / v["file"])} for k, v in files.items()},
            "proof": proof}


def _readme(name, files, converter, quantizer, proof) -> str:
    listing = "\n".join(f"- `{v['file']}` ({k}, {v['bytes'] / 1e6:.1f} MB)" for k, v in files.items())
    if proof:
        rows = ["| file | identical answers | answer followed (share of tokens before the "
                "first difference) | exact match | trained model |", "|---|---|---|---|---|"]
        for k, r in proof["files"].items():
            em = f"{r['exact_match']}/{proof['scored']}" if proof["scored"] else "-"
            ref = f"{proof['trained_exact_match']}/{proof['scored']}" if proof["scored"] else "-"
            rows.append(f"| {k} | {r['identical']}/{proof['prompts']} | "
                        f"{r['prefix_agreement']:.0%} | {em} | {ref} |")
        table, prompts, source = "\n".join(rows), proof["prompts"], proof["prompt_source"]
        runtime = proof.get("llama_cpp_python", "?")
    else:
        table, prompts, source, runtime = "(not run: llama-cpp-python is not installed)", "the", \
            "the prompt suite", "-"
    return README.format(name=name, files=listing, converter=converter,
                         quantizer=f" and quantizer ({quantizer})" if quantizer else "",
                         runtime=runtime, prompts=prompts, source=source, table=table,
                         first=list(files.values())[1 if len(files) > 1 else 0]["file"])
