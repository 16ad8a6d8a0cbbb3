"""A finished run with a real LoRA adapter on the bundled tiny model, built in a second
rather than trained in a minute: the export tests need an adapter that changes the answers
(B weights non-zero), not a good one. No tests here; the export test modules import it."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import REPO, TINY_MODEL

from workbench.profile import load_profile, save_profile
from workbench.rundir import RunDir


def make_run(runs_dir: Path, *, r: int = 8, targets=("q_proj", "v_proj"), system_prompt: str = "",
             name: str = "demo", model: Path | None = None, prompts: Path | None = None,
             b_std: float = 0.05) -> RunDir:
    """The demo profile's run on the bundled tiny model, or on `model` with `prompts` as its
    prompt suite; LoRA B weights drawn from N(0, b_std)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir = model or TINY_MODEL
    profile = load_profile(REPO / "profiles" / "demo.toml")
    if base_dir != TINY_MODEL:
        profile.model.name_or_path = str(base_dir)
    if prompts is not None:
        profile.eval.prompts = str(prompts)
    profile.data.system_prompt = system_prompt
    profile.eval.max_new_tokens = 16
    profile.lora.r = r
    profile.lora.target_modules = list(targets)
    profile.resolved = {"precision": "fp32", "device": "cpu", "seed": 0}
    run = RunDir.create(runs_dir, name)
    save_profile(profile, run.profile_path)
    run.write_status(state="finished", pid=None, step=20, total_steps=20, profile=name)

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    peft_model = get_peft_model(base, LoraConfig(r=r, lora_alpha=2 * r, target_modules=list(targets),
                                                 lora_dropout=0.0, task_type="CAUSAL_LM"))
    with torch.no_grad():
        for pname, p in peft_model.named_parameters():
            if "lora_B" in pname:  # peft starts B at zero: the adapter would change nothing
                p.normal_(0, b_std)
    peft_model.save_pretrained(str(run.adapter_dir))
    AutoTokenizer.from_pretrained(str(base_dir)).save_pretrained(str(run.adapter_dir))
    return run


def edit_adapter_config(run: RunDir, **changes) -> None:
    path = run.adapter_dir / "adapter_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))
