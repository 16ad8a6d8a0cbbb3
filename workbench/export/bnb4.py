"""4-bit (NF4, double quantization) copy of the merged model, made by bitsandbytes on reload.
bitsandbytes quantizes on a CUDA GPU, so this format needs one; the check comes first so a
CPU machine is told before any work starts."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

from workbench.export.common import ExportError, staged_dir


def require_gpu() -> None:
    import torch

    if not torch.cuda.is_available():
        raise ExportError("--format bnb4 needs an NVIDIA CUDA GPU: bitsandbytes quantizes to "
                          "4-bit on the GPU, and torch sees none on this machine",
                          hint="run this export on a GPU machine, or ship the merged model and "
                               "quantize where it is served (e.g. Ollama's --quantize)")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ExportError("--format bnb4 needs the bitsandbytes package",
                          hint="pip install bitsandbytes")


def export_bnb4(merged: Path, target: Path, *, trust_remote_code: bool, force: bool,
                log=print) -> dict:
    require_gpu()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=compute)
    log(f"quantizing {merged} to 4-bit NF4 with bitsandbytes")
    model = AutoModelForCausalLM.from_pretrained(
        str(merged), quantization_config=config, device_map={"": 0}, use_safetensors=True,
        trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(str(merged))
    with staged_dir(target, force) as staging:
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        if (merged / "generation_config.json").is_file():  # keep the end-of-turn eos list
            shutil.copy2(merged / "generation_config.json", staging / "generation_config.json")
        # A smoke test, not a proof: 4-bit weights change the logits by design.
        ids = tokenizer("Hello", return_tensors="pt").input_ids.to(model.device)
        with torch.no_grad():
            model.generate(input_ids=ids, max_new_tokens=4, do_sample=False)
    size = sum(f.stat().st_size for f in target.glob("*.safetensors"))
    return {"path": str(target), "bytes": size,
            "note": "4-bit NF4 changes logits by design: no equality proof, a generation smoke test"}
