"""GPU kernels (train.kernels, model.attn_implementation, train.optimizer = "auto"): each option
validates, resolves for the device and packages there (the resolution is pure logic, so the CUDA
cases are tested here with the facts given), falls back with a message on a CPU, and changes the
estimate."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.estimate.config import load_model_config
from workbench.estimate.memory import EstimateSettings, estimate
from workbench.profile import ProfileError, load_profile
from workbench.train.plan import kernels_for_run
from workbench.train.kernels import (
    Environment,
    KernelError,
    estimate_attention,
    estimate_kernels,
    resolve_kernels,
)

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "assets" / "tiny-model"


def _profile(tmp_path: Path, extra: str = "", model: Path = TINY, attn: str = ""):
    path = tmp_path / "p.toml"
    attn_line = f'attn_implementation = "{attn}"\n' if attn else ""
    path.write_text(f'[model]\nname_or_path = "{model.as_posix()}"\n{attn_line}'
                    '[data]\ntrain = "t.jsonl"\n' + extra)
    return load_profile(path)


def _env(device="cuda", packages=(), cached=(), capability=(9, 0), **kw) -> Environment:
    return Environment(device=device, installed=lambda m: m in packages,
                       cached=lambda repo: repo in cached, capability=capability,
                       model_type=kw.pop("model_type", "llama"), **kw)


# ---- validation -------------------------------------------------------------------------------


def test_defaults_keep_existing_profiles_as_they_were(tmp_path):
    p = _profile(tmp_path)
    assert (p.train.kernels, p.model.attn_implementation, p.train.optimizer) == (
        "auto", "sdpa", "adamw_torch")


@pytest.mark.parametrize("section, key, value", [
    ("train", "kernels", "liger"), ("train", "kernels", "hub"), ("train", "kernels", "none"),
    ("model", "attn_implementation", "auto"), ("model", "attn_implementation", "flash_attention_3"),
    ("model", "attn_implementation", "kernels-community/flash-attn2"),
    ("model", "attn_implementation", "kernels-community/flash-attn3@v2:flash_attention"),
    ("train", "optimizer", "auto"),
])
def test_every_option_validates(tmp_path, section, key, value):
    p = (_profile(tmp_path, attn=value) if key == "attn_implementation"
         else _profile(tmp_path, f'[{section}]\n{key} = "{value}"\n'))
    assert getattr(getattr(p, section), key) == value


@pytest.mark.parametrize("section, key, value, expected", [
    ("train", "kernels", "ligr", 'did you mean "liger"'),
    ("train", "kernels", True, "a boolean"),
    ("model", "attn_implementation", "flash", "Hub kernel id"),
    ("model", "attn_implementation", "flash_attention_4", "one of"),
    ("train", "optimizer", "fused", "one of"),
])
def test_bad_values_name_the_key(tmp_path, section, key, value, expected):
    shown = f'"{value}"' if isinstance(value, str) else str(value).lower()
    path = tmp_path / "p.toml"
    head = f'[model]\nname_or_path = "{TINY.as_posix()}"\n'
    body = (head + f"{key} = {shown}\n" + '[data]\ntrain = "t.jsonl"\n' if section == "model"
            else head + '[data]\ntrain = "t.jsonl"\n' + f"[{section}]\n{key} = {shown}\n")
    path.write_text(body)
    with pytest.raises(ProfileError) as exc:
        load_profile(path)
    text = str(exc.value)
    assert f"{section}.{key}" in text and expected in text, text


# ---- resolution: device x installed -------------------------------------------------------------


@pytest.mark.parametrize("device, packages, model_type, expected", [
    ("cuda", ("liger_kernel",), "llama", "liger"),
    ("cuda", (), "llama", "none"),
    ("cpu", ("liger_kernel",), "llama", "none"),
    ("cpu", (), "llama", "none"),
    ("cuda", ("liger_kernel",), "gpt2", "none"),  # liger has no kernels for it
])
def test_auto_is_liger_only_on_cuda_with_liger_installed_and_says_nothing_else(
        device, packages, model_type, expected):
    choice = resolve_kernels("auto", "sdpa", "adamw_torch",
                             _env(device, packages, model_type=model_type))
    assert choice.kernels == expected
    if expected == "liger":
        assert choice.training_args == {"use_liger_kernel": True, "liger_kernel_config": {
            "rope": True, "rms_norm": True, "swiglu": True, "cross_entropy": False,
            "fused_linear_cross_entropy": False}}
        assert choice.notes and choice.notes[0].startswith("kernels: liger (")
    else:
        assert choice.training_args == {} and choice.notes == ()
    assert choice.load_kwargs == {}  # "auto" leaves transformers' own default alone


def test_liger_falls_back_with_a_message_on_a_cpu():
    choice = resolve_kernels("liger", "sdpa", "adamw_torch", _env("cpu", ("liger_kernel",)))
    assert choice.kernels == "none" and choice.training_args == {}
    assert choice.notes == (("kernels: liger asked for but this is a CPU: running without (liger "
                            "needs CUDA + triton)"),)
    assert choice.counted == "none"


def test_liger_on_a_gpu_without_the_package_is_an_error_that_says_what_to_do():
    with pytest.raises(KernelError) as exc:
        resolve_kernels("liger", "sdpa", "adamw_torch", _env("cuda"))
    assert 'train.kernels = "liger"' in exc.value.message and "pip install liger-kernel" in exc.value.hint


def test_liger_on_a_model_liger_does_not_know_runs_without_and_says_so():
    choice = resolve_kernels("liger", "sdpa", "adamw_torch",
                             _env("cuda", ("liger_kernel",), model_type="gpt2"))
    assert choice.kernels == "none" and "no kernels for model type 'gpt2'" in choice.notes[0]


def test_none_switches_transformers_hub_kernels_off():
    choice = resolve_kernels("none", "sdpa", "adamw_torch", _env("cuda", ("liger_kernel", "kernels")))
    assert choice.kernels == "none" and choice.load_kwargs == {"use_kernels": False}


def test_hub_kernels_load_on_the_gpu_and_say_when_the_cache_lacks_them():
    env = _env("cuda", ("kernels",), cached=("kernels-community/rotary",))
    choice = resolve_kernels("hub", "sdpa", "adamw_torch", env)
    assert choice.load_kwargs == {"use_kernels": True, "device_map": {"": 0}}
    assert any("kernels-community/liger-kernels not in the local HF cache" in n
               and "no network" in n for n in choice.notes)
    cpu = resolve_kernels("hub", "sdpa", "adamw_torch", _env("cpu", ("kernels",)))
    assert cpu.kernels == "none" and "this is a CPU" in cpu.notes[0]
    with pytest.raises(KernelError, match="kernels package is not installed"):
        resolve_kernels("hub", "sdpa", "adamw_torch", _env("cuda"))


@pytest.mark.parametrize("packages, capability, supports, expected", [
    (("flash_attn",), (9, 0), True, "flash_attention_2"),
    (("flash_attn", "flash_attn_interface"), (9, 0), True, "flash_attention_3"),
    (("flash_attn", "flash_attn_interface"), (8, 0), True, "flash_attention_2"),  # FA3: Hopper
    (("flash_attn",), (7, 5), True, "sdpa"),  # FA2: Ampere+
    ((), (9, 0), True, "sdpa"),
    (("flash_attn",), (9, 0), False, "sdpa"),  # the model has no flash path
])
def test_auto_attention_on_cuda(packages, capability, supports, expected):
    env = _env("cuda", packages, capability=capability, supports_flash=supports)
    assert resolve_kernels("none", "auto", "adamw_torch", env).attn_implementation == expected


@pytest.mark.parametrize("attention", ["flash_attention_2", "flash_attention_3",
                                       "kernels-community/flash-attn2"])
def test_flash_attention_falls_back_to_sdpa_with_a_message_on_a_cpu(attention):
    choice = resolve_kernels("none", attention, "adamw_torch",
                             _env("cpu", ("flash_attn", "flash_attn_interface", "kernels")))
    assert choice.attn_implementation == "sdpa"
    assert choice.notes == ((f"attention: {attention} asked for but this is a CPU: running sdpa "
                            "(FlashAttention kernels need CUDA)"),)
    assert resolve_kernels("none", "auto", "adamw_torch", _env("cpu", ("flash_attn",))
                           ).attn_implementation == "sdpa"


def test_flash_attention_2_on_a_gpu_without_flash_attn():
    # transformers would fetch kernels-community/flash-attn2: fine from the cache, else an error
    cached = _env("cuda", ("kernels",), cached=("kernels-community/flash-attn2",))
    choice = resolve_kernels("none", "flash_attention_2", "adamw_torch", cached)
    assert choice.attn_implementation == "flash_attention_2"
    assert "Hub kernel kernels-community/flash-attn2 from the local HF cache" in choice.notes[0]
    with pytest.raises(KernelError) as exc:
        resolve_kernels("none", "flash_attention_2", "adamw_torch", _env("cuda", ("kernels",)))
    assert "pip install flash-attn" in exc.value.hint and "no network" in exc.value.hint
    with pytest.raises(KernelError, match="Hopper"):
        resolve_kernels("none", "flash_attention_3", "adamw_torch",
                        _env("cuda", ("flash_attn_interface",), capability=(8, 0)))


def test_hub_attention_kernel_must_be_cached_on_the_gpu():
    attn = "kernels-community/flash-attn2"
    with pytest.raises(KernelError, match="not in the local HF cache"):
        resolve_kernels("none", attn, "adamw_torch", _env("cuda", ("kernels",)))
    ok = resolve_kernels("none", attn, "adamw_torch", _env("cuda", ("kernels",), cached=(attn,)))
    assert ok.attn_implementation == attn


@pytest.mark.parametrize("optimizer, device, expected, noted", [
    ("auto", "cuda", "adamw_torch_fused", False),
    ("auto", "cpu", "adamw_torch", False),
    ("adamw_torch", "cuda", "adamw_torch", False),  # what the profile says, kept
    ("adamw_torch_fused", "cpu", "adamw_torch_fused", False),  # torch fuses it on CPUs too
    ("adamw_8bit", "cuda", "adamw_8bit", False),
])
def test_fused_adamw(optimizer, device, expected, noted):
    choice = resolve_kernels("none", "sdpa", optimizer, _env(device))
    assert choice.optimizer == expected and bool(choice.notes) == noted


# ---- a real profile on this machine's CPU -------------------------------------------------------


def test_a_run_on_the_cpu_resolves_every_named_kernel_to_a_fallback(tmp_path):
    p = _profile(tmp_path, '[train]\nkernels = "liger"\noptimizer = "auto"\n',
                 attn="flash_attention_2")
    choice = kernels_for_run(p, "cpu")
    assert (choice.kernels, choice.attn_implementation, choice.optimizer) == (
        "none", "sdpa", "adamw_torch")
    assert [n.split(":")[0] for n in choice.notes] == ["kernels", "attention"]


def test_the_training_arguments_carry_the_choice(tmp_path):
    from types import SimpleNamespace

    from workbench.rundir import RunDir
    from workbench.train.arguments import training_arguments

    p = _profile(tmp_path, '[train]\nkernels = "liger"\noptimizer = "auto"\n')
    choice = kernels_for_run(p, "cpu")
    plan = SimpleNamespace(profile=p, evaluates=False, precision="fp32", device="cpu",
                           gradient_checkpointing=False, kernel_choice=lambda: choice)
    args = training_arguments(plan, RunDir(tmp_path / "run"))
    assert args["optim"] == "adamw_torch" and "use_liger_kernel" not in args


# ---- the estimate -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama():
    return load_model_config("llama-3.1-8b", "main")[0]


def test_liger_lowers_the_layer_terms_and_says_what_it_counts(llama):
    none = estimate(llama, batch=4, seq=2048, grad_ckpt=False)
    liger = estimate(llama, batch=4, seq=2048, grad_ckpt=False, kernels="liger")
    assert liger.peak_bytes < none.peak_bytes
    assert liger.breakdown["saved activations"] < none.breakdown["saved activations"]
    text = liger.explain()
    assert "kernels liger)" in text and "Kernels counted: liger: RMSNorm" in text
    assert "trl's fused LM head in place of its fused linear cross-entropy" in text
    assert liger.to_dict()["kernels_counted"].startswith("liger")


def test_liger_fused_linear_cross_entropy_removes_the_logits(llama):
    full = estimate(llama, batch=4, seq=2048, loss_path="full_logits")
    liger = estimate(llama, batch=4, seq=2048, loss_path="full_logits", kernels="liger")
    assert liger.settings.loss_path == "liger_fused"
    assert full.peak_bytes - liger.peak_bytes > 4 * 4 * 2048 * 128256 * 0.9  # ~ the fp32 logits
    assert "logits and loss" not in liger.breakdown or (
        liger.breakdown["logits and loss"] < 0.1 * full.breakdown["logits and loss"])
    assert any("liger_fused" in n for n in liger.notes)


def test_flash_attention_drops_the_packing_mask_and_eager_scores(llama):
    sdpa = estimate(llama, batch=4, seq=2048, packing=True)
    for flash in ("flash_attention_2", "flash_attention_3"):
        fa = estimate(llama, batch=4, seq=2048, packing=True, attn=flash)
        saved = {t.name: t.why for t in fa.terms}["saved activations"]
        assert fa.peak_bytes < sdpa.peak_bytes and "attention mask" not in saved
        assert f"{flash} (no attention mask" in fa.explain()
    assert "attention mask" in {t.name: t.why for t in sdpa.terms}["saved activations"]
    assert estimate(llama, attn="eager").peak_bytes > estimate(llama, attn="flash_attention_2").peak_bytes


def test_estimate_from_a_profile_counts_the_kernels_a_gpu_run_here_would_use(tmp_path):
    p = _profile(tmp_path, '[train]\nkernels = "liger"\noptimizer = "auto"\n', attn="auto")
    s = EstimateSettings.from_profile(p)
    assert (s.kernels, s.optimizer) == ("liger", "adamw_torch_fused")
    assert s.attn == estimate_attention("auto")
    assert estimate_kernels("auto", lambda m: m == "liger_kernel") == "liger"
    assert estimate_kernels("auto", lambda m: False) == "none"
    assert estimate_attention("auto", lambda m: m == "flash_attn") == "flash_attention_2"
    assert estimate_attention("kernels-community/flash-attn2", lambda m: False) == "flash_attention_2"


def test_estimate_cli_flags(tmp_path):
    import contextlib
    import io

    from workbench.estimate.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main(["--model", "llama-3.1-8b", "--kernels", "liger", "--attn", "flash_attention_3",
                   "--loss-path", "liger_fused", "--optimizer", "adamw_torch_fused"])
    text = out.getvalue()
    assert rc == 0, text
    assert "Kernels counted: liger" in text and "fused linear cross-entropy (no logits)" in text
    assert "flash_attention_3 (no attention mask" in text and "fused AdamW" in text


def test_auto_attention_keeps_the_eager_fallback_of_models_without_sdpa(tmp_path):
    """"auto" resolves to sdpa on a CPU; Gemma-2 has no SDPA path, so the run loads it eager,
    as train/plan.py attention_implementation decides for "sdpa"."""
    pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, Gemma2Config

    cfg = Gemma2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=32, vocab_size=300)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path / "gemma2")
    p = _profile(tmp_path, model=tmp_path / "gemma2", attn="auto")
    choice = kernels_for_run(p, "cpu")
    assert choice.attn_implementation == "eager"
    assert any("gemma2 has no SDPA path" in n for n in choice.notes)
