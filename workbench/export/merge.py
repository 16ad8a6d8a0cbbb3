"""The merged model: base + adapter folded into plain weights (`merge_and_unload`), saved as
safetensors with its tokenizer (chat template included) and a generation config that stops
on the end-of-turn token, then reloaded from disk and proven equal to the adapter model
(see verify.py) before the folder is renamed into place."""

from __future__ import annotations

import gc
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from workbench.export.common import ExportError, ProofFailed, staged_dir
from workbench.rundir import RunDir, write_json_atomic

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


@dataclass
class Loaded:
    device: str
    dtype_name: str
    note: str = ""


def choose_dtype(profile) -> Loaded:
    """The precision the run trained in; without one, fp32 on the CPU and bf16 on a GPU.
    fp16 on the CPU is slow or unsupported, so it becomes fp32 there (said in the output)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = (profile.resolved or {}).get("precision")
    if precision not in DTYPES:
        precision = "bf16" if device == "cuda" else "fp32"
    note = ""
    if precision == "fp16" and device == "cpu":
        precision, note = "fp32", "fp16 is not supported on the CPU: merging in fp32"
    if profile.lora.method == "qlora":
        note = ("QLoRA trained on a 4-bit base; the adapter is merged into the unquantized "
                f"base in {precision}, the standard way to ship it")
    return Loaded(device, DTYPES[precision], note)


def load_base(profile, loaded: Loaded):
    import torch
    from transformers import AutoModelForCausalLM

    m = profile.model
    try:
        model = AutoModelForCausalLM.from_pretrained(
            m.name_or_path, revision=m.revision, trust_remote_code=m.trust_remote_code,
            use_safetensors=True, dtype=getattr(torch, loaded.dtype_name))
    except OSError as exc:
        raise ExportError(f"could not load the base model {m.name_or_path!r}: "
                          f"{str(exc).splitlines()[0]}",
                          hint="the base must be a local folder or in the Hugging Face cache, "
                               "with safetensors weights") from exc
    return model.to(loaded.device)


def _explain_peft_error(exc: Exception, adapter_dir: Path, base: str) -> ExportError:
    text = str(exc)
    if "size mismatch" in text:
        shapes = re.findall(r"size mismatch for ([^:]+): copying a param with shape (\S+) "
                            r"from checkpoint, the shape in current model is (\S+)", text)
        detail = (f" (first: {shapes[0][0]} is {shapes[0][1]} in the adapter, {shapes[0][2]} "
                  "in the model)") if shapes else ""
        return ExportError(f"the adapter in {adapter_dir} does not fit {base!r}: its weights have "
                           f"other shapes than adapter_config.json and the base describe{detail}",
                           hint="check that `r` in adapter_config.json matches the saved weights "
                                "and that the base model is the one it was trained on")
    if "not found in the base model" in text or "Target modules" in text:
        return ExportError(f"the adapter in {adapter_dir} targets modules that {base!r} does not "
                           f"have: {text.splitlines()[0]}",
                           hint="the adapter was trained on a different architecture; export it "
                                "with its own base model")
    return ExportError(f"could not load the adapter in {adapter_dir} on {base!r}: "
                       f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}")


def load_adapter_model(profile, adapter_dir: Path, loaded: Loaded):
    """Base + adapter, as the run evaluated it. Load problems peft only warns about
    (weights missing for a target) are errors here: a half-loaded adapter merges silently."""
    from peft import PeftModel

    base = load_base(profile, loaded)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=False)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise _explain_peft_error(exc, adapter_dir, profile.model.name_or_path) from exc
    for w in caught:
        text = str(w.message)
        if "missing adapter keys" in text.lower() or "unexpected keys" in text.lower():
            raise ExportError(f"the adapter in {adapter_dir} does not match "
                              f"{profile.model.name_or_path!r}: {text.splitlines()[0]}",
                              hint="its target modules or rank differ from what the weights hold")
    return model.to(loaded.device)


def merge_adapter(peft_model):
    """Fold the LoRA product into the base weights. (Tests replace this to prove that a
    wrong merge is caught.)"""
    return peft_model.merge_and_unload()


def save_generation_config(model, tokenizer, folder: Path, eos_ids: list[int]) -> None:
    from transformers import GenerationConfig

    try:
        config = GenerationConfig.from_model_config(model.config)
        if model.generation_config is not None:
            config = GenerationConfig.from_dict(model.generation_config.to_dict())
    except Exception:
        config = GenerationConfig()
    config.eos_token_id = eos_ids if len(eos_ids) > 1 else eos_ids[0]
    if tokenizer.pad_token_id is not None:
        config.pad_token_id = tokenizer.pad_token_id
    config.save_pretrained(str(folder))


def export_merged(run: RunDir, profile, target: Path, force: bool,
                  log: Callable[[str], None] = print) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from workbench.export.chat_template import end_of_turn_ids, end_of_turn_tokens
    from workbench.export.verify import check_against, collect_reference, proof_conversations
    from workbench.train.plan import RunError, load_tokenizer

    loaded = choose_dtype(profile)
    if loaded.note:
        log(f"note: {loaded.note}")
    try:
        tokenizer = load_tokenizer(profile)
    except RunError as exc:
        raise ExportError(exc.message, exc.hint) from exc
    eos_tokens = end_of_turn_tokens(tokenizer)
    eos_ids = end_of_turn_ids(tokenizer, eos_tokens)
    convs, source = proof_conversations(profile)

    log(f"loading {profile.model.name_or_path} + {run.adapter_dir} ({loaded.dtype_name}, "
        f"{loaded.device})")
    model = load_adapter_model(profile, run.adapter_dir, loaded)
    log(f"answering {len(convs)} prompts with the adapter model ({source})")
    chat = (profile.data.system, profile.data.reasoning)
    refs = collect_reference(model, tokenizer, convs, eos_ids, chat=chat)

    with staged_dir(target, force) as staging:
        log("merging (merge_and_unload) and saving safetensors")
        merged = merge_adapter(model)
        merged.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        save_generation_config(merged, tokenizer, staging, eos_ids)
        del merged, model
        gc.collect()
        if not any(staging.glob("*.safetensors")) or any(staging.glob("*.bin")):
            raise ExportError(f"the merged model in {staging} was not saved as safetensors")

        log("reloading the merged model from disk and checking it against the adapter model")
        reloaded = AutoModelForCausalLM.from_pretrained(
            str(staging), dtype=getattr(torch, loaded.dtype_name), use_safetensors=True,
            trust_remote_code=profile.model.trust_remote_code).to(loaded.device)
        saved_tokenizer = AutoTokenizer.from_pretrained(str(staging))
        proof = check_against(reloaded, saved_tokenizer, refs, eos_ids, loaded.dtype_name, chat=chat)
        del reloaded
        gc.collect()
        record = {**proof.to_dict(), "prompt_source": source, "base": profile.model.name_or_path,
                  "adapter": str(run.adapter_dir), "device": loaded.device,
                  "end_of_turn_tokens": eos_tokens}
        if not proof.ok:
            raise ProofFailed(proof.summary(), record)
        write_json_atomic(staging / "verify.json", record)
    log(proof.summary())
    return {"path": str(target), "dtype": loaded.dtype_name, "proof": record}
