"""Gemma-2 has no SDPA path in transformers 5: asking for "sdpa" (the profile default) would
fail the run at model load. The run, the comparison and the estimate use eager attention."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.profile import load_profile
from workbench.train.plan import attention_implementation

REPO = Path(__file__).resolve().parent.parent


def _profile(tmp_path: Path, model: Path):
    path = tmp_path / "p.toml"
    path.write_text(f'[model]\nname_or_path = "{model.as_posix()}"\n[data]\ntrain = "t.jsonl"\n')
    return load_profile(path)


def test_gemma2_loads_with_eager_and_says_so(tmp_path):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, Gemma2Config

    cfg = Gemma2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                       num_key_value_heads=1, head_dim=32, vocab_size=300)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path / "gemma2")
    profile = _profile(tmp_path, tmp_path / "gemma2")
    attn, note = attention_implementation(profile)
    assert attn == "eager" and "gemma2 has no SDPA path" in note
    with pytest.raises(ValueError, match="does not support an attention implementation"):
        AutoModelForCausalLM.from_pretrained(tmp_path / "gemma2", attn_implementation="sdpa")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "gemma2", attn_implementation=attn,
                                                 dtype=torch.float32)
    assert model.config._attn_implementation == "eager"


def test_other_models_keep_the_profile_choice(tmp_path):
    profile = _profile(tmp_path, REPO / "assets" / "tiny-model")
    assert attention_implementation(profile) == ("sdpa", "")
