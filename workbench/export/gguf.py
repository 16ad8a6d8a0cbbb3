"""GGUF, only through llama.cpp's own converter (`convert_hf_to_gguf.py`): the format is
never written by anything else here, and the output is checked for the GGUF magic."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from workbench.export.common import ExportError, staged_dir

SCRIPT = "convert_hf_to_gguf.py"
HOW_TO = ("GGUF needs llama.cpp's converter: `git clone https://github.com/ggml-org/llama.cpp` "
          "and `pip install -r llama.cpp/requirements/requirements-convert_hf_to_gguf.txt`, "
          "then set LLAMA_CPP_DIR=/path/to/llama.cpp (or put convert_hf_to_gguf.py on PATH)")
COMMON_PLACES = ("~/llama.cpp", "~/src/llama.cpp", "~/git/llama.cpp", "/opt/llama.cpp",
                 "/usr/local/llama.cpp", "/usr/local/share/llama.cpp", "/usr/share/llama.cpp")
OUTTYPES = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}


def find_converter() -> Path | None:
    """LLAMA_CPP_DIR first, then PATH, then where people usually clone llama.cpp."""
    places = []
    if os.environ.get("LLAMA_CPP_DIR"):
        places.append(Path(os.environ["LLAMA_CPP_DIR"]).expanduser())
    on_path = shutil.which(SCRIPT)
    if on_path:
        return Path(on_path)
    places += [Path(p).expanduser() for p in COMMON_PLACES]
    for place in places:
        if (place / SCRIPT).is_file():
            return place / SCRIPT
    return None


def require_converter() -> Path:
    converter = find_converter()
    if converter is None:
        where = os.environ.get("LLAMA_CPP_DIR")
        detail = f" (LLAMA_CPP_DIR={where} has no {SCRIPT})" if where else ""
        raise ExportError(f"no GGUF converter found: {SCRIPT} is not in LLAMA_CPP_DIR, on PATH "
                          f"or in {', '.join(COMMON_PLACES)}{detail}", hint=HOW_TO)
    return converter


def export_gguf(merged: Path, target: Path, *, name: str, dtype_name: str, force: bool,
                log=print) -> dict:
    converter = require_converter()
    outtype = OUTTYPES.get(dtype_name, "f16")
    with staged_dir(target, force) as staging:
        outfile = staging / f"{name}-{outtype}.gguf"
        argv = [sys.executable, str(converter), str(merged), "--outfile", str(outfile),
                "--outtype", outtype]
        log(f"converting with {converter}")
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
            raise ExportError(f"{SCRIPT} failed (exit {proc.returncode}):\n{tail}",
                              hint="llama.cpp may not support this architecture yet, or its "
                                   "requirements are missing; " + HOW_TO)
        with open(outfile, "rb") if outfile.exists() else open(os.devnull, "rb") as fh:
            magic = fh.read(4)
        if magic != b"GGUF":
            raise ExportError(f"{SCRIPT} exited 0 but {outfile.name} is not a GGUF file "
                              f"(starts with {magic!r})", hint="check the converter installation")
    return {"path": str(target), "file": str(target / outfile.name), "outtype": outtype,
            "converter": str(converter)}
